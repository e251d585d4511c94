//! Each LLMBackend, Consumer and JWTValidationPolicy on its own: what it becomes in the
//! config, the files it needs, and why it cannot be used.

use super::Problem;
use crate::backends::Ctx;
use crate::gateways::GatewayState;
use crate::llm_refs::{ConfigMapInfo, FileSource, LlmFile};
use crate::{GATEWAY_GROUP, ObjectKey};
use citoroute_config::validate::validate;
use citoroute_config::{self as cfg, GatewayDuration, ProxyConfig};
use citoroute_crds as crds;
use std::collections::{BTreeMap, BTreeSet};

/// An LLMBackend as checked on its own.
pub(super) struct BackendEval {
    /// The config backend, when it is usable.
    pub config: Option<cfg::LlmBackend>,
    pub files: Vec<LlmFile>,
    /// Why it is not accepted (spec) or its references do not resolve.
    pub invalid: Option<Problem>,
    pub unresolved: Option<Problem>,
}

/// A JWTValidationPolicy that is in force on a Gateway, with the files it needs: the JWKS
/// document (none for a JWKS URL), or the CA bundle a JWKS URL is fetched with.
pub(super) struct PolicyEval {
    pub jwt: cfg::JwtSettings,
    pub files: Vec<LlmFile>,
}

/// ConfigMaps by `(namespace, name)`.
pub(super) type ConfigMaps<'a> = BTreeMap<(&'a str, &'a str), &'a ConfigMapInfo>;

/// Validation problems of a config holding one piece, without the piece's own prefix.
fn problems_of(probe: &ProxyConfig, prefix: &str) -> Option<String> {
    let problems = validate(probe).err()?;
    let msgs: Vec<String> = problems
        .0
        .iter()
        .map(|p| {
            let at = p.path.strip_prefix(prefix).unwrap_or(&p.path);
            format!("{at}: {}", p.message)
        })
        .collect();
    Some(msgs.join("; "))
}

/// `Kind.group`, or `Kind` for the core group.
pub(super) fn shown_kind(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

fn missing_keys(have: &BTreeSet<String>, want: &[&str]) -> Vec<String> {
    want.iter()
        .filter(|k| !have.contains(**k))
        .map(|k| k.to_string())
        .collect()
}

pub(super) fn check_backend(
    ctx: &Ctx,
    config_maps: &ConfigMaps,
    ns: &str,
    b: &crds::LlmBackend,
) -> BackendEval {
    let spec = &b.spec;
    let mut invalid = None;
    let mut unresolved = None;
    let timeout = match spec.timeout.as_deref().map(str::parse::<GatewayDuration>) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            invalid = Some(("Invalid", format!("timeout: {e}")));
            None
        }
    };
    let provider = match spec.provider {
        crds::LlmProvider::OpenAi => cfg::LlmProvider::OpenAi,
        crds::LlmProvider::Anthropic => cfg::LlmProvider::Anthropic,
        crds::LlmProvider::Bedrock => cfg::LlmProvider::Bedrock,
    };
    let mut c = cfg::LlmBackend {
        provider,
        model: spec.model.clone(),
        endpoint: spec.endpoint.clone().unwrap_or_default(),
        api_key_file: None,
        aws_access_key_id_file: None,
        aws_secret_access_key_file: None,
        aws_session_token_file: None,
        region: spec.bedrock.as_ref().map(|b| b.region.clone()),
        anthropic_version: spec.anthropic.as_ref().and_then(|a| a.version.clone()),
        timeout,
        ca_file: None,
    };
    let mut files = Vec::new();
    match spec.ca_certificate_refs.as_slice() {
        [] => {}
        [r] => {
            let shown = format!("ConfigMap {ns}/{}", r.name);
            match config_maps.get(&(ns, r.name.as_str())) {
                None => {
                    unresolved = Some(("InvalidCACertificateRef", format!("{shown} not found")))
                }
                Some(cm) if !cm.keys.contains(&r.key) => {
                    unresolved = Some((
                        "InvalidCACertificateRef",
                        format!("{shown} has no key {}", r.key),
                    ))
                }
                Some(cm) if !cm.certificate_keys.contains(&r.key) => {
                    unresolved = Some((
                        "InvalidCACertificateRef",
                        format!("key {} of {shown} holds no PEM certificate", r.key),
                    ))
                }
                Some(_) => {}
            }
            let f = LlmFile {
                source: FileSource::ConfigMap,
                namespace: ns.to_string(),
                name: r.name.clone(),
                key: r.key.clone(),
            };
            c.ca_file = Some(f.path());
            files.push(f);
        }
        _ => {
            invalid.get_or_insert((
                "UnsupportedValue",
                "caCertificateRefs: one ConfigMap key (a PEM bundle) is supported".to_string(),
            ));
        }
    }
    if let Some(cr) = &spec.credentials_ref {
        let file = |key: &str| LlmFile {
            source: FileSource::Secret,
            namespace: ns.to_string(),
            name: cr.name.clone(),
            key: key.to_string(),
        };
        let aws = cr.access_key_id.is_some()
            || cr.secret_access_key.is_some()
            || cr.session_token.is_some();
        let mut keys: Vec<&str> = Vec::new();
        if provider == cfg::LlmProvider::Bedrock && (aws || cr.api_key.is_none()) {
            let id = cr.access_key_id.as_deref().unwrap_or("accessKeyId");
            let secret = cr.secret_access_key.as_deref().unwrap_or("secretAccessKey");
            c.aws_access_key_id_file = Some(file(id).path());
            c.aws_secret_access_key_file = Some(file(secret).path());
            keys.extend([id, secret]);
            if let Some(token) = cr.session_token.as_deref() {
                c.aws_session_token_file = Some(file(token).path());
                keys.push(token);
            }
        } else {
            if aws {
                invalid.get_or_insert((
                    "Invalid",
                    "credentialsRef: accessKeyId, secretAccessKey and sessionToken are for provider bedrock only"
                        .to_string(),
                ));
            }
            let key = cr.api_key.as_deref().unwrap_or("apiKey");
            c.api_key_file = Some(file(key).path());
            keys.push(key);
        }
        match ctx.secret(ns, &cr.name) {
            None => {
                unresolved = Some((
                    "InvalidCredentialsRef",
                    format!("Secret {ns}/{} not found", cr.name),
                ))
            }
            Some(sec) => {
                let missing = missing_keys(&sec.keys, &keys);
                if !missing.is_empty() {
                    unresolved = Some((
                        "InvalidCredentialsRef",
                        format!("Secret {ns}/{} has no key {}", cr.name, missing.join(", ")),
                    ));
                }
            }
        }
        files.extend(keys.into_iter().map(file));
    } else if provider == cfg::LlmProvider::Anthropic {
        invalid.get_or_insert((
            "Invalid",
            "provider anthropic needs credentialsRef (an API key)".to_string(),
        ));
    }
    let mut probe = ProxyConfig::empty();
    probe.llm_backends.insert("b".to_string(), c.clone());
    if let Some(msg) = problems_of(&probe, "llm_backends.b.") {
        invalid.get_or_insert(("Invalid", msg));
    }
    BackendEval {
        config: (invalid.is_none() && unresolved.is_none()).then_some(c),
        files,
        invalid,
        unresolved,
    }
}

pub(super) fn check_consumer(c: &crds::Consumer) -> Result<cfg::Consumer, Problem> {
    let limit = match c.spec.token_limit_per_minute {
        None => None,
        Some(n) => match u64::try_from(n) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err((
                    "Invalid",
                    format!("tokenLimitPerMinute {n} must be at least 1"),
                ));
            }
        },
    };
    let consumer = cfg::Consumer {
        jwt_claim: cfg::ClaimMatch {
            key: c.spec.jwt_claim_match.key.clone(),
            value: c.spec.jwt_claim_match.value.clone(),
        },
        token_limit_per_minute: limit,
    };
    let mut probe = ProxyConfig::empty();
    probe.consumers.insert("c".to_string(), consumer.clone());
    match problems_of(&probe, "consumers.c.") {
        Some(msg) => Err(("Invalid", msg)),
        None => Ok(consumer),
    }
}

pub(super) fn check_policy(
    ctx: &Ctx,
    config_maps: &ConfigMaps,
    gws: &BTreeMap<ObjectKey, GatewayState>,
    ns: &str,
    p: &crds::JwtValidationPolicy,
) -> Result<(ObjectKey, PolicyEval), Problem> {
    let spec = &p.spec;
    let t = &spec.target_ref;
    if t.group != GATEWAY_GROUP || t.kind != "Gateway" {
        return Err((
            "InvalidKind",
            format!(
                "targetRef {}: kind {} is not supported; target a Gateway",
                t.name,
                shown_kind(&t.kind, &t.group)
            ),
        ));
    }
    let gw = (ns.to_string(), t.name.clone());
    if !gws.contains_key(&gw) {
        return Err((
            "TargetNotFound",
            format!(
                "Gateway {ns}/{} not found, or not of a CitoRoute GatewayClass",
                t.name
            ),
        ));
    }
    let jwks = &spec.jwks;
    let mut jwt = cfg::JwtSettings {
        issuer: spec.issuer.clone().unwrap_or_default(),
        audiences: spec.audiences.clone(),
        jwks_file: String::new(),
        jwks_url: String::new(),
        jwks_refresh_interval: None,
        jwks_ca_file: None,
        claim: spec.claim.clone().unwrap_or_default(),
        header: spec
            .header
            .clone()
            .unwrap_or_else(|| "authorization".to_string()),
    };
    let (source, kind, r, info) = match (&jwks.secret_ref, &jwks.config_map_ref, &jwks.url) {
        (Some(r), None, None) => {
            let info = ctx
                .secret(ns, &r.name)
                .map(|s| (s.keys.clone(), s.jwks_keys.clone()));
            (FileSource::Secret, "Secret", r, info)
        }
        (None, Some(r), None) => {
            let info = config_maps
                .get(&(ns, r.name.as_str()))
                .map(|c| (c.keys.clone(), c.jwks_keys.clone()));
            (FileSource::ConfigMap, "ConfigMap", r, info)
        }
        (None, None, Some(url)) => {
            jwt.jwks_url = url.clone();
            jwt.jwks_refresh_interval = match jwks.refresh_interval.as_deref().map(str::parse) {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => return Err(("InvalidJWKS", format!("jwks.refreshInterval: {e}"))),
            };
            let mut files = Vec::new();
            if let Some(r) = &jwks.ca_certificate_ref {
                let f = check_ca_ref(config_maps, ns, &r.name, &r.key)?;
                jwt.jwks_ca_file = Some(f.path());
                files.push(f);
            }
            let mut probe = ProxyConfig::empty();
            probe.jwt = Some(jwt.clone());
            if let Some(msg) = problems_of(&probe, "jwt.") {
                return Err(("InvalidJWKS", msg));
            }
            return Ok((gw, PolicyEval { jwt, files }));
        }
        _ => {
            return Err((
                "InvalidJWKS",
                "jwks: give exactly one of secretRef, configMapRef and url".to_string(),
            ));
        }
    };
    if jwks.refresh_interval.is_some() {
        return Err((
            "InvalidJWKS",
            "jwks.refreshInterval is for url (a file is re-read when it changes)".to_string(),
        ));
    }
    if jwks.ca_certificate_ref.is_some() {
        return Err((
            "InvalidJWKS",
            "jwks.caCertificateRef is for url (the CA trusted when fetching it)".to_string(),
        ));
    }
    let where_ = format!("{kind} {ns}/{}", r.name);
    match info {
        None => return Err(("InvalidJWKS", format!("{where_} not found"))),
        Some((keys, _)) if !keys.contains(&r.key) => {
            return Err(("InvalidJWKS", format!("{where_} has no key {}", r.key)));
        }
        Some((_, jwks_keys)) if !jwks_keys.contains(&r.key) => {
            return Err((
                "InvalidJWKS",
                format!(
                    "key {} of {where_} is not a JWKS document with a usable signing key",
                    r.key
                ),
            ));
        }
        Some(_) => {}
    }
    let file = LlmFile {
        source,
        namespace: ns.to_string(),
        name: r.name.clone(),
        key: r.key.clone(),
    };
    jwt.jwks_file = file.path();
    let mut probe = ProxyConfig::empty();
    probe.jwt = Some(jwt.clone());
    if let Some(msg) = problems_of(&probe, "jwt.") {
        return Err(("Invalid", msg));
    }
    Ok((
        gw,
        PolicyEval {
            jwt,
            files: vec![file],
        },
    ))
}

/// The CA bundle a JWKS URL is fetched with: a ConfigMap key holding a PEM certificate. A
/// missing ConfigMap or key, or a value with no certificate, refuses the policy (the proxy
/// would refuse the whole config).
fn check_ca_ref(
    config_maps: &ConfigMaps,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<LlmFile, Problem> {
    let shown = format!("ConfigMap {ns}/{name}");
    let why = match config_maps.get(&(ns, name)) {
        None => Some(format!("{shown} not found")),
        Some(cm) if !cm.keys.contains(key) => Some(format!("{shown} has no key {key}")),
        Some(cm) if !cm.certificate_keys.contains(key) => {
            Some(format!("key {key} of {shown} holds no PEM certificate"))
        }
        Some(_) => None,
    };
    if let Some(why) = why {
        return Err((
            "InvalidCACertificateRef",
            format!("jwks.caCertificateRef: {why}"),
        ));
    }
    Ok(LlmFile {
        source: FileSource::ConfigMap,
        namespace: ns.to_string(),
        name: name.to_string(),
        key: key.to_string(),
    })
}

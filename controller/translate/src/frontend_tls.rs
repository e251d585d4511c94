//! Client certificate validation of a Gateway (`spec.tls.frontend`, GEP-91): which validation
//! each TLS-terminating listener runs (its port's `perPort` entry, else `default`), the CA
//! ConfigMaps it trusts, and the listener conditions the spec asks for when they do not
//! resolve. The proxy applies validation per port, as the API does.

use crate::backends::{Ctx, RefProblem};
use crate::gateways::ListenerState;
use crate::ir::{FrontendValidationIr, GatewaySpecIr, ObjRefIr};
use crate::{ConfigMapInfo, FileSource, LlmFile, ObjectKey, Snapshot};
use citoroute_config::{ClientValidation, ListenerProtocol};
use std::collections::BTreeMap;

/// The ConfigMap key that holds a CA bundle (the API's Core support).
pub(crate) const CA_KEY: &str = "ca.crt";

/// The validation a listener runs with: the CA ConfigMaps that resolved, and the mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientCas {
    pub config_maps: Vec<ObjectKey>,
    /// `mode: AllowInsecureFallback`.
    pub insecure_fallback: bool,
}

impl ClientCas {
    /// The CA bundles as files of the proxy's Secret.
    pub fn files(&self) -> impl Iterator<Item = LlmFile> + '_ {
        self.config_maps.iter().map(|(ns, name)| ca_file(ns, name))
    }

    pub fn config(&self) -> ClientValidation {
        ClientValidation {
            ca_files: self.files().map(|f| f.path()).collect(),
            allow_insecure_fallback: self.insecure_fallback,
        }
    }
}

/// The CA bundle of ConfigMap `ns/name` as a file of the proxy's Secret. Every CA reference
/// (client validation, BackendTLSPolicy) goes through here, so one ConfigMap is one file.
pub(crate) fn ca_file(ns: &str, name: &str) -> LlmFile {
    LlmFile {
        source: FileSource::ConfigMap,
        namespace: ns.to_string(),
        name: name.to_string(),
        key: CA_KEY.to_string(),
    }
}

/// The snapshot's ConfigMaps by `(namespace, name)`.
pub(crate) struct ConfigMaps<'a>(BTreeMap<(&'a str, &'a str), &'a ConfigMapInfo>);

impl<'a> ConfigMaps<'a> {
    pub fn new(s: &'a Snapshot) -> ConfigMaps<'a> {
        ConfigMaps(
            s.config_maps
                .iter()
                .map(|c| ((c.namespace.as_str(), c.name.as_str()), c))
                .collect(),
        )
    }

    /// The file of ConfigMap `ns/name` as a CA bundle, or why it cannot be one (the message
    /// of an InvalidCACertificateRef): it must exist and hold a PEM certificate in `ca.crt`.
    pub fn ca_bundle(&self, ns: &str, name: &str) -> Result<LlmFile, &'static str> {
        match self.0.get(&(ns, name)) {
            None => Err("ConfigMap not found"),
            Some(cm) if !cm.keys.contains(CA_KEY) => Err("the ConfigMap has no key ca.crt"),
            Some(cm) if !cm.certificate_keys.contains(CA_KEY) => {
                Err("ca.crt holds no PEM certificate")
            }
            Some(_) => Ok(ca_file(ns, name)),
        }
    }
}

/// The validation for listeners on `port`: a `perPort` entry replaces the default, also when
/// it has no validation.
fn for_port(spec: &GatewaySpecIr, port: i32) -> Option<&FrontendValidationIr> {
    let frontend = spec.tls.as_ref()?.frontend.as_ref()?;
    match frontend.per_port.iter().find(|p| p.port == port) {
        Some(p) => p.tls.validation.as_ref(),
        None => frontend.default.validation.as_ref(),
    }
}

/// Sets the client validation of every TLS-terminating listener, or the conditions saying
/// why it cannot: a CA reference that does not resolve makes ResolvedRefs False; with none
/// resolving the listener is not accepted (NoValidCACertificate) and so not served, never
/// served without the validation it asks for.
pub(crate) fn apply(
    listeners: &mut [ListenerState],
    spec: &GatewaySpecIr,
    ctx: &Ctx,
    cms: &ConfigMaps,
    gw_ns: &str,
) {
    for l in listeners {
        let terminates = match l.protocol {
            Some(ListenerProtocol::Https) => true,
            Some(ListenerProtocol::Tls) => !l.passthrough,
            _ => false,
        };
        if !terminates {
            continue;
        }
        let Some(v) = for_port(spec, l.ir.port) else {
            continue;
        };
        let mut config_maps = Vec::new();
        let mut problems: Vec<RefProblem> = Vec::new();
        for r in &v.ca_certificate_refs {
            match resolve(ctx, cms, gw_ns, r) {
                Ok(key) => config_maps.push(key),
                Err(p) => problems.push(p),
            }
        }
        if let Some((reason, _)) = problems.first() {
            let message = problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            l.refs_problem.get_or_insert((reason, message));
        }
        if config_maps.is_empty() {
            l.invalid.get_or_insert((
                "NoValidCACertificate",
                format!(
                    "no caCertificateRef of the client certificate validation for port {} resolved",
                    l.ir.port
                ),
            ));
            continue;
        }
        config_maps.sort();
        config_maps.dedup();
        l.client_cas = Some(ClientCas {
            config_maps,
            insecure_fallback: v.mode.as_deref() == Some("AllowInsecureFallback"),
        });
    }
}

/// One caCertificateRef: a ConfigMap (core group) with a PEM certificate under `ca.crt`, in
/// the Gateway's namespace or one whose ReferenceGrant allows it.
fn resolve(
    ctx: &Ctx,
    cms: &ConfigMaps,
    gw_ns: &str,
    r: &ObjRefIr,
) -> Result<ObjectKey, RefProblem> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("");
    let ns = r.namespace.as_deref().unwrap_or(gw_ns);
    if !group.is_empty() || kind != "ConfigMap" {
        let what = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        return Err((
            "InvalidCACertificateKind",
            format!(
                "caCertificateRef {}: kind {what} is not supported (use a ConfigMap with key {CA_KEY})",
                r.name
            ),
        ));
    }
    if ns != gw_ns && !ctx.granted("Gateway", gw_ns, "", "ConfigMap", ns, &r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "caCertificateRef {ns}/{}: no ReferenceGrant in {ns} allows Gateways of {gw_ns} to refer to it",
                r.name
            ),
        ));
    }
    match cms.ca_bundle(ns, &r.name) {
        Ok(_) => Ok((ns.to_string(), r.name.clone())),
        Err(why) => Err((
            "InvalidCACertificateRef",
            format!("caCertificateRef {ns}/{}: {why}", r.name),
        )),
    }
}

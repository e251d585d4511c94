//! BackendTLSPolicy: TLS from the proxy to a Service's endpoints. A policy targets a Service,
//! or one port of it by name (`sectionName`); the backend of that Service port then carries
//! the policy's hostname as SNI, its CA bundles as files of the proxy's Secret (the same files
//! client certificate validation uses) and its subject alternative names. The policy's status
//! has one entry per Gateway of ours whose config sends traffic to a targeted Service.

use crate::backends::{Ctx, RefProblem};
use crate::frontend_tls::{CA_KEY, ConfigMaps};
use crate::gateways::GatewayState;
use crate::status::{Condition, ParentReference, PolicyAncestorStatus, PolicyStatus};
use crate::{GATEWAY_GROUP, LlmFile, ObjectKey, Snapshot, Translation};
use citoroute_config::BackendTls;
use citoroute_config::validate::{check_sni, check_subject_alt_name};
use gateway_api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicyValidation,
    BackendTlsPolicyValidationSubjectAltNamesType as SanType,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet};

/// The API's limit on `status.ancestors`.
const MAX_ANCESTORS: usize = 16;

/// The only well-known CA set we know: the proxy's system trust store.
const SYSTEM_CAS: &str = "System";

/// `(namespace, Service, port name)`: what a targetRef selects.
type Target = (String, String, Option<String>);

/// A policy as the translation uses it.
pub(crate) struct Policy {
    pub key: ObjectKey,
    generation: i64,
    created: Option<Time>,
    /// Targeted Services (of the policy's namespace), each with an optional port name.
    targets: Vec<(String, Option<String>)>,
    /// The backend TLS settings, or why the policy gives none (its Accepted reason).
    pub tls: Result<BackendTls, RefProblem>,
    /// The CA references that did not resolve (ResolvedRefs False).
    refs_problem: Option<RefProblem>,
    /// The CA bundles `tls.ca_files` names, as files of the proxy's Secret.
    pub files: Vec<LlmFile>,
}

/// Every policy, and which one takes precedence for each target.
#[derive(Default)]
pub(crate) struct Policies {
    list: Vec<Policy>,
    /// Index into `list` of the policy that takes precedence for a target.
    winners: BTreeMap<Target, usize>,
    /// Targets naming a port the Service does not have.
    missing: BTreeSet<Target>,
}

impl Policies {
    /// Evaluates every policy and resolves conflicts: for the same target, the oldest policy
    /// takes precedence, then the first by namespace/name.
    pub fn new(s: &Snapshot) -> Policies {
        if s.backend_tls_policies.is_empty() {
            return Policies::default();
        }
        let cms = ConfigMaps::new(s);
        let mut list: Vec<Policy> = s
            .backend_tls_policies
            .iter()
            .filter_map(|p| evaluate(&cms, p))
            .collect();
        list.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
        let port_names = service_port_names(s);
        let mut winners = BTreeMap::new();
        let mut missing = BTreeSet::new();
        for (i, p) in list.iter().enumerate() {
            for (svc, section) in &p.targets {
                let target = (p.key.0.clone(), svc.clone(), section.clone());
                let names = port_names.get(&(p.key.0.as_str(), svc.as_str()));
                if let (Some(section), Some(names)) = (section, names)
                    && !names.contains(section.as_str())
                {
                    missing.insert(target);
                    continue;
                }
                winners.entry(target).or_insert(i);
            }
        }
        Policies {
            list,
            winners,
            missing,
        }
    }

    /// The policy for Service port `port_name` of `ns/svc`: one naming the port takes
    /// precedence over one for the whole Service.
    pub fn for_port(&self, ns: &str, svc: &str, port_name: Option<&str>) -> Option<&Policy> {
        if self.list.is_empty() {
            return None;
        }
        let at = |section: Option<&str>| {
            self.winners
                .get(&(ns.to_string(), svc.to_string(), section.map(str::to_string)))
        };
        port_name
            .filter(|n| !n.is_empty())
            .and_then(|n| at(Some(n)))
            .or_else(|| at(None))
            .map(|&i| &self.list[i])
    }
}

/// The port names of every Service, by `(namespace, name)`.
fn service_port_names(s: &Snapshot) -> BTreeMap<(&str, &str), BTreeSet<&str>> {
    let mut out = BTreeMap::new();
    for svc in &s.services {
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let ports = svc.spec.as_ref().and_then(|s| s.ports.as_deref());
        let names = ports
            .unwrap_or(&[])
            .iter()
            .filter_map(|p| p.name.as_deref())
            .collect();
        out.insert((ns, name), names);
    }
    out
}

fn evaluate(cms: &ConfigMaps, p: &BackendTlsPolicy) -> Option<Policy> {
    let key = (p.metadata.namespace.clone()?, p.metadata.name.clone()?);
    // Only Services are backends; other target kinds select nothing here.
    let targets: BTreeSet<(String, Option<String>)> = p
        .spec
        .target_refs
        .iter()
        .filter(|t| t.group.is_empty() && t.kind == "Service")
        .map(|t| {
            let section = t.section_name.clone().filter(|s| !s.is_empty());
            (t.name.clone(), section)
        })
        .collect();
    let v = &p.spec.validation;
    let (files, refs_problem, trust_problem) = trust(cms, &key.0, v);
    let tls = match trust_problem {
        Some(problem) => Err(problem),
        None => settings(v, &files),
    };
    Some(Policy {
        key,
        generation: p.metadata.generation.unwrap_or_default(),
        created: p.metadata.creation_timestamp.clone(),
        targets: targets.into_iter().collect(),
        tls,
        refs_problem,
        files,
    })
}

/// SNI and names from `validation`; a value the proxy cannot use makes the policy Invalid.
fn settings(v: &BackendTlsPolicyValidation, files: &[LlmFile]) -> Result<BackendTls, RefProblem> {
    let invalid = |msg: String| ("Invalid", msg);
    check_sni(&v.hostname).map_err(|e| invalid(format!("validation.hostname: {e}")))?;
    let mut names = Vec::new();
    for (i, san) in v.subject_alt_names.iter().flatten().enumerate() {
        let value = match san.r#type {
            SanType::Hostname => san.hostname.as_deref().filter(|h| !h.contains(':')),
            SanType::Uri => san.uri.as_deref().filter(|u| u.contains(':')),
        };
        let at = format!("validation.subjectAltNames[{i}]");
        let value =
            value.ok_or_else(|| invalid(format!("{at}: the value for its type is missing")))?;
        check_subject_alt_name(value).map_err(|e| invalid(format!("{at}: {e}")))?;
        names.push(value.to_string());
    }
    Ok(BackendTls {
        sni: v.hostname.clone(),
        ca_files: files.iter().map(LlmFile::path).collect(),
        subject_alt_names: names,
    })
}

/// The trust anchors: the CA bundles that resolved, the unresolved references
/// (ResolvedRefs), and why the policy cannot verify anything (Accepted) if so.
fn trust(
    cms: &ConfigMaps,
    ns: &str,
    v: &BackendTlsPolicyValidation,
) -> (Vec<LlmFile>, Option<RefProblem>, Option<RefProblem>) {
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    let well_known = v
        .well_known_ca_certificates
        .as_deref()
        .filter(|w| !w.is_empty());
    let invalid = |msg: &str| (Vec::new(), None, Some(("Invalid", msg.to_string())));
    match (refs.is_empty(), well_known) {
        (false, Some(_)) => {
            return invalid("set either caCertificateRefs or wellKnownCACertificates, not both");
        }
        (true, None) => {
            return invalid("caCertificateRefs or wellKnownCACertificates is required");
        }
        (true, Some(SYSTEM_CAS)) => return (Vec::new(), None, None),
        (true, Some(other)) => {
            return invalid(&format!(
                "wellKnownCACertificates {other:?} is not supported (only {SYSTEM_CAS})"
            ));
        }
        (false, None) => {}
    }
    let mut files = Vec::new();
    let mut problems: Vec<RefProblem> = Vec::new();
    for r in refs {
        if !r.group.is_empty() || r.kind != "ConfigMap" {
            let what = if r.group.is_empty() {
                r.kind.clone()
            } else {
                format!("{}.{}", r.kind, r.group)
            };
            problems.push((
                "InvalidKind",
                format!(
                    "caCertificateRef {}: kind {what} is not supported (use a ConfigMap with key {CA_KEY})",
                    r.name
                ),
            ));
            continue;
        }
        match cms.ca_bundle(ns, &r.name) {
            Ok(f) => files.push(f),
            Err(why) => problems.push((
                "InvalidCACertificateRef",
                format!("caCertificateRef {ns}/{}: {why}", r.name),
            )),
        }
    }
    files.sort();
    files.dedup();
    let refs_problem = problems.first().map(|(reason, _)| {
        let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
        (*reason, messages.join("; "))
    });
    let trust_problem = files.is_empty().then(|| {
        (
            "NoValidCACertificate",
            "no caCertificateRef resolved to a CA certificate".to_string(),
        )
    });
    (files, refs_problem, trust_problem)
}

/// How a policy fares on one target a Gateway uses.
enum Outcome<'a> {
    Applied,
    /// Another policy takes precedence there.
    Lost(&'a ObjectKey),
    /// The Service has no port of that name.
    Missing(String),
}

/// Adds the CA files of the backends each Gateway uses to its proxy's files, and writes the
/// status of every policy that affects one of our Gateways.
pub(crate) fn attach(
    s: &Snapshot,
    ctx: &Ctx,
    gws: &BTreeMap<ObjectKey, GatewayState>,
    t: &mut Translation,
) {
    let policies = &ctx.policies;
    // The Gateways sending traffic to each Service.
    let mut users: BTreeMap<&ObjectKey, BTreeSet<&ObjectKey>> = BTreeMap::new();
    for (gw_key, gw) in gws {
        let mut files = BTreeSet::new();
        for name in gw.config.backends.keys() {
            if let Some(svc) = ctx.backend_services.get(name) {
                users.entry(svc).or_default().insert(gw_key);
            }
            files.extend(ctx.backend_files.get(name).into_iter().flatten().cloned());
        }
        if !files.is_empty() {
            t.llm_files.entry(gw_key.clone()).or_default().extend(files);
        }
    }
    for (i, p) in policies.list.iter().enumerate() {
        let mut per_gw: BTreeMap<&ObjectKey, Vec<Outcome>> = BTreeMap::new();
        for (svc, section) in &p.targets {
            let target = (p.key.0.clone(), svc.clone(), section.clone());
            let service = (p.key.0.clone(), svc.clone());
            let Some(gateways) = users.get(&service) else {
                continue;
            };
            for gw in gateways {
                let outcome = if policies.missing.contains(&target) {
                    Outcome::Missing(format!(
                        "Service {}/{svc} has no port named {}",
                        p.key.0,
                        section.as_deref().unwrap_or_default()
                    ))
                } else {
                    match policies.winners.get(&target) {
                        Some(&w) if w != i => Outcome::Lost(&policies.list[w].key),
                        _ => Outcome::Applied,
                    }
                };
                per_gw.entry(*gw).or_default().push(outcome);
            }
        }
        if per_gw.is_empty() {
            continue;
        }
        let ancestors = per_gw
            .into_iter()
            .take(MAX_ANCESTORS)
            .map(|(gw, outcomes)| PolicyAncestorStatus {
                ancestor_ref: ParentReference {
                    group: GATEWAY_GROUP.to_string(),
                    kind: "Gateway".to_string(),
                    namespace: Some(gw.0.clone()),
                    name: gw.1.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: s.controller_name.clone(),
                conditions: conditions(p, &outcomes),
            })
            .collect();
        t.backend_tls_policy_statuses
            .insert(p.key.clone(), PolicyStatus { ancestors });
    }
}

/// Accepted and ResolvedRefs of a policy for one Gateway. A policy applied to any target the
/// Gateway uses is accepted there (if valid); else it lost every conflict, or names no port.
fn conditions(p: &Policy, outcomes: &[Outcome]) -> Vec<Condition> {
    let g = p.generation;
    let applied = outcomes.iter().any(|o| matches!(o, Outcome::Applied));
    let lost = outcomes.iter().find_map(|o| match o {
        Outcome::Lost(winner) => Some(*winner),
        _ => None,
    });
    let missing = outcomes.iter().find_map(|o| match o {
        Outcome::Missing(m) => Some(m.clone()),
        _ => None,
    });
    let accepted = match (&p.tls, lost, missing) {
        (Ok(_), _, _) if applied => {
            Condition::new("Accepted", true, "Accepted", "policy accepted", g)
        }
        (Err((reason, msg)), _, _) if applied => {
            Condition::new("Accepted", false, reason, msg.clone(), g)
        }
        (_, Some((ns, name)), _) => Condition::new(
            "Accepted",
            false,
            "Conflicted",
            format!("BackendTLSPolicy {ns}/{name} takes precedence for the same Service port"),
            g,
        ),
        (_, None, missing) => Condition::new(
            "Accepted",
            false,
            "TargetNotFound",
            missing.unwrap_or_default(),
            g,
        ),
    };
    let resolved = match &p.refs_problem {
        Some((reason, msg)) => Condition::new("ResolvedRefs", false, reason, msg.clone(), g),
        None => Condition::new(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "all references resolved",
            g,
        ),
    };
    vec![accepted, resolved]
}

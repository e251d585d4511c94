//! Lookups over the snapshot: namespaces, ReferenceGrants, Services and their endpoints.

use crate::backend_tls::Policies;
use crate::ir::{self, BackendRefIr, ReferenceGrantSpecIr};
use crate::{GATEWAY_GROUP, LlmFile, ObjectKey, SecretInfo, Snapshot};
use citoroute_config::{Backend, BackendProtocol};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Why a reference did not resolve: a ResolvedRefs reason and a message.
pub(crate) type RefProblem = (&'static str, String);

pub(crate) struct Ctx<'a> {
    ns_labels: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
    services: BTreeMap<(&'a str, &'a str), &'a Service>,
    slices: BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    secrets: BTreeMap<(&'a str, &'a str), &'a SecretInfo>,
    grants: Vec<(String, ReferenceGrantSpecIr)>,
    /// BackendTLSPolicies, applied to backends as they resolve.
    pub policies: Policies,
    /// Every backend some route resolved to, by name.
    pub backends: BTreeMap<String, Backend>,
    /// The Service `(namespace, name)` of each backend.
    pub backend_services: BTreeMap<String, ObjectKey>,
    /// The CA bundles a backend's TLS verification reads.
    pub backend_files: BTreeMap<String, Vec<LlmFile>>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl<'a> Ctx<'a> {
    pub fn new(s: &'a Snapshot) -> Ctx<'a> {
        let mut ns_labels = BTreeMap::new();
        for ns in &s.namespaces {
            if let Some(name) = ns.metadata.name.as_deref() {
                ns_labels.insert(name, ns.metadata.labels.as_ref().unwrap_or(&NO_LABELS));
            }
        }
        let mut services = BTreeMap::new();
        for svc in &s.services {
            if let (Some(ns), Some(name)) = (
                svc.metadata.namespace.as_deref(),
                svc.metadata.name.as_deref(),
            ) {
                services.insert((ns, name), svc);
            }
        }
        let mut slices: BTreeMap<_, Vec<&EndpointSlice>> = BTreeMap::new();
        for es in &s.endpoint_slices {
            let ns = es.metadata.namespace.as_deref();
            let svc = es
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(svc)) = (ns, svc) {
                slices.entry((ns, svc.as_str())).or_default().push(es);
            }
        }
        for list in slices.values_mut() {
            list.sort_by_key(|es| es.metadata.name.clone());
        }
        let mut secrets = BTreeMap::new();
        for sec in &s.secrets {
            secrets.insert((sec.namespace.as_str(), sec.name.as_str()), sec);
        }
        let mut grants = Vec::new();
        for g in &s.reference_grants {
            if let (Some(ns), Ok(spec)) = (
                g.metadata.namespace.clone(),
                ir::convert::<_, ReferenceGrantSpecIr>(&g.spec),
            ) {
                grants.push((ns, spec));
            }
        }
        Ctx {
            ns_labels,
            services,
            slices,
            secrets,
            grants,
            policies: Policies::new(s),
            backends: BTreeMap::new(),
            backend_services: BTreeMap::new(),
            backend_files: BTreeMap::new(),
        }
    }

    /// A namespace's labels, with the `kubernetes.io/metadata.name` label the API server puts
    /// on every namespace (also when the namespace is not in the snapshot).
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .ns_labels
            .get(ns)
            .copied()
            .unwrap_or(&NO_LABELS)
            .clone();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
        labels
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<&'a SecretInfo> {
        self.secrets.get(&(ns, name)).copied()
    }

    /// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects of `from_ns` refer to the
    /// `to_group`/`to_kind` object `to_name`.
    pub fn granted(
        &self,
        from_kind: &str,
        from_ns: &str,
        to_group: &str,
        to_kind: &str,
        to_ns: &str,
        to_name: &str,
    ) -> bool {
        self.grants.iter().any(|(ns, g)| {
            ns == to_ns
                && g.from.iter().any(|f| {
                    f.group == GATEWAY_GROUP && f.kind == from_kind && f.namespace == from_ns
                })
                && g.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
    }

    /// Resolves a route's backendRef to a backend name, adding the backend (with its ready
    /// endpoints) to [`Ctx::backends`].
    pub fn resolve(
        &mut self,
        route_kind: &str,
        route_ns: &str,
        r: &BackendRefIr,
        grpc: bool,
    ) -> Result<String, RefProblem> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            let shown = if group.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{group}")
            };
            return Err((
                "InvalidKind",
                format!("backendRef {}: kind {shown} is not supported", r.name),
            ));
        }
        let ns = r.namespace.as_deref().unwrap_or(route_ns);
        if ns != route_ns && !self.granted(route_kind, route_ns, "", "Service", ns, &r.name) {
            return Err((
                "RefNotPermitted",
                format!(
                    "backendRef {ns}/{}: no ReferenceGrant in {ns} allows {route_kind}s of {route_ns} to refer to it",
                    r.name
                ),
            ));
        }
        let Some(svc) = self.services.get(&(ns, r.name.as_str())).copied() else {
            return Err((
                "BackendNotFound",
                format!("Service {ns}/{} not found", r.name),
            ));
        };
        let Some(port) = r.port else {
            return Err((
                "BackendNotFound",
                format!("backendRef {ns}/{}: port is required for a Service", r.name),
            ));
        };
        let spec = svc.spec.as_ref();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        let Some(sp) = ports.iter().find(|p| p.port == port) else {
            return Err((
                "BackendNotFound",
                format!("Service {ns}/{} has no port {port}", r.name),
            ));
        };
        let name = format!("{ns}/{}:{port}", r.name);
        let slices = self.slices.get(&(ns, r.name.as_str()));
        let mut endpoints = BTreeSet::new();
        let mut slice_app_protocol = None;
        for es in slices.into_iter().flatten() {
            if es.address_type != "IPv4" && es.address_type != "IPv6" {
                continue;
            }
            let Some(ep_port) = es
                .ports
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .find(|p| p.name.as_deref().unwrap_or("") == sp.name.as_deref().unwrap_or(""))
            else {
                continue;
            };
            let Some(target) = ep_port.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            if slice_app_protocol.is_none() {
                slice_app_protocol = ep_port.app_protocol.clone();
            }
            for ep in &es.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
                        continue;
                    };
                    endpoints.insert(std::net::SocketAddr::new(ip, target).to_string());
                }
            }
        }
        let app_protocol = sp.app_protocol.clone().or(slice_app_protocol);
        let protocol = match app_protocol.as_deref() {
            Some("kubernetes.io/h2c") => BackendProtocol::H2c,
            Some("kubernetes.io/ws") => BackendProtocol::Websocket,
            _ if grpc => BackendProtocol::H2c,
            _ => BackendProtocol::Http1,
        };
        let policy = self.policies.for_port(ns, &r.name, sp.name.as_deref());
        let mut endpoints: Vec<String> = endpoints.into_iter().collect();
        let tls = match policy.map(|p| &p.tls) {
            None => None,
            Some(Ok(tls)) => Some(tls.clone()),
            // A policy that cannot verify the backend must not fall back to plaintext or to
            // other trust: with no endpoint left, requests get 503.
            Some(Err(_)) => {
                endpoints.clear();
                None
            }
        };
        if let Some(p) = policy.filter(|p| p.tls.is_ok()) {
            self.backend_files.insert(name.clone(), p.files.clone());
        }
        self.backend_services
            .insert(name.clone(), (ns.to_string(), r.name.clone()));
        let entry = self
            .backends
            .entry(name.clone())
            .or_insert_with(|| Backend {
                endpoints,
                protocol: over_tls(protocol, tls.is_some()),
                tls,
                load_balancing: Default::default(),
                circuit_breaker: Default::default(),
                connect_timeout: None,
            });
        // gRPC needs HTTP/2 to the backend, whoever else refers to the same port.
        if grpc && app_protocol.is_none() {
            entry.protocol = over_tls(BackendProtocol::H2c, entry.tls.is_some());
        }
        Ok(name)
    }
}

/// HTTP/2 to a backend under TLS is `h2` (ALPN), not cleartext `h2c`.
fn over_tls(protocol: BackendProtocol, tls: bool) -> BackendProtocol {
    match protocol {
        BackendProtocol::H2c if tls => BackendProtocol::H2,
        p => p,
    }
}

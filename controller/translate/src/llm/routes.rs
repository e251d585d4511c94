//! An LLMRoute's references (backendRefs, consumerRefs) and its config routes on a Gateway.

use super::Problem;
use super::checks::{BackendEval, shown_kind};
use crate::ObjectKey;
use crate::gateways::GatewayState;
use citoroute_config as cfg;
use citoroute_crds as crds;
use std::collections::BTreeMap;

/// What an LLMRoute's references resolved to.
pub(super) struct RouteRefs {
    /// The usable backends, by config name (`ns/name`).
    pub backends: Vec<cfg::LlmBackendRef>,
    /// The valid consumers, by config name (`ns/name`).
    pub consumers: Vec<String>,
    /// Every reference that did not resolve (ResolvedRefs False).
    pub problems: Vec<Problem>,
}

/// Resolves backendRefs to usable LLMBackends and consumerRefs to valid Consumers, both in
/// the route's namespace.
pub(super) fn resolve_refs(
    ns: &str,
    spec: &crds::LlmRouteSpec,
    backends: &BTreeMap<ObjectKey, BackendEval>,
    consumers: &BTreeMap<ObjectKey, Result<cfg::Consumer, Problem>>,
) -> RouteRefs {
    let mut out = RouteRefs {
        backends: Vec::new(),
        consumers: Vec::new(),
        problems: Vec::new(),
    };
    for b in &spec.backend_refs {
        if b.group != crds::GROUP || b.kind != "LLMBackend" {
            out.problems.push((
                "InvalidKind",
                format!(
                    "backendRef {}: kind {} is not supported; use an LLMBackend",
                    b.name,
                    shown_kind(&b.kind, &b.group)
                ),
            ));
            continue;
        }
        match backends.get(&(ns.to_string(), b.name.clone())) {
            None => out.problems.push((
                "BackendNotFound",
                format!("LLMBackend {ns}/{} not found", b.name),
            )),
            Some(ev) if ev.config.is_none() => {
                let why = ev
                    .invalid
                    .as_ref()
                    .or(ev.unresolved.as_ref())
                    .map(|(_, m)| m.as_str())
                    .unwrap_or_default();
                out.problems.push((
                    "BackendNotFound",
                    format!("LLMBackend {ns}/{} is not usable: {why}", b.name),
                ));
            }
            Some(_) => out.backends.push(cfg::LlmBackendRef {
                backend: format!("{ns}/{}", b.name),
                weight: u32::try_from(b.weight.clamp(0, 1_000_000)).unwrap_or(0),
            }),
        }
    }
    for c in &spec.consumer_refs {
        match consumers.get(&(ns.to_string(), c.name.clone())) {
            None => out.problems.push((
                "ConsumerNotFound",
                format!("Consumer {ns}/{} not found", c.name),
            )),
            Some(Err((_, why))) => out.problems.push((
                "ConsumerNotFound",
                format!("Consumer {ns}/{} is not valid: {why}", c.name),
            )),
            Some(Ok(_)) => out.consumers.push(format!("{ns}/{}", c.name)),
        }
    }
    out
}

/// An LLMRoute as it goes into a config.
pub(super) struct Emitted<'a> {
    pub key: &'a ObjectKey,
    pub spec: &'a crds::LlmRouteSpec,
    pub backends: &'a [cfg::LlmBackendRef],
    pub consumers: &'a [String],
}

/// Adds a route to a Gateway's config on the listeners it attached to: one config route per
/// distinct hostname set (`ns/name`, then `ns/name#2`, ...), plus the backends and consumers
/// it names. `keys` gets the route's key once per config route.
pub(super) fn emit(
    gw: &mut GatewayState,
    keys: &mut Vec<ObjectKey>,
    route: &Emitted,
    mut listeners: Vec<(usize, Vec<String>)>,
    backends: &BTreeMap<ObjectKey, BackendEval>,
    consumers: &BTreeMap<ObjectKey, Result<cfg::Consumer, Problem>>,
) {
    let (ns, name) = route.key;
    listeners.sort_by_key(|(i, _)| *i);
    let mut groups: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (i, hosts) in listeners {
        let listener = gw.listeners[i].ir.name.clone();
        match groups.iter_mut().find(|(h, _)| *h == hosts) {
            Some((_, names)) => names.push(listener),
            None => groups.push((hosts, vec![listener])),
        }
    }
    for (n, (hostnames, listeners)) in groups.into_iter().enumerate() {
        gw.config.llm_routes.push(cfg::LlmRoute {
            name: match n {
                0 => format!("{ns}/{name}"),
                n => format!("{ns}/{name}#{}", n + 1),
            },
            listeners,
            hostnames,
            path: cfg::LlmPath {
                kind: match route.spec.path.kind {
                    crds::PathMatchType::PathPrefix => cfg::PathMatchType::PathPrefix,
                    crds::PathMatchType::Exact => cfg::PathMatchType::Exact,
                },
                value: route.spec.path.value.clone(),
            },
            consumers: route.consumers.to_vec(),
            backends: route.backends.to_vec(),
            failover: route.spec.failover,
        });
        keys.push(route.key.clone());
    }
    for b in route.backends {
        let Some((bns, bname)) = b.backend.split_once('/') else {
            continue;
        };
        if let Some(c) = backends
            .get(&(bns.to_string(), bname.to_string()))
            .and_then(|ev| ev.config.clone())
        {
            gw.config.llm_backends.insert(b.backend.clone(), c);
        }
    }
    for c in route.consumers {
        let Some((cns, cname)) = c.split_once('/') else {
            continue;
        };
        if let Some(Ok(cc)) = consumers.get(&(cns.to_string(), cname.to_string())) {
            gw.config.consumers.insert(c.clone(), cc.clone());
        }
    }
}

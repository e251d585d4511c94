//! Gateways and their listeners: validity, conflicts, certificates, then (after the routes
//! attached) the config skeleton and the status.

use crate::backends::Ctx;
use crate::frontend_tls::{self, ClientCas, ConfigMaps};
use crate::ir::{self, GatewaySpecIr, ListenerIr};
use crate::status::*;
use crate::{GATEWAY_GROUP, ObjectKey, RouteKind, Snapshot, Translation, certificate_files};
use citoroute_config::validate::check_hostname;
use citoroute_config::{Listener, ListenerProtocol, ListenerTls, ProxyConfig, TlsMode};
use std::collections::{BTreeMap, BTreeSet};

pub(crate) struct GatewayState {
    pub key: ObjectKey,
    pub generation: i64,
    /// `Some` when the Gateway as a whole cannot be accepted.
    pub rejected: Option<(&'static str, String)>,
    pub listeners: Vec<ListenerState>,
    pub config: ProxyConfig,
    /// The route each config route came from, per list, parallel to the config's lists.
    pub http_keys: Vec<crate::RouteKey>,
    pub grpc_keys: Vec<crate::RouteKey>,
    pub tls_keys: Vec<crate::RouteKey>,
    /// Set when the config does not validate even after dropping the offending routes.
    pub config_error: Option<String>,
}

impl GatewayState {
    fn new(
        key: ObjectKey,
        generation: i64,
        rejected: Option<(&'static str, String)>,
        listeners: Vec<ListenerState>,
    ) -> Self {
        GatewayState {
            key,
            generation,
            rejected,
            listeners,
            config: ProxyConfig::empty(),
            http_keys: Vec::new(),
            grpc_keys: Vec::new(),
            tls_keys: Vec::new(),
            config_error: None,
        }
    }
}

pub(crate) struct ListenerState {
    pub ir: ListenerIr,
    pub protocol: Option<ListenerProtocol>,
    pub passthrough: bool,
    pub kinds: Vec<RouteKind>,
    pub invalid: Option<(&'static str, String)>,
    pub conflicted: Option<&'static str>,
    pub refs_problem: Option<(&'static str, String)>,
    pub certs: Vec<ObjectKey>,
    /// Client certificate validation (`spec.tls.frontend`) of a TLS-terminating listener.
    pub client_cas: Option<ClientCas>,
    /// Routes counted in `attachedRoutes`.
    pub attached: BTreeSet<crate::RouteKey>,
}

impl ListenerState {
    /// Whether the proxy serves this listener.
    pub fn programmed(&self) -> bool {
        self.protocol.is_some()
            && self.invalid.is_none()
            && self.conflicted.is_none()
            && !self.kinds.is_empty()
            && (self.passthrough
                || self.protocol == Some(ListenerProtocol::Http)
                || !self.certs.is_empty())
    }

    pub fn port(&self) -> Option<u16> {
        u16::try_from(self.ir.port).ok().filter(|p| *p > 0)
    }
}

fn kinds_for(protocol: Option<ListenerProtocol>) -> &'static [RouteKind] {
    match protocol {
        Some(ListenerProtocol::Http | ListenerProtocol::Https) => {
            &[RouteKind::Http, RouteKind::Grpc]
        }
        Some(ListenerProtocol::Tls) => &[RouteKind::Tls],
        None => &[],
    }
}

pub(crate) fn build(
    s: &Snapshot,
    ctx: &Ctx,
    classes: &BTreeSet<String>,
) -> BTreeMap<ObjectKey, GatewayState> {
    let mut out = BTreeMap::new();
    let config_maps = ConfigMaps::new(s);
    for gw in &s.gateways {
        let (Some(ns), Some(name)) = (gw.metadata.namespace.clone(), gw.metadata.name.clone())
        else {
            continue;
        };
        if !classes.contains(&gw.spec.gateway_class_name) {
            continue;
        }
        let generation = gw.metadata.generation.unwrap_or_default();
        let spec: GatewaySpecIr = match ir::convert(&gw.spec) {
            Ok(spec) => spec,
            Err(e) => {
                let key = (ns, name);
                let rejected = Some(("Invalid", format!("spec does not parse: {e}")));
                out.insert(
                    key.clone(),
                    GatewayState::new(key, generation, rejected, Vec::new()),
                );
                continue;
            }
        };
        let rejected = if spec.addresses.is_empty() {
            None
        } else {
            Some((
                "UnsupportedAddress",
                "spec.addresses is not supported; the address comes from the proxy Service"
                    .to_string(),
            ))
        };
        let mut listeners: Vec<ListenerState> = spec
            .listeners
            .iter()
            .map(|l| listener(ctx, &ns, l))
            .collect();
        frontend_tls::apply(&mut listeners, &spec, ctx, &config_maps, &ns);
        mark_conflicts(&mut listeners);
        let key = (ns, name);
        out.insert(
            key.clone(),
            GatewayState::new(key, generation, rejected, listeners),
        );
    }
    out
}

fn listener(ctx: &Ctx, gw_ns: &str, l: &ListenerIr) -> ListenerState {
    let protocol = match l.protocol.as_str() {
        "HTTP" => Some(ListenerProtocol::Http),
        "HTTPS" => Some(ListenerProtocol::Https),
        "TLS" => Some(ListenerProtocol::Tls),
        _ => None,
    };
    let mut st = ListenerState {
        ir: l.clone(),
        protocol,
        passthrough: false,
        kinds: Vec::new(),
        invalid: None,
        conflicted: None,
        refs_problem: None,
        certs: Vec::new(),
        client_cas: None,
        attached: BTreeSet::new(),
    };
    if protocol.is_none() {
        st.invalid = Some((
            "UnsupportedProtocol",
            format!("protocol {} is not supported", l.protocol),
        ));
        return st;
    }
    if st.port().is_none() {
        st.invalid = Some((
            "UnsupportedValue",
            format!("port {} is out of range", l.port),
        ));
    }
    if let Some(h) = &l.hostname
        && let Err(e) = check_hostname(h)
    {
        st.invalid = Some(("UnsupportedValue", e));
    }
    // Route kinds.
    let possible = kinds_for(protocol);
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        None => st.kinds = possible.to_vec(),
        Some(kinds) => {
            let mut bad = Vec::new();
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                match RouteKind::from_kind(&k.kind) {
                    Some(rk) if group == GATEWAY_GROUP && possible.contains(&rk) => {
                        if !st.kinds.contains(&rk) {
                            st.kinds.push(rk);
                        }
                    }
                    _ => bad.push(if group.is_empty() {
                        k.kind.clone()
                    } else {
                        format!("{}.{group}", k.kind)
                    }),
                }
            }
            if !bad.is_empty() {
                st.refs_problem = Some((
                    "InvalidRouteKinds",
                    format!(
                        "route kinds {} are not supported on a {} listener",
                        bad.join(", "),
                        l.protocol
                    ),
                ));
            }
        }
    }
    // TLS.
    let mode = l
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_deref())
        .unwrap_or("Terminate");
    match (protocol, mode) {
        (Some(ListenerProtocol::Http), _) => return st,
        (Some(ListenerProtocol::Tls), "Passthrough") => {
            st.passthrough = true;
            return st;
        }
        (Some(ListenerProtocol::Https), "Passthrough") => {
            st.invalid = Some((
                "UnsupportedValue",
                "an HTTPS listener terminates TLS; use protocol TLS for passthrough".to_string(),
            ));
            return st;
        }
        _ => {}
    }
    let refs = l
        .tls
        .as_ref()
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or(&[]);
    if refs.is_empty() {
        st.refs_problem.get_or_insert((
            "InvalidCertificateRef",
            "a TLS-terminating listener needs tls.certificateRefs".to_string(),
        ));
        return st;
    }
    for r in refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        let ns = r.namespace.as_deref().unwrap_or(gw_ns);
        let problem = if !group.is_empty() || kind != "Secret" {
            Some((
                "InvalidCertificateRef",
                format!("certificateRef {}: kind {kind} is not supported", r.name),
            ))
        } else if ns != gw_ns && !ctx.granted("Gateway", gw_ns, "", "Secret", ns, &r.name) {
            Some((
                "RefNotPermitted",
                format!(
                    "certificateRef {ns}/{}: no ReferenceGrant in {ns} allows Gateways of {gw_ns} to refer to it",
                    r.name
                ),
            ))
        } else {
            match ctx.secret(ns, &r.name) {
                None => Some((
                    "InvalidCertificateRef",
                    format!("Secret {ns}/{} not found", r.name),
                )),
                Some(sec) if !(sec.keys.contains("tls.crt") && sec.keys.contains("tls.key")) => {
                    Some((
                        "InvalidCertificateRef",
                        format!("Secret {ns}/{} has no tls.crt and tls.key", r.name),
                    ))
                }
                Some(sec) => sec.certificate_problem.as_ref().map(|p| {
                    (
                        "InvalidCertificateRef",
                        format!("Secret {ns}/{}: {p}", r.name),
                    )
                }),
            }
        };
        match problem {
            Some(p) => {
                st.refs_problem.get_or_insert(p);
            }
            None => st.certs.push((ns.to_string(), r.name.clone())),
        }
    }
    st
}

/// Listeners sharing a port must be distinct: a port cannot carry plaintext HTTP and TLS
/// (ProtocolConflict), and two listeners on a port cannot have the same hostname
/// (HostnameConflict). Every listener in a conflict is marked, none of them is programmed.
fn mark_conflicts(listeners: &mut [ListenerState]) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.protocol.is_some()
            && l.invalid.is_none()
            && let Some(p) = l.port()
        {
            by_port.entry(p).or_default().push(i);
        }
    }
    for idx in by_port.values() {
        let plain = idx
            .iter()
            .any(|&i| listeners[i].protocol == Some(ListenerProtocol::Http));
        let tls = idx
            .iter()
            .any(|&i| listeners[i].protocol != Some(ListenerProtocol::Http));
        if plain && tls {
            for &i in idx {
                listeners[i].conflicted = Some("ProtocolConflict");
            }
            continue;
        }
        let mut count: BTreeMap<Option<String>, usize> = BTreeMap::new();
        for &i in idx {
            *count.entry(listeners[i].ir.hostname.clone()).or_default() += 1;
        }
        for &i in idx {
            if count.get(&listeners[i].ir.hostname).copied().unwrap_or(0) > 1 {
                listeners[i].conflicted = Some("HostnameConflict");
            }
        }
    }
}

/// Writes listeners and certificates into the configs, then every status.
pub(crate) fn finish(gws: BTreeMap<ObjectKey, GatewayState>, t: &mut Translation) {
    for (key, mut gw) in gws {
        let g = gw.generation;
        let mut listeners = Vec::new();
        for l in &gw.listeners {
            let n = l.ir.name.as_str();
            let mut conds = Vec::new();
            match &l.invalid {
                Some((reason, msg)) => {
                    conds.push(Condition::new("Accepted", false, reason, msg.clone(), g))
                }
                None => conds.push(Condition::new(
                    "Accepted",
                    true,
                    "Accepted",
                    "listener accepted",
                    g,
                )),
            }
            let programmed = l.programmed() && gw.rejected.is_none();
            conds.push(if programmed {
                Condition::new("Programmed", true, "Programmed", "listener programmed", g)
            } else {
                Condition::new("Programmed", false, "Invalid", "listener not programmed", g)
            });
            conds.push(match &l.refs_problem {
                Some((reason, msg)) => {
                    Condition::new("ResolvedRefs", false, reason, msg.clone(), g)
                }
                None => Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "all references resolved",
                    g,
                ),
            });
            conds.push(match l.conflicted {
                Some(reason) => Condition::new(
                    "Conflicted",
                    true,
                    reason,
                    if reason == "ProtocolConflict" {
                        "another listener on this port uses an incompatible protocol"
                    } else {
                        "another listener on this port has the same hostname"
                    },
                    g,
                ),
                None => Condition::new("Conflicted", false, "NoConflicts", "no conflicts", g),
            });
            listeners.push(ListenerStatus {
                name: n.to_string(),
                supported_kinds: l
                    .kinds
                    .iter()
                    .map(|k| RouteGroupKind {
                        group: GATEWAY_GROUP.to_string(),
                        kind: k.as_str().to_string(),
                    })
                    .collect(),
                attached_routes: i32::try_from(l.attached.len()).unwrap_or(i32::MAX),
                conditions: conds,
            });
        }
        let any_programmed =
            gw.rejected.is_none() && gw.listeners.iter().any(ListenerState::programmed);
        let all_valid = gw
            .listeners
            .iter()
            .all(|l| l.invalid.is_none() && l.conflicted.is_none() && l.refs_problem.is_none());
        let mut conds = Vec::new();
        match &gw.rejected {
            Some((reason, msg)) => {
                conds.push(Condition::new("Accepted", false, reason, msg.clone(), g))
            }
            None if all_valid => conds.push(Condition::new(
                "Accepted",
                true,
                "Accepted",
                "gateway accepted",
                g,
            )),
            None => conds.push(Condition::new(
                "Accepted",
                any_programmed,
                "ListenersNotValid",
                "one or more listeners are not valid",
                g,
            )),
        }
        if let Some(err) = gw.config_error.take() {
            conds.push(Condition::new("Programmed", false, "Invalid", err, g));
        } else if any_programmed {
            conds.push(Condition::new(
                "Programmed",
                true,
                "Programmed",
                "proxy config generated",
                g,
            ));
            let mut needed = BTreeSet::new();
            let mut ca_files = BTreeSet::new();
            let mut insecure_ports = BTreeSet::new();
            for l in gw.listeners.iter().filter(|l| l.programmed()) {
                needed.extend(l.certs.iter().cloned());
                if let Some(cas) = &l.client_cas {
                    ca_files.extend(cas.files());
                    if cas.insecure_fallback {
                        insecure_ports.extend(l.port());
                    }
                }
            }
            if !insecure_ports.is_empty() {
                let ports: Vec<String> = insecure_ports.iter().map(u16::to_string).collect();
                conds.push(Condition::new(
                    "InsecureFrontendValidationMode",
                    true,
                    "ConfigurationChanged",
                    format!(
                        "client certificate validation on port {} runs AllowInsecureFallback: clients without a valid certificate are admitted",
                        ports.join(", ")
                    ),
                    g,
                ));
            }
            if !ca_files.is_empty() {
                t.llm_files.entry(key.clone()).or_default().extend(ca_files);
            }
            t.secrets_needed.insert(key.clone(), needed);
            t.proxies.insert(key.clone(), gw.config);
        } else {
            conds.push(Condition::new(
                "Programmed",
                false,
                "Invalid",
                "no listener can be programmed",
                g,
            ));
        }
        t.gateway_statuses.insert(
            key,
            GatewayStatus {
                addresses: Vec::new(),
                conditions: conds,
                listeners,
            },
        );
    }
}

/// The config listener of a programmed listener.
pub(crate) fn config_listener(l: &ListenerState) -> Option<Listener> {
    if !l.programmed() {
        return None;
    }
    let protocol = l.protocol?;
    let tls = match protocol {
        ListenerProtocol::Http => None,
        _ if l.passthrough => Some(ListenerTls {
            mode: TlsMode::Passthrough,
            certificates: Vec::new(),
            client_validation: None,
        }),
        _ => Some(ListenerTls {
            mode: TlsMode::Terminate,
            certificates: l.certs.iter().map(|(ns, n)| format!("{ns}/{n}")).collect(),
            client_validation: l.client_cas.as_ref().map(ClientCas::config),
        }),
    };
    Some(Listener {
        name: l.ir.name.clone(),
        address: "0.0.0.0".to_string(),
        port: l.port()?,
        protocol,
        hostname: l.ir.hostname.clone(),
        tls,
    })
}

/// Adds the programmed listeners and their certificates to the Gateway's config.
pub(crate) fn fill_listeners(gw: &mut GatewayState) {
    for l in &gw.listeners {
        if let Some(cl) = config_listener(l) {
            for (ns, n) in &l.certs {
                gw.config
                    .certificates
                    .insert(format!("{ns}/{n}"), certificate_files(ns, n));
            }
            gw.config.listeners.push(cl);
        }
    }
}

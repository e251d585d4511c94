//! Routes: attachment to listeners (parentRefs, allowedRoutes, hostnames), rules to config
//! rules, backendRefs to backends, and the route parent statuses.

use crate::backends::{Ctx, RefProblem};
use crate::gateways::{self, GatewayState};
use crate::ir::*;
use crate::status::*;
use crate::{GATEWAY_GROUP, ObjectKey, RouteKey, RouteKind, Snapshot, Translation};
use citoroute_config::hostname::intersect;
use citoroute_config::{self as cfg, GatewayDuration, HttpFilter};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use std::collections::{BTreeMap, BTreeSet};

enum Rules {
    Http(Vec<HttpRuleIr>),
    Grpc(Vec<GrpcRuleIr>),
    Tls(Vec<TlsRuleIr>),
}

struct RouteObj {
    key: RouteKey,
    generation: i64,
    created: Option<Time>,
    parent_refs: Vec<ParentRefIr>,
    hostnames: Vec<String>,
    rules: Rules,
}

fn route_obj<S: serde::Serialize, R: serde::de::DeserializeOwned>(
    kind: RouteKind,
    meta: &ObjectMeta,
    spec: &S,
    wrap: fn(Vec<R>) -> Rules,
) -> Option<RouteObj> {
    let spec: RouteSpecIr<R> = convert(spec).ok()?;
    Some(RouteObj {
        key: RouteKey {
            kind,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
        },
        generation: meta.generation.unwrap_or_default(),
        created: meta.creation_timestamp.clone(),
        parent_refs: spec.parent_refs,
        hostnames: spec.hostnames,
        rules: wrap(spec.rules),
    })
}

/// Every route, in tie-break order: oldest first, then by namespace/name.
fn collect(s: &Snapshot) -> Vec<RouteObj> {
    let mut out = Vec::new();
    for r in &s.http_routes {
        out.extend(route_obj(
            RouteKind::Http,
            &r.metadata,
            &r.spec,
            Rules::Http,
        ));
    }
    for r in &s.grpc_routes {
        out.extend(route_obj(
            RouteKind::Grpc,
            &r.metadata,
            &r.spec,
            Rules::Grpc,
        ));
    }
    for r in &s.tls_routes {
        out.extend(route_obj(RouteKind::Tls, &r.metadata, &r.spec, Rules::Tls));
    }
    out.sort_by(|a, b| {
        (&a.created, &a.key.namespace, &a.key.name, a.key.kind).cmp(&(
            &b.created,
            &b.key.namespace,
            &b.key.name,
            b.key.kind,
        ))
    });
    out
}

/// What went wrong while translating a route's rules.
#[derive(Default)]
struct Problems {
    /// The first unresolved reference (ResolvedRefs False).
    refs: Option<RefProblem>,
    /// A value we cannot implement (Accepted False, UnsupportedValue).
    unsupported: Option<String>,
}

impl Problems {
    fn refs(&mut self, p: RefProblem) {
        self.refs.get_or_insert(p);
    }
    fn unsupported(&mut self, msg: String) {
        self.unsupported.get_or_insert(msg);
    }
}

enum Body {
    Http(Vec<cfg::HttpRule>),
    Grpc(Vec<cfg::GrpcRule>),
    Tls(Vec<cfg::BackendRef>),
}

type Attached = Vec<(usize, Vec<String>)>;

pub(crate) fn attach_all(
    s: &Snapshot,
    ctx: &mut Ctx,
    gws: &mut BTreeMap<ObjectKey, GatewayState>,
    t: &mut Translation,
) {
    for gw in gws.values_mut() {
        gateways::fill_listeners(gw);
    }
    for route in collect(s) {
        let mut seen = BTreeSet::new();
        let mut entries: Vec<(ObjectKey, ParentReference, Result<Attached, RefProblem>)> =
            Vec::new();
        for pref in &route.parent_refs {
            let group = pref.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let kind = pref.kind.as_deref().unwrap_or("Gateway");
            if group != GATEWAY_GROUP || kind != "Gateway" {
                continue;
            }
            let gw_ns = pref.namespace.as_deref().unwrap_or(&route.key.namespace);
            let gw_key = (gw_ns.to_string(), pref.name.clone());
            let Some(gw) = gws.get_mut(&gw_key) else {
                continue;
            };
            if !seen.insert(pref.clone()) {
                continue;
            }
            let outcome = attach_one(ctx, &route, pref, gw);
            let echo = ParentReference {
                group: group.to_string(),
                kind: kind.to_string(),
                namespace: pref.namespace.clone(),
                name: pref.name.clone(),
                section_name: pref.section_name.clone(),
                port: pref.port,
            };
            entries.push((gw_key, echo, outcome));
        }
        if entries.is_empty() {
            continue;
        }
        let mut problems = Problems::default();
        let body = translate_rules(ctx, &route, &mut problems);
        let g = route.generation;
        let mut per_gw: BTreeMap<ObjectKey, Attached> = BTreeMap::new();
        let mut parents = Vec::new();
        for (gw_key, echo, outcome) in entries {
            let accepted = match (&outcome, &problems.unsupported) {
                (Err((reason, msg)), _) => {
                    Condition::new("Accepted", false, reason, msg.clone(), g)
                }
                (Ok(_), Some(msg)) => {
                    Condition::new("Accepted", false, "UnsupportedValue", msg.clone(), g)
                }
                (Ok(list), None) => {
                    let acc = per_gw.entry(gw_key.clone()).or_default();
                    for (i, hosts) in list {
                        if !acc.iter().any(|(j, _)| j == i) {
                            acc.push((*i, hosts.clone()));
                        }
                    }
                    Condition::new("Accepted", true, "Accepted", "route accepted", g)
                }
            };
            let resolved = match &problems.refs {
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
            };
            parents.push(RouteParentStatus {
                parent_ref: echo,
                controller_name: s.controller_name.clone(),
                conditions: vec![accepted, resolved],
            });
        }
        for (gw_key, mut list) in per_gw {
            let Some(gw) = gws.get_mut(&gw_key) else {
                continue;
            };
            list.sort_by_key(|(i, _)| *i);
            emit(gw, &route, &body, &list);
        }
        t.route_statuses
            .insert(route.key.clone(), RouteStatus { parents });
    }
    for gw in gws.values_mut() {
        check_config(ctx, gw, t);
    }
}

fn attach_one(
    ctx: &Ctx,
    route: &RouteObj,
    pref: &ParentRefIr,
    gw: &mut GatewayState,
) -> Result<Attached, RefProblem> {
    if let Some((_, msg)) = &gw.rejected {
        return Err((
            "NoMatchingParent",
            format!("Gateway is not accepted: {msg}"),
        ));
    }
    let candidates: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            pref.section_name.as_deref().is_none_or(|s| s == l.ir.name)
                && pref.port.is_none_or(|p| p == l.ir.port)
        })
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        let what = match (&pref.section_name, pref.port) {
            (Some(s), Some(p)) => format!("no listener {s} on port {p}"),
            (Some(s), None) => format!("no listener named {s}"),
            (None, Some(p)) => format!("no listener on port {p}"),
            (None, None) => "the Gateway has no listeners".to_string(),
        };
        return Err(("NoMatchingParent", what));
    }
    let gw_ns = gw.key.0.clone();
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| {
            let l = &gw.listeners[i];
            l.kinds.contains(&route.key.kind)
                && namespace_allowed(ctx, l, &gw_ns, &route.key.namespace)
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            "NotAllowedByListeners",
            format!(
                "no listener of the parent allows {}s from namespace {}",
                route.key.kind.as_str(),
                route.key.namespace
            ),
        ));
    }
    let mut matched = Vec::new();
    for i in allowed {
        let l = &mut gw.listeners[i];
        // A route whose hostnames miss the listener's is not Accepted there, so it does not
        // count in attachedRoutes (conformance: GatewayWithAttachedRoutes).
        if let Some(hosts) = intersect(l.ir.hostname.as_deref(), &route.hostnames) {
            l.attached.insert(route.key.clone());
            matched.push((i, hosts));
        }
    }
    if matched.is_empty() {
        return Err((
            "NoMatchingListenerHostname",
            "no hostname of the route matches a listener hostname".to_string(),
        ));
    }
    Ok(matched)
}

pub(crate) fn namespace_allowed(
    ctx: &Ctx,
    l: &gateways::ListenerState,
    gw_ns: &str,
    route_ns: &str,
) -> bool {
    let ns =
        l.ir.allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => ns
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|sel| sel.matches(&ctx.namespace_labels(route_ns))),
        "Same" => gw_ns == route_ns,
        _ => false,
    }
}

/// Adds a route to a Gateway's config: one config route per distinct hostname set, on the
/// programmed listeners it attached to.
fn emit(gw: &mut GatewayState, route: &RouteObj, body: &Body, list: &Attached) {
    let mut groups: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (i, hosts) in list {
        let l = &gw.listeners[*i];
        if !l.programmed() {
            continue;
        }
        match groups.iter_mut().find(|(h, _)| h == hosts) {
            Some((_, names)) => names.push(l.ir.name.clone()),
            None => groups.push((hosts.clone(), vec![l.ir.name.clone()])),
        }
    }
    let name = format!("{}/{}", route.key.namespace, route.key.name);
    for (hostnames, listeners) in groups {
        match body {
            Body::Http(rules) => {
                gw.config.http_routes.push(cfg::HttpRoute {
                    name: name.clone(),
                    listeners,
                    hostnames,
                    rules: rules.clone(),
                });
                gw.http_keys.push(route.key.clone());
            }
            Body::Grpc(rules) => {
                gw.config.grpc_routes.push(cfg::GrpcRoute {
                    name: name.clone(),
                    listeners,
                    hostnames,
                    rules: rules.clone(),
                });
                gw.grpc_keys.push(route.key.clone());
            }
            Body::Tls(backends) => {
                gw.config.tls_routes.push(cfg::TlsRoute {
                    name: name.clone(),
                    listeners,
                    hostnames,
                    backends: backends.clone(),
                });
                gw.tls_keys.push(route.key.clone());
            }
        }
    }
}

/// Copies the backends a config refers to, validates it, and drops the routes that make it
/// invalid (their parent status on this Gateway becomes Accepted False).
fn check_config(ctx: &Ctx, gw: &mut GatewayState, t: &mut Translation) {
    let mut names = BTreeSet::new();
    let refs = |rs: &[cfg::BackendRef], fs: &[HttpFilter], names: &mut BTreeSet<String>| {
        for f in fs.iter().chain(rs.iter().flat_map(|r| r.filters.iter())) {
            if let HttpFilter::RequestMirror(m) = f {
                names.insert(m.backend.clone());
            }
        }
        names.extend(rs.iter().filter_map(|r| r.backend.clone()));
    };
    for r in &gw.config.http_routes {
        for rule in &r.rules {
            refs(&rule.backends, &rule.filters, &mut names);
        }
    }
    for r in &gw.config.grpc_routes {
        for rule in &r.rules {
            refs(&rule.backends, &rule.filters, &mut names);
        }
    }
    for r in &gw.config.tls_routes {
        refs(&r.backends, &[], &mut names);
    }
    for n in names {
        if let Some(b) = ctx.backends.get(&n) {
            gw.config.backends.insert(n, b.clone());
        }
    }
    let Err(problems) = citoroute_config::validate::validate(&gw.config) else {
        return;
    };
    let mut bad: BTreeMap<RouteKey, Vec<String>> = BTreeMap::new();
    let mut other = Vec::new();
    for p in &problems.0 {
        let hit = [
            ("http_routes[", &gw.http_keys),
            ("grpc_routes[", &gw.grpc_keys),
            ("tls_routes[", &gw.tls_keys),
        ]
        .into_iter()
        .find_map(|(prefix, keys)| {
            let rest = p.path.strip_prefix(prefix)?;
            let idx: usize = rest.split(']').next()?.parse().ok()?;
            keys.get(idx).cloned()
        });
        match hit {
            Some(key) => {
                // `http_routes[3].rules[0]...` names the config; the user knows the route.
                let at = p
                    .path
                    .split_once("].")
                    .map_or(p.path.as_str(), |(_, rest)| rest);
                bad.entry(key)
                    .or_default()
                    .push(format!("{at}: {}", p.message));
            }
            None => other.push(p.to_string()),
        }
    }
    drop_bad(&mut gw.config.http_routes, &mut gw.http_keys, &bad);
    drop_bad(&mut gw.config.grpc_routes, &mut gw.grpc_keys, &bad);
    drop_bad(&mut gw.config.tls_routes, &mut gw.tls_keys, &bad);
    for (key, msgs) in &bad {
        if let Some(st) = t.route_statuses.get_mut(key) {
            for p in &mut st.parents {
                let ns = p.parent_ref.namespace.as_deref().unwrap_or(&key.namespace);
                if (ns, p.parent_ref.name.as_str()) != (gw.key.0.as_str(), gw.key.1.as_str()) {
                    continue;
                }
                if let Some(c) = p.conditions.iter_mut().find(|c| c.type_ == "Accepted") {
                    c.status = "False".to_string();
                    c.reason = "UnsupportedValue".to_string();
                    c.message = msgs.join("; ");
                }
            }
        }
    }
    if !other.is_empty() {
        gw.config_error = Some(format!("generated config is invalid: {}", other.join("; ")));
    } else if let Err(p) = citoroute_config::validate::validate(&gw.config) {
        gw.config_error = Some(format!("generated config is invalid: {p}"));
    }
}

/// Removes the config routes (and their keys, a parallel list) of the routes in `bad`.
fn drop_bad<T>(
    routes: &mut Vec<T>,
    keys: &mut Vec<RouteKey>,
    bad: &BTreeMap<RouteKey, Vec<String>>,
) {
    let mut keep = keys.iter().map(|k| !bad.contains_key(k));
    routes.retain(|_| keep.next().unwrap_or(true));
    keys.retain(|k| !bad.contains_key(k));
}

fn translate_rules(ctx: &mut Ctx, route: &RouteObj, p: &mut Problems) -> Body {
    let kind = route.key.kind.as_str();
    let ns = route.key.namespace.as_str();
    match &route.rules {
        Rules::Http(rules) => Body::Http(
            rules
                .iter()
                .map(|r| http_rule(ctx, kind, ns, r, p))
                .collect(),
        ),
        Rules::Grpc(rules) => Body::Grpc(
            rules
                .iter()
                .map(|r| grpc_rule(ctx, kind, ns, r, p))
                .collect(),
        ),
        Rules::Tls(rules) => Body::Tls(
            rules
                .iter()
                .flat_map(|r| r.backend_refs.iter())
                .map(|b| backend_ref(ctx, kind, ns, b, false, p).0)
                .collect(),
        ),
    }
}

fn weight(w: Option<i32>) -> u32 {
    w.map_or(1, |w| u32::try_from(w).unwrap_or(0))
}

/// A backendRef, and whether its own filters asked for an error response.
fn backend_ref(
    ctx: &mut Ctx,
    kind: &str,
    ns: &str,
    b: &BackendRefIr,
    grpc: bool,
    p: &mut Problems,
) -> (cfg::BackendRef, bool) {
    let backend = match ctx.resolve(kind, ns, b, grpc) {
        Ok(name) => Some(name),
        Err(e) => {
            p.refs(e);
            None
        }
    };
    let (filters, fail) = filters(ctx, kind, ns, &b.filters, grpc, p);
    (
        cfg::BackendRef {
            backend,
            weight: weight(b.weight),
            filters,
        },
        fail,
    )
}

/// Converts filters; the flag says a filter could not be honoured, so the rule must answer
/// with an error instead of skipping it.
fn filters(
    ctx: &mut Ctx,
    kind: &str,
    ns: &str,
    fs: &[FilterIr],
    grpc: bool,
    p: &mut Problems,
) -> (Vec<HttpFilter>, bool) {
    let mut out = Vec::new();
    let mut fail = false;
    for f in fs {
        let converted = match f.kind.as_str() {
            "RequestHeaderModifier" => f
                .request_header_modifier
                .as_ref()
                .map(|m| HttpFilter::RequestHeaderModifier(header_mod(m))),
            "ResponseHeaderModifier" => f
                .response_header_modifier
                .as_ref()
                .map(|m| HttpFilter::ResponseHeaderModifier(header_mod(m))),
            "RequestRedirect" if !grpc => f.request_redirect.as_ref().map(|r| {
                HttpFilter::RequestRedirect(cfg::Redirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    path: r.path.as_ref().and_then(path_mod),
                    port: r.port.and_then(|p| u16::try_from(p).ok()),
                    status_code: r.status_code.and_then(|c| u16::try_from(c).ok()),
                })
            }),
            "URLRewrite" if !grpc => f.url_rewrite.as_ref().map(|r| {
                HttpFilter::UrlRewrite(cfg::UrlRewrite {
                    hostname: r.hostname.clone(),
                    path: r.path.as_ref().and_then(path_mod),
                })
            }),
            "RequestMirror" => match &f.request_mirror {
                None => None,
                Some(m) => match ctx.resolve(kind, ns, &m.backend_ref, grpc) {
                    Ok(backend) => {
                        let percent = match (&m.fraction, m.percent) {
                            (Some(fr), _) => {
                                let d = fr.denominator.unwrap_or(100);
                                (d > 0).then(|| f64::from(fr.numerator) * 100.0 / f64::from(d))
                            }
                            (None, Some(pc)) => Some(f64::from(pc)),
                            (None, None) => None,
                        };
                        Some(HttpFilter::RequestMirror(cfg::Mirror { backend, percent }))
                    }
                    Err(e) => {
                        // An unresolved mirror only loses the copy; the request still flows.
                        p.refs(e);
                        continue;
                    }
                },
            },
            "CORS" if !grpc => f.cors.as_ref().map(|c| {
                HttpFilter::Cors(cfg::Cors {
                    allow_origins: c.allow_origins.clone(),
                    allow_methods: c.allow_methods.clone(),
                    allow_headers: c.allow_headers.clone(),
                    expose_headers: c.expose_headers.clone(),
                    max_age: c.max_age.and_then(|a| u32::try_from(a).ok()),
                    allow_credentials: c.allow_credentials.unwrap_or(false),
                })
            }),
            "ExtensionRef" => {
                let what = f
                    .extension_ref
                    .as_ref()
                    .map(|e| format!("{}.{}", e.kind, e.group.as_deref().unwrap_or("")))
                    .unwrap_or_default();
                p.refs((
                    "InvalidKind",
                    format!("ExtensionRef filter {what} is not supported; the rule answers 500"),
                ));
                fail = true;
                continue;
            }
            other => {
                p.unsupported(format!("filter type {other} is not supported"));
                fail = true;
                continue;
            }
        };
        match converted {
            Some(c) => out.push(c),
            None => p.unsupported(format!("filter {} lacks its configuration", f.kind)),
        }
    }
    (out, fail)
}

fn header_mod(m: &HeaderModIr) -> cfg::HeaderModifier {
    let hs = |v: &[NameValueIr]| {
        v.iter()
            .map(|h| cfg::Header {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    cfg::HeaderModifier {
        set: hs(&m.set),
        add: hs(&m.add),
        remove: m.remove.clone(),
    }
}

fn path_mod(p: &PathModIr) -> Option<cfg::PathModifier> {
    match p.kind.as_str() {
        "ReplaceFullPath" => Some(cfg::PathModifier::ReplaceFullPath(
            p.replace_full_path.clone()?,
        )),
        "ReplacePrefixMatch" => Some(cfg::PathModifier::ReplacePrefixMatch(
            p.replace_prefix_match.clone()?,
        )),
        _ => None,
    }
}

fn value_matches(v: &[ValueMatchIr], p: &mut Problems) -> Vec<cfg::ValueMatch> {
    v.iter()
        .map(|m| cfg::ValueMatch {
            kind: match m.kind.as_deref().unwrap_or("Exact") {
                "Exact" => cfg::ValueMatchType::Exact,
                "RegularExpression" => cfg::ValueMatchType::RegularExpression,
                other => {
                    p.unsupported(format!("match type {other} is not supported"));
                    cfg::ValueMatchType::Exact
                }
            },
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

fn duration(s: &Option<String>, what: &str, p: &mut Problems) -> Option<GatewayDuration> {
    let s = s.as_ref()?;
    match s.parse() {
        Ok(d) => Some(d),
        Err(e) => {
            p.unsupported(format!("{what}: {e}"));
            None
        }
    }
}

fn http_rule(
    ctx: &mut Ctx,
    kind: &str,
    ns: &str,
    r: &HttpRuleIr,
    p: &mut Problems,
) -> cfg::HttpRule {
    let matches = r
        .matches
        .iter()
        .map(|m| cfg::HttpMatch {
            path: m.path.as_ref().map(|path| cfg::PathMatch {
                kind: match path.kind.as_deref().unwrap_or("PathPrefix") {
                    "Exact" => cfg::PathMatchType::Exact,
                    "PathPrefix" => cfg::PathMatchType::PathPrefix,
                    "RegularExpression" => cfg::PathMatchType::RegularExpression,
                    other => {
                        p.unsupported(format!("path match type {other} is not supported"));
                        cfg::PathMatchType::PathPrefix
                    }
                },
                value: path.value.clone().unwrap_or_else(|| "/".to_string()),
            }),
            headers: value_matches(&m.headers, p),
            query: value_matches(&m.query_params, p),
            method: m.method.clone(),
        })
        .collect();
    let (filters, mut fail) = filters(ctx, kind, ns, &r.filters, false, p);
    let mut backends = Vec::new();
    for b in &r.backend_refs {
        let (br, f) = backend_ref(ctx, kind, ns, b, false, p);
        fail |= f;
        backends.push(br);
    }
    let timeouts = r.timeouts.as_ref().map(|t| cfg::Timeouts {
        request: duration(&t.request, "timeouts.request", p),
        backend_request: duration(&t.backend_request, "timeouts.backendRequest", p),
    });
    let retry = r.retry.as_ref().map(|rt| cfg::Retry {
        attempts: rt.attempts.map_or(0, |a| u32::try_from(a).unwrap_or(0)),
        codes: rt
            .codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        backoff: duration(&rt.backoff, "retry.backoff", p),
    });
    let mut rule = cfg::HttpRule {
        name: r.name.clone(),
        matches,
        filters,
        backends,
        timeouts,
        retry,
    };
    if fail {
        // A filter we cannot honour must not be skipped: the rule answers 500.
        rule.filters.clear();
        rule.backends.clear();
    }
    rule
}

fn grpc_rule(
    ctx: &mut Ctx,
    kind: &str,
    ns: &str,
    r: &GrpcRuleIr,
    p: &mut Problems,
) -> cfg::GrpcRule {
    let matches = r
        .matches
        .iter()
        .map(|m| cfg::GrpcMatch {
            method: m.method.as_ref().map(|mm| cfg::GrpcMethodMatch {
                kind: match mm.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => cfg::ValueMatchType::Exact,
                    "RegularExpression" => cfg::ValueMatchType::RegularExpression,
                    other => {
                        p.unsupported(format!("method match type {other} is not supported"));
                        cfg::ValueMatchType::Exact
                    }
                },
                service: mm.service.clone(),
                method: mm.method.clone(),
            }),
            headers: value_matches(&m.headers, p),
        })
        .collect();
    let (filters, mut fail) = filters(ctx, kind, ns, &r.filters, true, p);
    let mut backends = Vec::new();
    for b in &r.backend_refs {
        let (br, f) = backend_ref(ctx, kind, ns, b, true, p);
        fail |= f;
        backends.push(br);
    }
    let mut rule = cfg::GrpcRule {
        name: r.name.clone(),
        matches,
        filters,
        backends,
    };
    if fail {
        rule.filters.clear();
        rule.backends.clear();
    }
    rule
}

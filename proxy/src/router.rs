//! The compiled routing table: built once per config, read lock-free per request.
//!
//! Lookup is port → listener (most specific hostname) → host bucket (exact host, then
//! wildcards longest first, then routes without hostnames) → path index (exact map, regex
//! list, prefix map probed at each `/` boundary of the request path). Within one index entry
//! the candidates are pre-sorted by the Gateway API precedence rules, so the first candidate
//! whose method, headers and query match wins.

use crate::backend::{BackendSet, BreakerRegistry};
use crate::filters::{CompiledFilters, compile_filters};
use crate::metrics::{Metrics, RequestMetrics};
use citoroute_config::{
    self as cfg, BackendProtocol, GrpcRoute, HttpMatch, HttpRoute, ListenerProtocol, PathMatchType,
    ProxyConfig, ValueMatchType, hostname,
};
use citoroute_core::WeightedPicker;
use regex::Regex;
use std::cmp::Reverse;
use std::collections::HashMap;

/// The maps a request is looked up in: foldhash instead of SipHash. Their keys come from the
/// config, so a client can only look up, never fill them, and hash flooding does not apply.
type LookupMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Duration;

/// Why a config could not be compiled (beyond what validation catches: files, keys).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{0}")]
    Invalid(String),
}

/// Everything a request needs, swapped as one unit on reload.
#[derive(Debug)]
pub struct Router {
    pub generation: u64,
    ports: LookupMap<u16, PortTable>,
    /// Ports with TLS-protocol listeners: routed by SNI before any HTTP is read.
    tls_ports: HashMap<u16, Vec<TlsListenerTable>>,
    pub backends: HashMap<String, Arc<BackendSet>>,
    pub config: Arc<ProxyConfig>,
}

/// A listener on a port that carries TLS listeners, as the SNI router sees it.
#[derive(Debug)]
struct TlsListenerTable {
    hostname: Option<String>,
    target: TlsListenerKind,
}

#[derive(Debug)]
enum TlsListenerKind {
    /// An HTTPS listener sharing the port: terminate, then serve HTTP.
    Https,
    /// A TLS listener with its TLS routes by hostname.
    Tls {
        terminate: bool,
        exact: HashMap<String, Arc<TlsRouteTarget>>,
        wildcard: Vec<(String, Arc<TlsRouteTarget>)>,
        any: Option<Arc<TlsRouteTarget>>,
    },
}

/// The weighted backends of one TLS route.
#[derive(Debug)]
pub struct TlsRouteTarget {
    pub route: Arc<str>,
    pub backends: Vec<RuleBackend>,
    pub picker: Option<WeightedPicker>,
}

/// Where a TLS connection goes, decided from its SNI.
#[derive(Debug, Clone)]
pub enum TlsDecision {
    /// Terminate and serve as HTTPS.
    Http,
    /// Forward the raw TLS bytes.
    Passthrough(Arc<TlsRouteTarget>),
    /// Terminate, then forward the plaintext.
    Terminate(Arc<TlsRouteTarget>),
    /// No listener or route takes this name: close the connection.
    Reject,
}

#[derive(Debug, Default)]
struct PortTable {
    /// Listeners sorted most specific hostname first; `None` hostname last.
    listeners: Vec<ListenerTable>,
}

impl PortTable {
    /// The listener serving `name`: the most specific hostname covering it.
    fn listener_for(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|l| {
            l.hostname
                .as_deref()
                .is_none_or(|h| hostname::covers(h, name))
        })
    }
}

#[derive(Debug)]
struct ListenerTable {
    hostname: Option<String>,
    hosts: HostIndex,
}

#[derive(Debug, Default)]
struct HostIndex {
    exact: LookupMap<String, PathIndex>,
    /// (`.suffix` including the dot, index), longest suffix first.
    wildcard: Vec<(String, PathIndex)>,
    any: Option<PathIndex>,
}

#[derive(Debug, Default)]
struct PathIndex {
    exact: LookupMap<String, Vec<Candidate>>,
    prefix: LookupMap<String, Vec<Candidate>>,
    regex: Vec<(Regex, Candidate)>,
}

/// One match of one rule, with what is needed to finish matching and to rank it.
#[derive(Debug, Clone)]
struct Candidate {
    rank: Rank,
    method: Option<http::Method>,
    headers: Arc<[ValueMatcher]>,
    query: Arc<[ValueMatcher]>,
    /// The matched prefix, for `ReplacePrefixMatch`.
    prefix: Option<Arc<str>>,
    rule: Arc<Rule>,
}

/// Precedence within one path index entry: method, then more header matches, then more query
/// matches, then route order, then rule order (all compared so that smaller wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    route: usize,
    rule: usize,
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String, String),
    Regex(String, Regex),
}

impl ValueMatcher {
    fn compile(m: &cfg::ValueMatch, lowercase_name: bool) -> Result<Self, CompileError> {
        let name = if lowercase_name {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        Ok(match m.kind {
            ValueMatchType::Exact => ValueMatcher::Exact(name, m.value.clone()),
            ValueMatchType::RegularExpression => {
                ValueMatcher::Regex(name, full_match_regex(&m.value)?)
            }
        })
    }
    fn name(&self) -> &str {
        match self {
            ValueMatcher::Exact(n, _) | ValueMatcher::Regex(n, _) => n,
        }
    }
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Exact(_, v) => v == value,
            ValueMatcher::Regex(_, re) => re.is_match(value),
        }
    }
}

/// Filters [`crate::h1_proxy`] applies itself: header modifiers and URL rewrites.
fn plain_filters(f: &CompiledFilters) -> bool {
    f.redirect.is_none() && f.mirrors.is_empty() && f.cors.is_none()
}

fn full_match_regex(re: &str) -> Result<Regex, CompileError> {
    Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| CompileError::Invalid(format!("regular expression {re:?}: {e}")))
}

/// A compiled route rule: what to do once it matched.
#[derive(Debug)]
pub struct Rule {
    pub route: Arc<str>,
    pub rule_name: Option<Arc<str>>,
    pub listener: Arc<str>,
    pub filters: CompiledFilters,
    pub backends: Vec<RuleBackend>,
    pub picker: Option<WeightedPicker>,
    pub request_timeout: Option<Duration>,
    pub backend_timeout: Option<Duration>,
    pub retry_attempts: u32,
    pub retry_codes: Vec<u16>,
    pub retry_backoff: Option<Duration>,
    pub grpc: bool,
    /// Set for LLM routes: the request is served by [`crate::llm::serve`].
    pub llm: Option<Arc<crate::llm::LlmRoute>>,
    /// The rule's request metrics, resolved at compile time.
    pub metrics: RuleMetrics,
    /// Whether [`crate::h1_proxy`] may serve it: plain HTTP/1.1 backends and no filter beyond
    /// header modifiers and URL rewrites (everything else goes through Pingora's path).
    pub plain_h1: bool,
}

/// A rule's request metrics handles: one per backend (in `backends` order) and one for
/// requests answered before a backend was chosen (redirects, CORS preflights, LLM routes).
#[derive(Debug)]
pub struct RuleMetrics {
    no_backend: RequestMetrics,
    backends: Box<[RequestMetrics]>,
}

impl RuleMetrics {
    fn new(metrics: &Metrics, route: &str, backends: &[RuleBackend]) -> RuleMetrics {
        RuleMetrics {
            no_backend: RequestMetrics::new(metrics, route, ""),
            backends: backends
                .iter()
                .map(|b| RequestMetrics::new(metrics, route, &b.name))
                .collect(),
        }
    }
}

impl Rule {
    /// The metrics handles for a request of this rule sent to backend `backend` (an index into
    /// `backends`), or answered without one.
    pub fn request_metrics(&self, backend: Option<usize>) -> &RequestMetrics {
        backend
            .and_then(|i| self.metrics.backends.get(i))
            .unwrap_or(&self.metrics.no_backend)
    }
}

/// One weighted backend of a rule; `set` is None when the reference was unresolved.
#[derive(Debug)]
pub struct RuleBackend {
    pub name: Arc<str>,
    pub set: Option<Arc<BackendSet>>,
    pub filters: CompiledFilters,
}

/// The outcome of routing one request.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub rule: Arc<Rule>,
    pub prefix: Option<Arc<str>>,
}

/// What the router needs from a request.
pub struct RequestView<'a> {
    pub port: u16,
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a http::Method,
    pub headers: HeaderView<'a>,
}

/// A request's headers as the router reads them: Pingora's parsed map, or the `httparse`
/// slice of [`crate::h1_proxy`], which routes without building a map.
#[derive(Clone, Copy)]
pub enum HeaderView<'a> {
    Map(&'a http::HeaderMap),
    Raw(&'a [httparse::Header<'a>]),
}

impl<'a> HeaderView<'a> {
    /// The values of header `name` (lowercase) in order, skipping values that are not visible
    /// ASCII in both forms alike (as `HeaderValue::to_str` does).
    pub fn values(self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let (map, raw) = match self {
            HeaderView::Map(m) => (Some(m.get_all(name).iter()), None),
            HeaderView::Raw(r) => (None, Some(r.iter())),
        };
        let from_map = map.into_iter().flatten().filter_map(|v| v.to_str().ok());
        let from_raw = raw
            .into_iter()
            .flatten()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| visible_ascii(h.value));
        from_map.chain(from_raw)
    }

    /// The first value of header `name` (lowercase), as bytes.
    pub fn first(self, name: &str) -> Option<&'a [u8]> {
        match self {
            HeaderView::Map(m) => m.get(name).map(|v| v.as_bytes()),
            HeaderView::Raw(r) => r
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value),
        }
    }

    /// The value of cookie `name` in the `Cookie` headers.
    pub fn cookie(self, name: &'a str) -> Option<&'a str> {
        self.values("cookie")
            .flat_map(|v| v.split(';'))
            .find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then_some(v)
            })
    }
}

fn visible_ascii(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|&b| (b >= 32 && b != 127) || b == b'\t')
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

impl Router {
    /// Compiles a validated config. `breakers` keeps endpoint breaker state across reloads;
    /// each rule resolves its request metrics handles in `metrics`.
    pub fn compile(
        config: Arc<ProxyConfig>,
        generation: u64,
        breakers: &BreakerRegistry,
        metrics: &Metrics,
    ) -> Result<Router, CompileError> {
        let mut backends = HashMap::new();
        for (name, b) in &config.backends {
            backends.insert(
                name.clone(),
                Arc::new(BackendSet::compile(name, b, &config.runtime, breakers)?),
            );
        }
        let mut builder = Builder {
            listeners: HashMap::new(),
            backends: &backends,
            metrics,
        };
        for l in &config.listeners {
            builder.listeners.insert(
                l.name.clone(),
                (
                    l.port,
                    l.protocol,
                    l.hostname.clone(),
                    HostIndexBuilder::default(),
                ),
            );
        }
        for (order, route) in config.http_routes.iter().enumerate() {
            builder.add_http_route(order, route)?;
        }
        let offset = config.http_routes.len();
        for (order, route) in config.grpc_routes.iter().enumerate() {
            builder.add_grpc_route(offset + order, route)?;
        }
        let offset = offset + config.grpc_routes.len();
        if !config.llm_routes.is_empty() {
            let (shared, llm_backends) = crate::llm::compile(&config)?;
            for (order, route) in config.llm_routes.iter().enumerate() {
                let compiled = Arc::new(crate::llm::compile_route(route, &shared, &llm_backends)?);
                builder.add_llm_route(offset + order, route, &compiled)?;
            }
        }
        let tls_ports = compile_tls_ports(&config, &backends)?;
        let mut ports: LookupMap<u16, PortTable> = LookupMap::default();
        for (_, (port, protocol, host, hosts)) in builder.listeners {
            if protocol == ListenerProtocol::Tls {
                continue;
            }
            ports
                .entry(port)
                .or_default()
                .listeners
                .push(ListenerTable {
                    hostname: host,
                    hosts: hosts.finish(),
                });
        }
        for table in ports.values_mut() {
            table
                .listeners
                .sort_by_key(|l| hostname_specificity(l.hostname.as_deref()));
        }
        Ok(Router {
            generation,
            ports,
            tls_ports,
            backends,
            config,
        })
    }

    /// Routes a request; `None` means no route matches (404).
    pub fn route(&self, req: &RequestView<'_>) -> Option<RouteMatch> {
        let port = self.ports.get(&req.port)?;
        let host = strip_port(req.host);
        let listener = &port.listeners[port.listener_for(host)?];
        listener.hosts.route(host, req)
    }

    /// Whether a request for `host` on a TLS connection whose SNI was `sni` is misdirected:
    /// both name listeners of this port, and not the same one (the connection's certificate
    /// was chosen for another listener, e.g. an HTTP/2 connection reused for another name).
    pub fn misdirected(&self, port: u16, sni: &str, host: &str) -> bool {
        let Some(table) = self.ports.get(&port) else {
            return false;
        };
        if table.listeners.len() < 2 {
            return false;
        }
        match (
            table.listener_for(sni),
            table.listener_for(strip_port(host)),
        ) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }

    /// Whether any listener is configured on this port (for telling 404 from misdirected).
    pub fn serves_port(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }

    /// Routes a TLS connection on a port with TLS listeners by its SNI.
    pub fn route_tls(&self, port: u16, sni: Option<&str>) -> TlsDecision {
        let Some(listeners) = self.tls_ports.get(&port) else {
            return TlsDecision::Reject;
        };
        let host = sni.unwrap_or("");
        let Some(l) = listeners.iter().find(|l| {
            l.hostname
                .as_deref()
                .is_none_or(|h| hostname::covers(h, host))
        }) else {
            return TlsDecision::Reject;
        };
        match &l.target {
            TlsListenerKind::Https => TlsDecision::Http,
            TlsListenerKind::Tls {
                terminate,
                exact,
                wildcard,
                any,
            } => {
                let host = host.to_ascii_lowercase();
                let target = exact
                    .get(&host)
                    .or_else(|| {
                        wildcard
                            .iter()
                            .find(|(suffix, _)| {
                                host.len() > suffix.len() && host.ends_with(suffix.as_str())
                            })
                            .map(|(_, t)| t)
                    })
                    .or(any.as_ref());
                match (target, terminate) {
                    (Some(t), false) => TlsDecision::Passthrough(t.clone()),
                    (Some(t), true) => TlsDecision::Terminate(t.clone()),
                    (None, _) => TlsDecision::Reject,
                }
            }
        }
    }

    /// Ports that need the SNI router (they carry at least one TLS listener).
    pub fn tls_router_ports(cfg: &ProxyConfig) -> std::collections::BTreeSet<u16> {
        cfg.listeners
            .iter()
            .filter(|l| l.protocol == ListenerProtocol::Tls)
            .map(|l| l.port)
            .collect()
    }
}

fn compile_tls_ports(
    config: &ProxyConfig,
    backends: &HashMap<String, Arc<BackendSet>>,
) -> Result<HashMap<u16, Vec<TlsListenerTable>>, CompileError> {
    let sni_ports = Router::tls_router_ports(config);
    let mut out: HashMap<u16, Vec<TlsListenerTable>> = HashMap::new();
    for l in config
        .listeners
        .iter()
        .filter(|l| sni_ports.contains(&l.port))
    {
        let target = match l.protocol {
            ListenerProtocol::Https => TlsListenerKind::Https,
            ListenerProtocol::Http => continue,
            ListenerProtocol::Tls => {
                let mut exact = HashMap::new();
                let mut wildcard = Vec::new();
                let mut any = None;
                for route in config
                    .tls_routes
                    .iter()
                    .filter(|r| r.listeners.contains(&l.name))
                {
                    let Some(hosts) = hostname::intersect(l.hostname.as_deref(), &route.hostnames)
                    else {
                        continue;
                    };
                    let (rule_backends, picker) = rule_backends(backends, &route.backends)?;
                    let target = Arc::new(TlsRouteTarget {
                        route: route.name.as_str().into(),
                        backends: rule_backends,
                        picker,
                    });
                    if hosts.is_empty() {
                        any.get_or_insert(target);
                        continue;
                    }
                    // Earlier routes win a hostname both claim.
                    for h in hosts {
                        let h = h.to_ascii_lowercase();
                        match h.strip_prefix('*') {
                            Some(suffix) => {
                                if !wildcard.iter().any(|(s, _): &(String, _)| s == suffix) {
                                    wildcard.push((suffix.to_string(), target.clone()));
                                }
                            }
                            None => {
                                exact.entry(h).or_insert_with(|| target.clone());
                            }
                        }
                    }
                }
                wildcard.sort_by_key(|(s, _)| Reverse(s.len()));
                let terminate = l
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.mode == citoroute_config::TlsMode::Terminate);
                TlsListenerKind::Tls {
                    terminate,
                    exact,
                    wildcard,
                    any,
                }
            }
        };
        out.entry(l.port).or_default().push(TlsListenerTable {
            hostname: l.hostname.clone(),
            target,
        });
    }
    for list in out.values_mut() {
        list.sort_by_key(|l| hostname_specificity(l.hostname.as_deref()));
    }
    Ok(out)
}

/// Sort key putting exact hostnames first, then longer wildcards, then no hostname.
fn hostname_specificity(h: Option<&str>) -> (u8, Reverse<usize>) {
    match h {
        Some(h) if !h.starts_with('*') => (0, Reverse(h.len())),
        Some(h) => (1, Reverse(h.len())),
        None => (2, Reverse(0)),
    }
}

/// Drops a `:port` suffix (keeping IPv6 literals intact) so `Host: a.com:8080` routes as `a.com`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

impl HostIndex {
    fn route(&self, host: &str, req: &RequestView<'_>) -> Option<RouteMatch> {
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(idx) = self.exact.get(host)
            && let Some(m) = idx.route(req)
        {
            return Some(m);
        }
        for (suffix, idx) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(m) = idx.route(req)
            {
                return Some(m);
            }
        }
        self.any.as_ref().and_then(|idx| idx.route(req))
    }
}

impl PathIndex {
    fn route(&self, req: &RequestView<'_>) -> Option<RouteMatch> {
        let path = req.path;
        if let Some(cands) = self.exact.get(path)
            && let Some(m) = first_match(cands, req)
        {
            return Some(m);
        }
        for (re, cand) in &self.regex {
            if re.is_match(path) && cand.matches_rest(req) {
                return Some(cand.to_match());
            }
        }
        // Probe each element boundary, longest first: "/a/b/c" → "/a/b/c", "/a/b", "/a", "/".
        if !self.prefix.is_empty() {
            let trimmed = if path.len() > 1 {
                path.trim_end_matches('/')
            } else {
                path
            };
            let mut end = trimmed.len();
            loop {
                let probe = if end == 0 { "/" } else { &trimmed[..end] };
                if let Some(cands) = self.prefix.get(probe)
                    && let Some(m) = first_match(cands, req)
                {
                    return Some(m);
                }
                if end == 0 {
                    break;
                }
                end = trimmed[..end].rfind('/').unwrap_or(0);
            }
        }
        None
    }
}

fn first_match(cands: &[Candidate], req: &RequestView<'_>) -> Option<RouteMatch> {
    cands
        .iter()
        .find(|c| c.matches_rest(req))
        .map(Candidate::to_match)
}

impl Candidate {
    fn matches_rest(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method
            && m != req.method
        {
            return false;
        }
        for h in self.headers.iter() {
            // Repeated headers are matched on their values joined by ",", as the spec allows.
            let mut values = req.headers.values(h.name());
            let Some(first) = values.next() else {
                return false;
            };
            let joined;
            let value = match values.next() {
                None => first,
                Some(second) => {
                    joined = std::iter::once(first)
                        .chain(std::iter::once(second))
                        .chain(values)
                        .collect::<Vec<_>>()
                        .join(",");
                    joined.as_str()
                }
            };
            if !h.matches(value) {
                return false;
            }
        }
        if !self.query.is_empty() {
            let Some(q) = req.query else { return false };
            for m in self.query.iter() {
                // The first occurrence of a parameter counts, as the spec recommends.
                let found = q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == m.name()).then_some(v)
                });
                match found {
                    Some(v) if m.matches(v) => {}
                    _ => return false,
                }
            }
        }
        true
    }

    fn to_match(&self) -> RouteMatch {
        RouteMatch {
            rule: self.rule.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

struct Builder<'a> {
    listeners: HashMap<String, (u16, ListenerProtocol, Option<String>, HostIndexBuilder)>,
    backends: &'a HashMap<String, Arc<BackendSet>>,
    metrics: &'a Metrics,
}

#[derive(Default)]
struct HostIndexBuilder {
    buckets: HashMap<Option<String>, PathIndexBuilder>,
}

#[derive(Default)]
struct PathIndexBuilder {
    exact: LookupMap<String, Vec<Candidate>>,
    prefix: LookupMap<String, Vec<Candidate>>,
    regex: Vec<(Regex, Candidate)>,
}

impl HostIndexBuilder {
    fn finish(self) -> HostIndex {
        let mut idx = HostIndex::default();
        for (host, b) in self.buckets {
            let p = b.finish();
            match host {
                None => idx.any = Some(p),
                Some(h) => match h.strip_prefix('*') {
                    Some(suffix) => idx.wildcard.push((suffix.to_string(), p)),
                    None => {
                        idx.exact.insert(h, p);
                    }
                },
            }
        }
        idx.wildcard.sort_by_key(|(s, _)| Reverse(s.len()));
        idx
    }
}

impl PathIndexBuilder {
    fn finish(mut self) -> PathIndex {
        for v in self.exact.values_mut().chain(self.prefix.values_mut()) {
            v.sort_by_key(|c| c.rank);
        }
        self.regex.sort_by_key(|(_, c)| c.rank);
        PathIndex {
            exact: self.exact,
            prefix: self.prefix,
            regex: self.regex,
        }
    }
}

/// The normalized key of a `PathPrefix` value: trailing `/` ignored, `/` itself kept.
fn prefix_key(value: &str) -> String {
    let t = value.trim_end_matches('/');
    if t.is_empty() {
        "/".to_string()
    } else {
        t.to_string()
    }
}

enum PathKind {
    Exact(String),
    Prefix(String),
    Regex(String),
}

fn rule_backends(
    backends: &HashMap<String, Arc<BackendSet>>,
    refs: &[cfg::BackendRef],
) -> Result<(Vec<RuleBackend>, Option<WeightedPicker>), CompileError> {
    let mut out = Vec::with_capacity(refs.len());
    let mut weights = Vec::with_capacity(refs.len());
    for r in refs {
        let set = match &r.backend {
            Some(name) => Some(
                backends
                    .get(name)
                    .cloned()
                    .ok_or_else(|| CompileError::Invalid(format!("no backend named {name:?}")))?,
            ),
            None => None,
        };
        out.push(RuleBackend {
            name: r.backend.as_deref().unwrap_or("(unresolved)").into(),
            set,
            filters: compile_filters(&r.filters, backends)?,
        });
        weights.push(r.weight);
    }
    Ok((out, WeightedPicker::new(&weights)))
}

type CompiledRules = Vec<(Arc<Rule>, Vec<(PathKind, Candidate)>)>;

impl Builder<'_> {
    /// Adds a route's rules to every listener it attaches to. Rules are compiled per listener
    /// because the listener name is part of a rule's metrics identity.
    fn attach(
        &mut self,
        route_name: &str,
        listeners: &[String],
        hostnames: &[String],
        make_rules: impl Fn(&str) -> Result<CompiledRules, CompileError>,
    ) -> Result<(), CompileError> {
        for listener in listeners {
            let Some((_, _, lhost, _)) = self.listeners.get(listener) else {
                return Err(CompileError::Invalid(format!(
                    "route {route_name:?} names unknown listener {listener:?}"
                )));
            };
            let Some(hosts) = hostname::intersect(lhost.as_deref(), hostnames) else {
                continue; // No hostname in common: the route does not attach here.
            };
            let rules = make_rules(listener)?;
            let Some((_, _, _, index)) = self.listeners.get_mut(listener) else {
                continue;
            };
            let buckets: Vec<Option<String>> = if hosts.is_empty() {
                vec![None]
            } else {
                hosts
                    .into_iter()
                    .map(|h| Some(h.to_ascii_lowercase()))
                    .collect()
            };
            for bucket in buckets {
                let b = index.buckets.entry(bucket).or_default();
                for (_, cands) in &rules {
                    for (kind, cand) in cands {
                        match kind {
                            PathKind::Exact(p) => {
                                b.exact.entry(p.clone()).or_default().push(cand.clone())
                            }
                            PathKind::Prefix(p) => {
                                b.prefix.entry(p.clone()).or_default().push(cand.clone())
                            }
                            PathKind::Regex(re) => {
                                b.regex.push((full_match_regex(re)?, cand.clone()))
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_http_route(&mut self, order: usize, route: &HttpRoute) -> Result<(), CompileError> {
        let rules: Vec<RuleParts<'_, HttpMatch>> = route
            .rules
            .iter()
            .map(|rule| {
                let t = rule.timeouts.unwrap_or_default();
                let retry = rule.retry.clone().unwrap_or_default();
                RuleParts {
                    name: rule.name.as_deref(),
                    filters: &rule.filters,
                    backends: &rule.backends,
                    matches: &rule.matches,
                    request_timeout: t.request.map(|d| d.0).filter(|d| !d.is_zero()),
                    backend_timeout: t.backend_request.map(|d| d.0).filter(|d| !d.is_zero()),
                    retry,
                    grpc: false,
                }
            })
            .collect();
        let of = (
            route.name.as_str(),
            &route.listeners[..],
            &route.hostnames[..],
        );
        self.add_rules(order, of, &rules, http_candidate)
    }

    fn add_grpc_route(&mut self, order: usize, route: &GrpcRoute) -> Result<(), CompileError> {
        let rules: Vec<RuleParts<'_, cfg::GrpcMatch>> = route
            .rules
            .iter()
            .map(|rule| RuleParts {
                name: rule.name.as_deref(),
                filters: &rule.filters,
                backends: &rule.backends,
                matches: &rule.matches,
                request_timeout: None,
                backend_timeout: None,
                retry: cfg::Retry::default(),
                grpc: true,
            })
            .collect();
        let of = (
            route.name.as_str(),
            &route.listeners[..],
            &route.hostnames[..],
        );
        self.add_rules(order, of, &rules, grpc_candidate)
    }

    /// Compiles the rules of an HTTP or gRPC route (`of`: its name, listeners and hostnames)
    /// into every listener it attaches to; a rule without matches matches everything.
    fn add_rules<M: Default>(
        &mut self,
        order: usize,
        of: (&str, &[String], &[String]),
        rules: &[RuleParts<'_, M>],
        candidate: Candidates<M>,
    ) -> Result<(), CompileError> {
        let (route_name, listeners, hostnames) = of;
        let name: Arc<str> = route_name.into();
        let backends_map = self.backends;
        let metrics = self.metrics;
        self.attach(route_name, listeners, hostnames, |listener| {
            let mut out = Vec::new();
            for (r, rule) in rules.iter().enumerate() {
                let (backends, picker) = rule_backends(backends_map, rule.backends)?;
                let rule_metrics = RuleMetrics::new(metrics, &name, &backends);
                let filters = compile_filters(rule.filters, backends_map)?;
                let plain_h1 = !rule.grpc
                    && rule.retry.codes.is_empty()
                    && plain_filters(&filters)
                    && !backends.is_empty()
                    && backends.iter().all(|b| {
                        plain_filters(&b.filters)
                            && b.set.as_ref().is_some_and(|s| {
                                !s.uses_tls()
                                    && matches!(
                                        s.protocol,
                                        BackendProtocol::Http1 | BackendProtocol::Websocket
                                    )
                            })
                    });
                let shared = Arc::new(Rule {
                    route: name.clone(),
                    rule_name: rule.name.map(Into::into),
                    listener: listener.into(),
                    filters,
                    backends,
                    picker,
                    request_timeout: rule.request_timeout,
                    backend_timeout: rule.backend_timeout,
                    retry_attempts: rule.retry.attempts,
                    retry_codes: rule.retry.codes.clone(),
                    retry_backoff: rule.retry.backoff.map(|d| d.0),
                    grpc: rule.grpc,
                    llm: None,
                    metrics: rule_metrics,
                    plain_h1,
                });
                let default_match = [M::default()];
                let matches = if rule.matches.is_empty() {
                    &default_match[..]
                } else {
                    rule.matches
                };
                let mut cands = Vec::new();
                for m in matches {
                    cands.push(candidate(m, order, r, &shared)?);
                }
                out.push((shared, cands));
            }
            Ok(out)
        })
    }
}

/// What the router takes from one HTTP or gRPC rule.
struct RuleParts<'r, M> {
    name: Option<&'r str>,
    filters: &'r [cfg::HttpFilter],
    backends: &'r [cfg::BackendRef],
    matches: &'r [M],
    request_timeout: Option<std::time::Duration>,
    backend_timeout: Option<std::time::Duration>,
    retry: cfg::Retry,
    grpc: bool,
}

/// Turns one match of a rule into its index entry: `(match, route order, rule index, rule)`.
type Candidates<M> =
    fn(&M, usize, usize, &Arc<Rule>) -> Result<(PathKind, Candidate), CompileError>;

impl Builder<'_> {
    /// An LLM route is one rule matching `POST` on its path; its requests never reach the
    /// Pingora upstream phases.
    fn add_llm_route(
        &mut self,
        order: usize,
        route: &cfg::LlmRoute,
        compiled: &Arc<crate::llm::LlmRoute>,
    ) -> Result<(), CompileError> {
        let name: Arc<str> = route.name.as_str().into();
        let metrics = self.metrics;
        let m = HttpMatch {
            path: Some(cfg::PathMatch {
                kind: route.path.kind,
                value: route.path.value.clone(),
            }),
            method: Some("POST".to_string()),
            ..HttpMatch::default()
        };
        self.attach(
            &route.name,
            &route.listeners,
            &route.hostnames,
            |listener| {
                let shared = Arc::new(Rule {
                    route: name.clone(),
                    rule_name: None,
                    listener: listener.into(),
                    filters: CompiledFilters::default(),
                    backends: Vec::new(),
                    picker: None,
                    request_timeout: None,
                    backend_timeout: None,
                    retry_attempts: 0,
                    retry_codes: Vec::new(),
                    retry_backoff: None,
                    grpc: false,
                    llm: Some(compiled.clone()),
                    metrics: RuleMetrics::new(metrics, &name, &[]),
                    plain_h1: false,
                });
                let cand = http_candidate(&m, order, 0, &shared)?;
                Ok(vec![(shared, vec![cand])])
            },
        )
    }
}

fn http_candidate(
    m: &HttpMatch,
    route: usize,
    rule: usize,
    shared: &Arc<Rule>,
) -> Result<(PathKind, Candidate), CompileError> {
    let (kind, path_len, prefix) = match &m.path {
        None => (PathKind::Prefix("/".into()), 1, Some("/".into())),
        Some(p) => match p.kind {
            PathMatchType::Exact => (PathKind::Exact(p.value.clone()), p.value.len(), None),
            PathMatchType::PathPrefix => {
                let key = prefix_key(&p.value);
                let len = key.len();
                (PathKind::Prefix(key.clone()), len, Some(key.into()))
            }
            PathMatchType::RegularExpression => {
                (PathKind::Regex(p.value.clone()), p.value.len(), None)
            }
        },
    };
    let headers = m
        .headers
        .iter()
        .map(|h| ValueMatcher::compile(h, true))
        .collect::<Result<Vec<_>, _>>()?;
    let query = m
        .query
        .iter()
        .map(|q| ValueMatcher::compile(q, false))
        .collect::<Result<Vec<_>, _>>()?;
    let method = match &m.method {
        Some(s) => Some(
            http::Method::from_bytes(s.as_bytes())
                .map_err(|_| CompileError::Invalid(format!("bad method {s:?}")))?,
        ),
        None => None,
    };
    Ok((
        kind,
        Candidate {
            rank: Rank {
                path_len: Reverse(path_len),
                method: Reverse(method.is_some()),
                headers: Reverse(headers.len()),
                query: Reverse(query.len()),
                route,
                rule,
            },
            method,
            headers: headers.into(),
            query: query.into(),
            prefix,
            rule: shared.clone(),
        },
    ))
}

/// gRPC methods are HTTP/2 paths `/<service>/<method>`; they compile to the same index.
fn grpc_candidate(
    m: &cfg::GrpcMatch,
    route: usize,
    rule: usize,
    shared: &Arc<Rule>,
) -> Result<(PathKind, Candidate), CompileError> {
    let (kind, len) = match &m.method {
        None => (PathKind::Prefix("/".into()), 1),
        Some(mm) => match (mm.kind, mm.service.as_deref(), mm.method.as_deref()) {
            (ValueMatchType::Exact, Some(s), Some(me)) => {
                let p = format!("/{s}/{me}");
                let len = p.len();
                (PathKind::Exact(p), len)
            }
            (ValueMatchType::Exact, Some(s), None) => {
                (PathKind::Prefix(format!("/{s}")), s.len() + 1)
            }
            (ValueMatchType::Exact, None, Some(me)) => (
                PathKind::Regex(format!("/[^/]+/{}", regex::escape(me))),
                me.len() + 1,
            ),
            (ValueMatchType::RegularExpression, s, me) => {
                let s = s.unwrap_or("[^/]+");
                let me = me.unwrap_or("[^/]+");
                (
                    PathKind::Regex(format!("/(?:{s})/(?:{me})")),
                    s.len() + me.len(),
                )
            }
            (ValueMatchType::Exact, None, None) => (PathKind::Prefix("/".into()), 1),
        },
    };
    let headers = m
        .headers
        .iter()
        .map(|h| ValueMatcher::compile(h, true))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        kind,
        Candidate {
            rank: Rank {
                path_len: Reverse(len),
                method: Reverse(false),
                headers: Reverse(headers.len()),
                query: Reverse(0),
                route,
                rule,
            },
            method: None,
            headers: headers.into(),
            query: Arc::from(Vec::new()),
            prefix: None,
            rule: shared.clone(),
        },
    ))
}

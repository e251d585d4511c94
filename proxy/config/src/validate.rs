//! Semantic checks beyond what serde enforces. Every problem is reported with the dotted path
//! of the offending key, all at once, so a user fixes a file in one pass.

use crate::types::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

/// One problem: where (`http_routes[2].rules[0].matches[1].path.value`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

pub(crate) struct Checker<'a> {
    pub(crate) cfg: &'a ProxyConfig,
    problems: Vec<Problem>,
    listeners: HashMap<&'a str, &'a Listener>,
}

impl Checker<'_> {
    pub(crate) fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Checks a parsed config; `Ok` means the proxy can compile it.
pub fn validate(cfg: &ProxyConfig) -> Result<(), Problems> {
    let mut c = Checker {
        cfg,
        problems: Vec::new(),
        listeners: HashMap::new(),
    };
    if cfg.version != SCHEMA_VERSION {
        c.report(
            "version",
            format!(
                "unsupported schema version {} (this proxy reads version {SCHEMA_VERSION})",
                cfg.version
            ),
        );
    }
    check_runtime(&mut c);
    check_certificates(&mut c);
    check_listeners(&mut c);
    check_backends(&mut c);
    for (i, route) in cfg.http_routes.iter().enumerate() {
        check_http_route(&mut c, &format!("http_routes[{i}]"), route);
    }
    for (i, route) in cfg.grpc_routes.iter().enumerate() {
        check_grpc_route(&mut c, &format!("grpc_routes[{i}]"), route);
    }
    for (i, route) in cfg.tls_routes.iter().enumerate() {
        check_tls_route(&mut c, &format!("tls_routes[{i}]"), route);
    }
    crate::llm::check(&mut c);
    if c.problems.is_empty() {
        Ok(())
    } else {
        Err(Problems(c.problems))
    }
}

fn check_runtime(c: &mut Checker) {
    let rt = &c.cfg.runtime;
    if !rt.admin_address.is_empty() && rt.admin_address.parse::<SocketAddr>().is_err() {
        let msg = format!("{:?} is not an ip:port address", rt.admin_address);
        c.report("runtime.admin_address", msg);
    }
    if rt.max_h2_streams == 0 {
        c.report("runtime.max_h2_streams", "must be at least 1");
    }
}

fn check_certificates(c: &mut Checker) {
    for (name, cert) in &c.cfg.certificates {
        if cert.cert_file.is_empty() {
            c.report(
                format!("certificates.{name}.cert_file"),
                "must not be empty",
            );
        }
        if cert.key_file.is_empty() {
            c.report(format!("certificates.{name}.key_file"), "must not be empty");
        }
    }
}

fn check_listeners(c: &mut Checker) {
    let cfg = c.cfg;
    let mut by_port: BTreeMap<(String, u16), Vec<(usize, &Listener)>> = BTreeMap::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if l.name.is_empty() {
            c.report(format!("{at}.name"), "must not be empty");
        } else if c.listeners.insert(&l.name, l).is_some() {
            c.report(
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        if l.port == 0 {
            c.report(format!("{at}.port"), "must be between 1 and 65535");
        }
        if l.address.parse::<std::net::IpAddr>().is_err() {
            c.report(
                format!("{at}.address"),
                format!("{:?} is not an IP address", l.address),
            );
        }
        if let Some(h) = &l.hostname
            && let Err(e) = check_hostname(h)
        {
            c.report(format!("{at}.hostname"), e);
        }
        match (l.protocol, &l.tls) {
            (ListenerProtocol::Http, Some(_)) => {
                c.report(format!("{at}.tls"), "an HTTP listener takes no tls section")
            }
            (ListenerProtocol::Https, None) => c.report(
                format!("{at}.tls"),
                "an HTTPS listener needs a tls section with certificates",
            ),
            (ListenerProtocol::Tls, None) => c.report(
                format!("{at}.tls"),
                "a TLS listener needs a tls section (mode Passthrough or Terminate)",
            ),
            _ => {}
        }
        if let Some(tls) = &l.tls {
            check_listener_tls(c, &at, l, tls);
        }
        by_port
            .entry((l.address.clone(), l.port))
            .or_default()
            .push((i, l));
    }
    // Listeners sharing a socket must agree on what the first bytes are.
    for ((_, port), group) in by_port {
        let plain = group
            .iter()
            .any(|(_, l)| l.protocol == ListenerProtocol::Http);
        let tls = group
            .iter()
            .any(|(_, l)| l.protocol != ListenerProtocol::Http);
        if plain && tls {
            let (i, _) = group[group.len() - 1];
            c.report(
                format!("listeners[{i}].protocol"),
                format!("port {port} mixes plaintext HTTP with TLS listeners"),
            );
        }
        let mut seen: HashSet<Option<&str>> = HashSet::new();
        for (i, l) in &group {
            if !seen.insert(l.hostname.as_deref()) {
                c.report(
                    format!("listeners[{i}].hostname"),
                    format!(
                        "another listener on port {port} has the same hostname {:?}",
                        l.hostname.as_deref().unwrap_or("(any)")
                    ),
                );
            }
        }
    }
}

fn check_listener_tls(c: &mut Checker, at: &str, l: &Listener, tls: &ListenerTls) {
    match (l.protocol, tls.mode) {
        (ListenerProtocol::Https, TlsMode::Passthrough) => c.report(
            format!("{at}.tls.mode"),
            "HTTPS listeners terminate TLS; use protocol TLS for passthrough",
        ),
        (_, TlsMode::Passthrough) if !tls.certificates.is_empty() => c.report(
            format!("{at}.tls.certificates"),
            "a passthrough listener does not use certificates",
        ),
        (_, TlsMode::Terminate) if tls.certificates.is_empty() => c.report(
            format!("{at}.tls.certificates"),
            "terminating TLS needs at least one certificate",
        ),
        _ => {}
    }
    for (j, name) in tls.certificates.iter().enumerate() {
        if !c.cfg.certificates.contains_key(name) {
            c.report(
                format!("{at}.tls.certificates[{j}]"),
                format!("no certificate named {name:?} in [certificates]"),
            );
        }
    }
    if let Some(v) = &tls.client_validation
        && v.ca_files.is_empty()
    {
        c.report(
            format!("{at}.tls.client_validation.ca_files"),
            "needs at least one CA file",
        );
    }
}

fn check_backends(c: &mut Checker) {
    for (name, b) in &c.cfg.backends {
        let at = format!("backends.{name:?}");
        for (j, ep) in b.endpoints.iter().enumerate() {
            if ep.parse::<SocketAddr>().is_err() {
                c.report(
                    format!("{at}.endpoints[{j}]"),
                    format!("{ep:?} is not ip:port (IPv6 as [::1]:80)"),
                );
            }
        }
        if b.protocol == BackendProtocol::H2 && b.tls.is_none() {
            c.report(
                format!("{at}.protocol"),
                "h2 needs a tls section (use h2c without TLS)",
            );
        }
        if let Some(tls) = &b.tls {
            if let Err(e) = check_sni(&tls.sni) {
                c.report(format!("{at}.tls.sni"), e);
            }
            for (j, san) in tls.subject_alt_names.iter().enumerate() {
                if let Err(e) = check_subject_alt_name(san) {
                    c.report(format!("{at}.tls.subject_alt_names[{j}]"), e);
                }
            }
        }
        if let Some(h) = &b.load_balancing.hash_on {
            let ok = h == "source_ip"
                || h.strip_prefix("header:")
                    .is_some_and(|n| http::HeaderName::from_bytes(n.as_bytes()).is_ok())
                || h.strip_prefix("cookie:").is_some_and(|n| !n.is_empty());
            if !ok {
                c.report(
                    format!("{at}.load_balancing.hash_on"),
                    format!("{h:?} is not source_ip, header:<name> or cookie:<name>"),
                );
            }
        }
        if let Some(size) = b.load_balancing.table_size
            && !is_prime(size)
        {
            c.report(
                format!("{at}.load_balancing.table_size"),
                format!("{size} is not prime (Maglev needs a prime, e.g. 65537)"),
            );
        }
        let cb = &b.circuit_breaker;
        if !(0.0..=1.0).contains(&cb.failure_ratio) {
            c.report(
                format!("{at}.circuit_breaker.failure_ratio"),
                "must be between 0 and 1",
            );
        }
        if cb.enabled && cb.consecutive_failures == 0 && cb.failure_ratio == 0.0 {
            c.report(
                format!("{at}.circuit_breaker"),
                "enabled, but neither consecutive_failures nor failure_ratio can trip it",
            );
        }
    }
}

pub(crate) fn check_attachment(
    c: &mut Checker,
    at: &str,
    listeners: &[String],
    allowed: &[ListenerProtocol],
    kind: &str,
) {
    if listeners.is_empty() {
        c.report(format!("{at}.listeners"), "must name at least one listener");
    }
    for (j, name) in listeners.iter().enumerate() {
        match c.listeners.get(name.as_str()) {
            None => c.report(
                format!("{at}.listeners[{j}]"),
                format!("no listener named {name:?}"),
            ),
            Some(l) if !allowed.contains(&l.protocol) => {
                let proto = l.protocol;
                c.report(
                    format!("{at}.listeners[{j}]"),
                    format!("a {kind} cannot attach to listener {name:?} of protocol {proto:?}"),
                )
            }
            Some(_) => {}
        }
    }
}

pub(crate) fn check_hostnames(c: &mut Checker, at: &str, hostnames: &[String]) {
    for (j, h) in hostnames.iter().enumerate() {
        if let Err(e) = check_hostname(h) {
            c.report(format!("{at}.hostnames[{j}]"), e);
        }
    }
}

fn check_http_route(c: &mut Checker, at: &str, route: &HttpRoute) {
    if route.name.is_empty() {
        c.report(format!("{at}.name"), "must not be empty");
    }
    check_attachment(
        c,
        at,
        &route.listeners,
        &[ListenerProtocol::Http, ListenerProtocol::Https],
        "HTTP route",
    );
    check_hostnames(c, at, &route.hostnames);
    for (r, rule) in route.rules.iter().enumerate() {
        let at = format!("{at}.rules[{r}]");
        for (m, mat) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{m}]");
            if let Some(p) = &mat.path {
                check_path_match(c, &format!("{at}.path"), p);
            }
            check_value_matches(c, &at, "headers", &mat.headers, true);
            check_value_matches(c, &at, "query", &mat.query, false);
            if let Some(method) = &mat.method
                && http::Method::from_bytes(method.as_bytes()).is_err()
            {
                c.report(
                    format!("{at}.method"),
                    format!("{method:?} is not an HTTP method"),
                );
            }
        }
        check_filters(c, &at, "filters", &rule.filters, rule);
        check_backend_refs(c, &at, &rule.backends, Some(rule));
        if let Some(retry) = &rule.retry {
            for (j, code) in retry.codes.iter().enumerate() {
                if !(400..=599).contains(code) {
                    c.report(
                        format!("{at}.retry.codes[{j}]"),
                        "must be between 400 and 599",
                    );
                }
            }
        }
        if let Some(t) = &rule.timeouts
            && let (Some(req), Some(be)) = (t.request, t.backend_request)
            && !req.0.is_zero()
            && be.0 > req.0
        {
            c.report(
                format!("{at}.timeouts.backend_request"),
                "must not exceed timeouts.request",
            );
        }
    }
}

fn check_path_match(c: &mut Checker, at: &str, p: &PathMatch) {
    match p.kind {
        PathMatchType::Exact | PathMatchType::PathPrefix => {
            if !p.value.starts_with('/') {
                c.report(format!("{at}.value"), "must start with '/'");
            } else if p.value.contains("//") {
                c.report(format!("{at}.value"), "must not contain '//'");
            } else if p.value.contains(['?', '#']) {
                c.report(format!("{at}.value"), "must not contain '?' or '#'");
            }
        }
        PathMatchType::RegularExpression => check_regex(c, &format!("{at}.value"), &p.value),
    }
}

fn check_value_matches(c: &mut Checker, at: &str, key: &str, ms: &[ValueMatch], header: bool) {
    let mut seen = HashSet::new();
    for (j, m) in ms.iter().enumerate() {
        let at = format!("{at}.{key}[{j}]");
        if header && http::HeaderName::from_bytes(m.name.as_bytes()).is_err() {
            c.report(
                format!("{at}.name"),
                format!("{:?} is not a valid header name", m.name),
            );
        }
        if m.name.is_empty() {
            c.report(format!("{at}.name"), "must not be empty");
        }
        let key = if header {
            m.name.to_ascii_lowercase()
        } else {
            m.name.clone()
        };
        if !seen.insert(key) {
            c.report(
                format!("{at}.name"),
                format!("{:?} is matched twice", m.name),
            );
        }
        if m.kind == ValueMatchType::RegularExpression {
            check_regex(c, &format!("{at}.value"), &m.value);
        }
    }
}

fn check_regex(c: &mut Checker, at: &str, re: &str) {
    if let Err(e) = regex::Regex::new(re) {
        let first = e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        c.report(at, format!("invalid regular expression {re:?}: {first}"));
    }
}

fn check_header_modifier(c: &mut Checker, at: &str, m: &HeaderModifier) {
    for (list, headers) in [("set", &m.set), ("add", &m.add)] {
        for (j, h) in headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                c.report(
                    format!("{at}.{list}[{j}].name"),
                    format!("{:?} is not a valid header name", h.name),
                );
            }
            if http::HeaderValue::from_str(&h.value).is_err() {
                c.report(
                    format!("{at}.{list}[{j}].value"),
                    "not a valid header value",
                );
            }
        }
    }
    for (j, name) in m.remove.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.report(
                format!("{at}.remove[{j}]"),
                format!("{name:?} is not a valid header name"),
            );
        }
    }
}

fn check_filters(c: &mut Checker, at: &str, key: &str, filters: &[HttpFilter], rule: &HttpRule) {
    let mut redirect = false;
    let mut rewrite = false;
    for (j, f) in filters.iter().enumerate() {
        let at = format!("{at}.{key}[{j}]");
        match f {
            HttpFilter::RequestHeaderModifier(m) | HttpFilter::ResponseHeaderModifier(m) => {
                check_header_modifier(c, &at, m)
            }
            HttpFilter::RequestRedirect(r) => {
                redirect = true;
                if let Some(s) = &r.scheme
                    && s != "http"
                    && s != "https"
                {
                    c.report(format!("{at}.scheme"), "must be http or https");
                }
                if let Some(code) = r.status_code
                    && ![301, 302, 303, 307, 308].contains(&code)
                {
                    c.report(
                        format!("{at}.status_code"),
                        "must be 301, 302, 303, 307 or 308",
                    );
                }
                if let Some(h) = &r.hostname
                    && let Err(e) = check_hostname(h)
                {
                    c.report(format!("{at}.hostname"), e);
                }
                if let Some(p) = &r.path {
                    check_path_modifier(c, &format!("{at}.path"), p, rule);
                }
            }
            HttpFilter::UrlRewrite(r) => {
                rewrite = true;
                if let Some(h) = &r.hostname
                    && let Err(e) = check_hostname(h)
                {
                    c.report(format!("{at}.hostname"), e);
                }
                if let Some(p) = &r.path {
                    check_path_modifier(c, &format!("{at}.path"), p, rule);
                }
            }
            HttpFilter::RequestMirror(m) => {
                if !c.cfg.backends.contains_key(&m.backend) {
                    c.report(
                        format!("{at}.backend"),
                        format!("no backend named {:?} in [backends]", m.backend),
                    );
                }
                if let Some(p) = m.percent
                    && !(0.0..=100.0).contains(&p)
                {
                    c.report(format!("{at}.percent"), "must be between 0 and 100");
                }
            }
            // `*` with allow_credentials is valid: the proxy echoes the request's Origin.
            HttpFilter::Cors(_) => {}
        }
    }
    if redirect && rewrite {
        c.report(
            format!("{at}.{key}"),
            "RequestRedirect and URLRewrite cannot be combined",
        );
    }
}

fn check_path_modifier(c: &mut Checker, at: &str, p: &PathModifier, rule: &HttpRule) {
    let value = match p {
        PathModifier::ReplaceFullPath(v) => v,
        PathModifier::ReplacePrefixMatch(v) => {
            let all_prefix = !rule.matches.is_empty()
                && rule.matches.iter().all(|m| {
                    m.path
                        .as_ref()
                        .is_none_or(|p| p.kind == PathMatchType::PathPrefix)
                });
            if !all_prefix && !rule.matches.is_empty() {
                c.report(
                    at.to_string(),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
                );
            }
            v
        }
    };
    if !value.starts_with('/') {
        c.report(format!("{at}.value"), "must start with '/'");
    }
}

fn check_backend_refs(c: &mut Checker, at: &str, refs: &[BackendRef], rule: Option<&HttpRule>) {
    for (j, r) in refs.iter().enumerate() {
        let at = format!("{at}.backends[{j}]");
        if let Some(name) = &r.backend
            && !c.cfg.backends.contains_key(name)
        {
            c.report(
                format!("{at}.backend"),
                format!("no backend named {name:?} in [backends]"),
            );
        }
        if !r.filters.is_empty() {
            match rule {
                Some(rule) => check_filters(c, &at, "filters", &r.filters, rule),
                None => c.report(format!("{at}.filters"), "filters are not supported here"),
            }
        }
    }
}

fn check_grpc_route(c: &mut Checker, at: &str, route: &GrpcRoute) {
    if route.name.is_empty() {
        c.report(format!("{at}.name"), "must not be empty");
    }
    check_attachment(
        c,
        at,
        &route.listeners,
        &[ListenerProtocol::Http, ListenerProtocol::Https],
        "gRPC route",
    );
    check_hostnames(c, at, &route.hostnames);
    for (r, rule) in route.rules.iter().enumerate() {
        let at = format!("{at}.rules[{r}]");
        for (m, mat) in rule.matches.iter().enumerate() {
            let at = format!("{at}.matches[{m}]");
            if let Some(method) = &mat.method {
                if method.service.is_none() && method.method.is_none() {
                    c.report(format!("{at}.method"), "needs a service, a method, or both");
                }
                if method.kind == ValueMatchType::RegularExpression {
                    for v in [&method.service, &method.method].into_iter().flatten() {
                        check_regex(c, &format!("{at}.method"), v);
                    }
                } else {
                    for v in [&method.service, &method.method].into_iter().flatten() {
                        if v.contains('/') {
                            c.report(
                                format!("{at}.method"),
                                "service and method must not contain '/'",
                            );
                        }
                    }
                }
            }
            check_value_matches(c, &at, "headers", &mat.headers, true);
        }
        for (j, f) in rule.filters.iter().enumerate() {
            match f {
                HttpFilter::RequestHeaderModifier(_)
                | HttpFilter::ResponseHeaderModifier(_)
                | HttpFilter::RequestMirror(_) => {}
                _ => c.report(
                    format!("{at}.filters[{j}]"),
                    "gRPC routes support header modifiers and mirrors only",
                ),
            }
        }
        let as_http = HttpRule {
            filters: rule.filters.clone(),
            ..Default::default()
        };
        check_filters(c, &at, "filters", &rule.filters, &as_http);
        check_backend_refs(c, &at, &rule.backends, Some(&as_http));
    }
}

fn check_tls_route(c: &mut Checker, at: &str, route: &TlsRoute) {
    if route.name.is_empty() {
        c.report(format!("{at}.name"), "must not be empty");
    }
    check_attachment(
        c,
        at,
        &route.listeners,
        &[ListenerProtocol::Tls],
        "TLS route",
    );
    check_hostnames(c, at, &route.hostnames);
    check_backend_refs(c, at, &route.backends, None);
}

/// A DNS name as Gateway API accepts it: lowercase labels, an optional leading `*.` wildcard,
/// no IP addresses, no port.
pub fn check_hostname(h: &str) -> Result<(), String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    if name.is_empty() || h.len() > 253 {
        return Err(format!("{h:?} is not a valid hostname"));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{h:?} is an IP address; hostnames must be DNS names"
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{h:?} is not a valid hostname (lowercase letters, digits, '-', and an optional leading '*.')"
            ));
        }
    }
    Ok(())
}

/// A backend's SNI: a DNS name without wildcard (or an IP address, sent as no SNI but
/// verified against the certificate's IP SANs).
pub fn check_sni(sni: &str) -> Result<(), String> {
    if sni.is_empty() {
        return Err("must not be empty".to_string());
    }
    if sni.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if sni.starts_with("*.") {
        return Err(format!("{sni:?}: a wildcard is not a server name"));
    }
    check_hostname(sni)
}

/// A subject alternative name the backend certificate may carry instead of the SNI name: a
/// URI (`scheme:rest`, e.g. a SPIFFE ID) when it has a `:`, else a DNS name without wildcard.
pub fn check_subject_alt_name(san: &str) -> Result<(), String> {
    match san.split_once(':') {
        Some((scheme, rest)) => {
            let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if scheme_ok && !rest.is_empty() && !san.contains(char::is_whitespace) {
                Ok(())
            } else {
                Err(format!("{san:?} is not a URI (scheme:rest)"))
            }
        }
        None if san.starts_with("*.") => Err(format!("{san:?}: wildcards are not supported")),
        None => check_hostname(san),
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}

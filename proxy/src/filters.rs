//! Gateway API filters, compiled once (header names parsed, backends resolved) and applied per
//! request without allocation beyond the values they write.

use crate::backend::BackendSet;
use crate::router::CompileError;
use citoroute_config::{self as cfg, HttpFilter, PathModifier};
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct CompiledFilters {
    pub request_headers: Option<Arc<HeaderMods>>,
    pub response_headers: Option<Arc<HeaderMods>>,
    pub redirect: Option<Arc<cfg::Redirect>>,
    pub rewrite: Option<Arc<cfg::UrlRewrite>>,
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Arc<Cors>>,
}

#[derive(Debug, Clone)]
pub struct Mirror {
    pub backend: Arc<BackendSet>,
    /// Share of requests mirrored, 0.0–1.0.
    pub fraction: f64,
}

#[derive(Debug, Default)]
pub struct HeaderMods {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

#[derive(Debug)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: HeaderValue,
    /// `allowMethods: ["*"]`: a preflight gets the method it asks for back.
    pub any_method: bool,
    pub allow_headers: Option<HeaderValue>,
    /// `allowHeaders: ["*"]`: a preflight gets the headers it asks for back.
    pub any_header: bool,
    pub expose_headers: Option<HeaderValue>,
    pub max_age: Option<HeaderValue>,
    pub allow_credentials: bool,
}

impl Cors {
    /// Whether `origin` is allowed; `*` entries and `https://*.example.com` patterns included.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|allowed| {
            if allowed == "*" || allowed == origin {
                return true;
            }
            match allowed.split_once("://*") {
                Some((scheme, suffix)) => origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix)),
                None => false,
            }
        })
    }

    /// The preflight answer for an allowed origin. Wildcard methods and headers are answered
    /// with what the request asks for: browsers do not accept `*` on credentialed requests,
    /// and echoing is equally valid without credentials.
    pub fn preflight_headers(
        &self,
        origin: &str,
        request_method: Option<&str>,
        request_headers: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        let text = |v: &HeaderValue| v.to_str().unwrap_or_default().to_string();
        let mut out = vec![(
            "access-control-allow-origin",
            self.allow_origin_value(origin),
        )];
        let methods = match request_method {
            Some(m) if self.any_method && !m.is_empty() => m.to_string(),
            _ => text(&self.allow_methods),
        };
        out.push(("access-control-allow-methods", methods));
        match request_headers {
            Some(h) if self.any_header && !h.trim().is_empty() => {
                out.push(("access-control-allow-headers", h.to_string()))
            }
            _ => {
                if let Some(h) = &self.allow_headers {
                    out.push(("access-control-allow-headers", text(h)));
                }
            }
        }
        if let Some(h) = &self.expose_headers {
            out.push(("access-control-expose-headers", text(h)));
        }
        if let Some(m) = &self.max_age {
            out.push(("access-control-max-age", text(m)));
        }
        if self.allow_credentials {
            out.push(("access-control-allow-credentials", "true".to_string()));
        }
        out.push(("vary", "Origin".to_string()));
        out
    }

    /// The value of `Access-Control-Allow-Origin` for an allowed origin: always the origin
    /// itself (with `Vary: Origin`), never `*`, so that the answer is the same with and
    /// without credentials and caches keep origins apart.
    pub fn allow_origin_value(&self, origin: &str) -> String {
        origin.to_string()
    }
}

fn header_pair(h: &cfg::Header) -> Result<(HeaderName, HeaderValue), CompileError> {
    let name = HeaderName::from_bytes(h.name.as_bytes())
        .map_err(|_| CompileError::Invalid(format!("bad header name {:?}", h.name)))?;
    let value = HeaderValue::from_str(&h.value)
        .map_err(|_| CompileError::Invalid(format!("bad header value for {:?}", h.name)))?;
    Ok((name, value))
}

fn compile_mods(m: &cfg::HeaderModifier) -> Result<Arc<HeaderMods>, CompileError> {
    Ok(Arc::new(HeaderMods {
        set: m.set.iter().map(header_pair).collect::<Result<_, _>>()?,
        add: m.add.iter().map(header_pair).collect::<Result<_, _>>()?,
        remove: m
            .remove
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| CompileError::Invalid(format!("bad header name {n:?}")))
            })
            .collect::<Result<_, _>>()?,
    }))
}

fn join(values: &[String]) -> Result<Option<HeaderValue>, CompileError> {
    if values.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&values.join(", "))
        .map(Some)
        .map_err(|_| CompileError::Invalid(format!("bad CORS list {values:?}")))
}

pub fn compile_filters(
    filters: &[HttpFilter],
    backends: &HashMap<String, Arc<BackendSet>>,
) -> Result<CompiledFilters, CompileError> {
    let mut out = CompiledFilters::default();
    for f in filters {
        match f {
            HttpFilter::RequestHeaderModifier(m) => out.request_headers = Some(compile_mods(m)?),
            HttpFilter::ResponseHeaderModifier(m) => out.response_headers = Some(compile_mods(m)?),
            HttpFilter::RequestRedirect(r) => out.redirect = Some(Arc::new(r.clone())),
            HttpFilter::UrlRewrite(r) => out.rewrite = Some(Arc::new(r.clone())),
            HttpFilter::RequestMirror(m) => {
                let backend = backends.get(&m.backend).cloned().ok_or_else(|| {
                    CompileError::Invalid(format!("mirror backend {:?} not found", m.backend))
                })?;
                out.mirrors.push(Mirror {
                    backend,
                    fraction: m.percent.unwrap_or(100.0) / 100.0,
                });
            }
            HttpFilter::Cors(c) => {
                let methods = if c.allow_methods.is_empty() {
                    vec!["GET".into(), "HEAD".into(), "POST".into()]
                } else {
                    c.allow_methods.clone()
                };
                out.cors = Some(Arc::new(Cors {
                    allow_origins: c.allow_origins.clone(),
                    allow_methods: join(&methods)?.unwrap_or(HeaderValue::from_static("GET")),
                    any_method: c.allow_methods.iter().any(|m| m == "*"),
                    allow_headers: join(&c.allow_headers)?,
                    any_header: c.allow_headers.iter().any(|h| h == "*"),
                    expose_headers: join(&c.expose_headers)?,
                    max_age: c.max_age.map(HeaderValue::from),
                    allow_credentials: c.allow_credentials,
                }))
            }
        }
    }
    Ok(out)
}

/// Header edits as the spec orders them: set, then add, then remove.
pub trait HeaderEdit {
    fn set(&mut self, name: &HeaderName, value: &HeaderValue);
    fn add(&mut self, name: &HeaderName, value: &HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

impl HeaderMods {
    pub fn apply(&self, h: &mut impl HeaderEdit) {
        for (n, v) in &self.set {
            h.set(n, v);
        }
        for (n, v) in &self.add {
            h.add(n, v);
        }
        for n in &self.remove {
            h.remove(n);
        }
    }
}

/// The path after a `ReplaceFullPath` / `ReplacePrefixMatch` modifier. `matched_prefix` is the
/// normalized prefix the rule matched on (no trailing `/`, or `/` itself).
pub fn rewrite_path(path: &str, modifier: &PathModifier, matched_prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = matched_prefix.unwrap_or("/");
            let rest = if prefix == "/" {
                path
            } else {
                path.get(prefix.len()..).unwrap_or("")
            };
            let rest = rest.trim_start_matches('/');
            let base = replacement.trim_end_matches('/');
            match (base.is_empty(), rest.is_empty()) {
                (true, true) => "/".to_string(),
                (true, false) => format!("/{rest}"),
                (false, true) => {
                    // Keep a trailing slash the client sent past the prefix ("/foo/" → "/bar/").
                    if path.len() > prefix.len() && path.ends_with('/') && replacement != "/" {
                        format!("{base}/")
                    } else {
                        base.to_string()
                    }
                }
                (false, false) => format!("{base}/{rest}"),
            }
        }
    }
}

/// The `Location` of a redirect. `scheme`/`host`/`port` describe the request as received.
pub fn redirect_location(
    r: &cfg::Redirect,
    scheme: &str,
    host: &str,
    listener_port: u16,
    path: &str,
    query: Option<&str>,
    matched_prefix: Option<&str>,
) -> String {
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let new_host = r.hostname.as_deref().unwrap_or(host);
    // Port: explicit, else the well-known port when the scheme changes, else the listener's.
    let port = match r.port {
        Some(p) => p,
        None if r.scheme.is_some() => default_port(new_scheme),
        None => listener_port,
    };
    let new_path = match &r.path {
        Some(m) => rewrite_path(path, m, matched_prefix),
        None => path.to_string(),
    };
    let mut out = format!("{new_scheme}://{new_host}");
    if port != default_port(new_scheme) {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(&new_path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_prefix_match_follows_the_spec_table() {
        let rp = |path: &str, prefix: &str, repl: &str| {
            rewrite_path(
                path,
                &PathModifier::ReplacePrefixMatch(repl.into()),
                Some(prefix),
            )
        };
        assert_eq!(rp("/foo/bar", "/foo", "/xyz"), "/xyz/bar");
        assert_eq!(rp("/foo/bar", "/foo", "/xyz/"), "/xyz/bar");
        assert_eq!(rp("/foo", "/foo", "/xyz"), "/xyz");
        assert_eq!(rp("/foo/", "/foo", "/xyz"), "/xyz/");
        assert_eq!(rp("/foo/bar", "/foo", "/"), "/bar");
        assert_eq!(rp("/foo", "/foo", "/"), "/");
        assert_eq!(rp("/foo/", "/foo", "/"), "/");
        assert_eq!(rp("/", "/", "/xyz"), "/xyz");
        assert_eq!(rp("/bar", "/", "/xyz"), "/xyz/bar");
    }

    #[test]
    fn redirect_ports_follow_the_scheme() {
        let r = cfg::Redirect {
            scheme: Some("https".into()),
            ..Default::default()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com", 8080, "/x", Some("q=1"), None),
            "https://a.com/x?q=1"
        );
        let r = cfg::Redirect {
            hostname: Some("b.com".into()),
            ..Default::default()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com", 8080, "/x", None, None),
            "http://b.com:8080/x"
        );
        assert_eq!(
            redirect_location(&r, "http", "a.com", 80, "/x", None, None),
            "http://b.com/x"
        );
        let r = cfg::Redirect {
            port: Some(8443),
            scheme: Some("https".into()),
            path: Some(PathModifier::ReplaceFullPath("/new".into())),
            ..Default::default()
        };
        assert_eq!(
            redirect_location(&r, "http", "a.com", 80, "/x", None, None),
            "https://a.com:8443/new"
        );
    }

    #[test]
    fn cors_origin_patterns() {
        let c = Cors {
            allow_origins: vec!["https://*.example.com".into(), "http://a.test".into()],
            allow_methods: HeaderValue::from_static("GET"),
            any_method: false,
            allow_headers: None,
            any_header: false,
            expose_headers: None,
            max_age: None,
            allow_credentials: false,
        };
        assert!(c.allows("https://www.example.com"));
        assert!(!c.allows("https://example.com"));
        assert!(!c.allows("http://www.example.com"));
        assert!(c.allows("http://a.test"));
        assert!(!c.allows("http://b.test"));
    }
}

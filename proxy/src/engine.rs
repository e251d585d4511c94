//! The request path: Pingora phases mapped to Gateway API semantics.
//!
//! | phase                     | what we do                                                   |
//! |---------------------------|--------------------------------------------------------------|
//! | `request_filter`          | pin the router generation, route, CORS preflight, redirect,  |
//! |                           | choose the weighted backend, start mirrors                   |
//! |                           | (LLM routes: the whole AI gateway flow, `crate::llm::serve`) |
//! | `upstream_peer`           | pick an endpoint (LB + breaker + tried set), set timeouts    |
//! | `upstream_request_filter` | request header modifiers, URL rewrite                        |
//! | `fail_to_connect`         | breaker failure, retry on another endpoint                   |
//! | `response_filter`         | breaker outcome, response header modifiers, CORS headers     |
//! | `fail_to_proxy`           | map the error to 502/503/504 (or 400 for a bad request)      |
//! | `logging`                 | metrics and the access log                                   |

use crate::backend::{Admitted, BackendSet, now_nanos};
use crate::filters::{HeaderEdit, redirect_location, rewrite_path};
use crate::metrics::Metrics;
use crate::router::{HeaderView, RequestView, RouteMatch, Router};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use citoroute_config::BackendProtocol;
use citoroute_core::TriedSet;
use http::{HeaderName, HeaderValue, Method};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many endpoints a request may try when connecting fails, unless its rule asks for more.
pub(crate) const DEFAULT_CONNECT_ATTEMPTS: u32 = 3;

/// Request heads larger than this get 431 instead of being forwarded: Pingora reads HTTP/1
/// heads of up to 1 MiB, far more than a backend should be made to take.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// The size of a request head as sent: target, header names and values (with `: ` and CRLF).
fn request_head_bytes(req: &RequestHeader) -> usize {
    req.raw_path().len()
        + req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
}

pub struct Engine {
    pub router: Arc<ArcSwap<Router>>,
    pub metrics: Arc<Metrics>,
    mirror: crate::mirror::MirrorClient,
}

impl Engine {
    pub fn new(router: Arc<ArcSwap<Router>>, metrics: Arc<Metrics>) -> Self {
        Engine {
            router,
            metrics,
            mirror: crate::mirror::MirrorClient::new(),
        }
    }
}

/// Per-request state.
pub struct Ctx {
    router: Option<Arc<Router>>,
    matched: Option<RouteMatch>,
    backend: Option<usize>,
    endpoint: Option<usize>,
    tried: TriedSet,
    attempts: u32,
    start: Instant,
    deadline: Option<Instant>,
    breaker: Admitted,
    cors_origin: Option<String>,
    /// Whether the request got as far as a valid host (the access log shows it then).
    host_known: bool,
    status: u16,
    mirrors: crate::mirror::MirrorCopies,
}

impl Ctx {
    fn backend_set(&self) -> Option<&Arc<BackendSet>> {
        let m = self.matched.as_ref()?;
        m.rule.backends.get(self.backend?)?.set.as_ref()
    }

    fn record_outcome(&mut self, success: bool) {
        self.breaker.resolve(success);
    }
}

struct PingoraHeaders<'a, T>(&'a mut T);

// Pingora's request and response heads share these methods but no trait.
macro_rules! header_edit_for {
    ($head:ty) => {
        impl HeaderEdit for PingoraHeaders<'_, $head> {
            fn set(&mut self, n: &HeaderName, v: &HeaderValue) {
                let _ = self.0.insert_header(n.clone(), v.clone());
            }
            fn add(&mut self, n: &HeaderName, v: &HeaderValue) {
                let _ = self.0.append_header(n.clone(), v.clone());
            }
            fn remove(&mut self, n: &HeaderName) {
                let _ = self.0.remove_header(n);
            }
        }
    };
}
header_edit_for!(RequestHeader);
header_edit_for!(ResponseHeader);

/// A host as a client may send it: a DNS name or IP literal with an optional port.
pub(crate) fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
}

/// The host a request routes on: the target's authority, else the Host header; `""` for an
/// HTTP/1.0 request without either. `Err` carries the 400 answer's body.
fn request_host(req: &RequestHeader) -> std::result::Result<&str, &'static str> {
    let host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    match host {
        Some(h) if valid_host(h) => Ok(h),
        Some(_) => Err("invalid Host header\n"),
        None if req.version == http::Version::HTTP_10 => Ok(""),
        None => Err("missing Host header\n"),
    }
}

/// Answers the request from the proxy itself. Boxed, like the LLM branch below, so that
/// `request_filter`'s future (allocated and moved into place for every request) stays small:
/// the answers are rare, the proxied path is not.
async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(&str, String)],
    body: &'static str,
) -> Result<()> {
    Box::pin(respond_inner(session, status, headers, body)).await
}

async fn respond_inner(
    session: &mut Session,
    status: u16,
    headers: &[(&str, String)],
    body: &'static str,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 2))?;
    for (n, v) in headers {
        resp.insert_header(n.to_string(), v.as_str())?;
    }
    resp.insert_header("content-length", body.len().to_string())?;
    if !body.is_empty() {
        resp.insert_header("content-type", "text/plain")?;
    }
    session
        .write_response_header(Box::new(resp), body.is_empty())
        .await?;
    if !body.is_empty() {
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}

fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError => 503,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => match e.esource() {
            ErrorSource::Downstream => 408,
            _ => 504,
        },
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[async_trait]
impl ProxyHttp for Engine {
    type CTX = Ctx;

    /// No downstream modules: Pingora's default adds a (disabled) compression module whose
    /// per-request context costs time and does nothing for us.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            router: None,
            matched: None,
            backend: None,
            endpoint: None,
            tried: TriedSet::new(),
            attempts: 0,
            start: Instant::now(),
            deadline: None,
            breaker: Admitted::default(),
            cors_origin: None,
            host_known: false,
            status: 0,
            mirrors: crate::mirror::MirrorCopies::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // One generation for the whole request, however long it takes.
        let router = self.router.load_full();
        ctx.router = Some(router.clone());
        let port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
            .unwrap_or(0);
        if request_head_bytes(session.req_header()) > MAX_REQUEST_HEAD_BYTES {
            respond(session, 431, &[], "request header fields too large\n").await?;
            return Ok(true);
        }
        let host = match request_host(session.req_header()) {
            Ok(h) => h,
            Err(body) => {
                respond(session, 400, &[], body).await?;
                return Ok(true);
            }
        };
        ctx.host_known = true;
        let req = session.req_header();
        let view = RequestView {
            port,
            host,
            path: req.uri.path(),
            query: req.uri.query(),
            method: &req.method,
            headers: HeaderView::Map(&req.headers),
        };
        let sni = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|d| d.extension.get::<crate::tls::Sni>());
        if let Some(sni) = sni
            && router.misdirected(port, &sni.0, host)
        {
            respond(session, 421, &[], "misdirected request\n").await?;
            return Ok(true);
        }
        let Some(matched) = router.route(&view) else {
            respond(session, 404, &[], "no route\n").await?;
            return Ok(true);
        };
        let rule = matched.rule.clone();
        ctx.matched = Some(matched);

        // LLM routes: the AI gateway answers the request itself (see `crate::llm`).
        if let Some(llm) = rule.llm.clone() {
            // Boxed: the AI gateway's future is several KB; inline, it would make every
            // request's `request_filter` future that large.
            ctx.status = Box::pin(crate::llm::serve(&self.metrics, session, &llm)).await?;
            return Ok(true);
        }

        if let Some(cors) = &rule.filters.cors
            && let Some(origin) = req
                .headers
                .get(http::header::ORIGIN)
                .and_then(|o| o.to_str().ok())
        {
            let origin = origin.to_string();
            let preflight = req.method == Method::OPTIONS
                && req
                    .headers
                    .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
            if preflight {
                let header =
                    |n: http::header::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
                let headers = if cors.allows(&origin) {
                    cors.preflight_headers(
                        &origin,
                        header(http::header::ACCESS_CONTROL_REQUEST_METHOD),
                        header(http::header::ACCESS_CONTROL_REQUEST_HEADERS),
                    )
                } else {
                    Vec::new()
                };
                respond(session, 204, &headers, "").await?;
                return Ok(true);
            }
            if cors.allows(&origin) {
                ctx.cors_origin = Some(origin);
            }
        }

        if let Some(redirect) = &rule.filters.redirect {
            let scheme = if session
                .digest()
                .and_then(|d| d.ssl_digest.as_ref())
                .is_some()
            {
                "https"
            } else {
                "http"
            };
            let req = session.req_header();
            let location = redirect_location(
                redirect,
                scheme,
                crate::router::strip_port(host),
                port,
                req.uri.path(),
                req.uri.query(),
                ctx.matched.as_ref().and_then(|m| m.prefix.as_deref()),
            );
            let code = redirect.status_code.unwrap_or(302);
            respond(session, code, &[("location", location)], "").await?;
            return Ok(true);
        }

        let Some(picker) = &rule.picker else {
            respond(session, 500, &[], "no backend for this route\n").await?;
            return Ok(true);
        };
        let idx = picker.pick(fastrand::u64(..));
        ctx.backend = Some(idx);
        let Some(set) = rule.backends[idx].set.as_ref() else {
            respond(session, 500, &[], "backend reference not resolved\n").await?;
            return Ok(true);
        };
        if set.endpoints.is_empty() {
            respond(session, 503, &[], "no healthy upstream\n").await?;
            return Ok(true);
        }
        if !rule.filters.mirrors.is_empty() {
            // `host` borrows the request head; mirrored routes take a copy of it.
            let host = host.to_owned();
            let has_body = !session.is_body_empty();
            for m in &rule.filters.mirrors {
                if (m.fraction >= 1.0 || fastrand::f64() < m.fraction)
                    && let Some(p) = crate::mirror::MirrorClient::prepare(
                        &m.backend,
                        session.req_header(),
                        &host,
                    )
                {
                    self.mirror.start(p, has_body, &mut ctx.mirrors);
                }
            }
        }
        if let Some(t) = rule.request_timeout {
            ctx.deadline = Some(ctx.start + t);
        }
        if !rule.retry_codes.is_empty() {
            // Keep the request body so a retry can send it again.
            session.enable_retry_buffering();
        }
        Ok(false)
    }

    /// Copies the body for pending mirrors; they are sent when it ends.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.mirrors.is_empty() {
            if let Some(b) = body {
                ctx.mirrors.add_chunk(b);
            }
            if end_of_stream {
                ctx.mirrors.finish(&self.mirror);
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Field borrows, not clones: `ctx.tried` and `ctx.breaker` change below while the rule
        // and its backend set stay borrowed.
        let Some(m) = &ctx.matched else {
            return Error::e_explain(ErrorType::HTTPStatus(500), "no backend chosen");
        };
        let Some(set) = ctx
            .backend
            .and_then(|i| m.rule.backends.get(i))
            .and_then(|b| b.set.as_ref())
        else {
            return Error::e_explain(ErrorType::HTTPStatus(500), "no backend chosen");
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let key = set.hash_key(client, HeaderView::Map(&session.req_header().headers));
        let Some((i, admission)) = set.choose(key, &mut ctx.tried, now_nanos()) else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no endpoint left to try");
        };
        ctx.breaker = Admitted::new(admission);
        ctx.endpoint = Some(i);
        ctx.attempts += 1;
        let mut timeout = m.rule.backend_timeout;
        if let Some(deadline) = ctx.deadline {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        // The Upgrade header is only looked at where it changes the peer (h2 backends).
        let upgrade = matches!(set.protocol, BackendProtocol::H2 | BackendProtocol::H2c)
            && session.is_upgrade_req();
        Ok(set.peer(i, upgrade, timeout))
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Only idempotent requests whose body is still whole in the retry buffer are retried.
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            return Ok(());
        }
        // Rule `retry.codes`: before anything reaches the client, turn a retriable status into
        // a retriable error, so Pingora calls `upstream_peer` again (another endpoint first).
        let code = upstream.status.as_u16();
        let Some(m) = &ctx.matched else {
            return Ok(());
        };
        if !m.rule.retry_codes.contains(&code) || ctx.attempts > m.rule.retry_attempts {
            return Ok(());
        }
        let rule = m.rule.clone();
        ctx.record_outcome(!matches!(code, 502..=504));
        if let Some(set) = ctx.backend_set()
            && ctx.tried.len() >= set.endpoints.len()
        {
            // Every endpoint was tried once: retries may go to any of them again.
            ctx.tried.clear();
        }
        if let Some(backoff) = rule.retry_backoff {
            tokio::time::sleep(backoff).await;
        }
        let mut e = Error::explain(ErrorType::HTTPStatus(code), "retriable status from backend");
        e.set_retry(true);
        Err(e)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(m) = &ctx.matched else { return Ok(()) };
        let rule = &m.rule;
        if let Some(mods) = &rule.filters.request_headers {
            mods.apply(&mut PingoraHeaders(upstream));
        }
        if let Some(b) = ctx.backend.and_then(|i| rule.backends.get(i))
            && let Some(mods) = &b.filters.request_headers
        {
            mods.apply(&mut PingoraHeaders(upstream));
        }
        if let Some(rw) = &rule.filters.rewrite {
            if let Some(h) = &rw.hostname {
                upstream.insert_header(http::header::HOST, h.as_str())?;
            }
            if let Some(pm) = &rw.path {
                let new_path = rewrite_path(upstream.uri.path(), pm, m.prefix.as_deref());
                let pq = match upstream.uri.query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                let uri: http::Uri = pq.parse().map_err(|_| {
                    Error::explain(
                        ErrorType::HTTPStatus(500),
                        "rewritten path is not a valid URI",
                    )
                })?;
                upstream.set_uri(uri);
            }
        }
        // Keep the original authority for h2 upstreams, which read it from the URI.
        let _ = session;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.record_outcome(false);
        if let Some(set) = ctx.backend_set() {
            self.metrics
                .upstream_errors
                .with_label_values(&[&set.name, "connect"])
                .inc();
        }
        let allowed = ctx
            .matched
            .as_ref()
            .map(|m| (m.rule.retry_attempts + 1).max(DEFAULT_CONNECT_ATTEMPTS))
            .unwrap_or(1);
        let remaining = ctx
            .backend_set()
            .map(|s| s.endpoints.len() > ctx.tried.len())
            .unwrap_or(false);
        if ctx.attempts < allowed && remaining {
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        if ctx.breaker.is_pending() {
            let failed = matches!(resp.status.as_u16(), 502..=504);
            ctx.record_outcome(!failed);
        }
        let Some(m) = &ctx.matched else { return Ok(()) };
        let rule = &m.rule;
        if let Some(mods) = &rule.filters.response_headers {
            mods.apply(&mut PingoraHeaders(&mut *resp));
        }
        if let Some(b) = ctx.backend.and_then(|i| rule.backends.get(i))
            && let Some(mods) = &b.filters.response_headers
        {
            mods.apply(&mut PingoraHeaders(&mut *resp));
        }
        if let (Some(cors), Some(origin)) = (&rule.filters.cors, &ctx.cors_origin) {
            resp.insert_header(
                "access-control-allow-origin",
                cors.allow_origin_value(origin),
            )?;
            if cors.allow_credentials {
                resp.insert_header("access-control-allow-credentials", "true")?;
            }
            if let Some(h) = &cors.expose_headers {
                resp.insert_header("access-control-expose-headers", h.clone())?;
            }
            resp.append_header("vary", "Origin")?;
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if e.esource() == &ErrorSource::Upstream {
            ctx.record_outcome(false);
            if let Some(set) = ctx.backend_set() {
                let kind = match e.etype() {
                    ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                    _ => "proxy",
                };
                self.metrics
                    .upstream_errors
                    .with_label_values(&[&set.name, kind])
                    .inc();
            }
        }
        let code = error_status(e);
        if code > 0 {
            let _ = session.respond_error(code).await;
        }
        ctx.status = code;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // An admission never resolved (the client went away first): free it, count nothing.
        ctx.breaker.cancel();
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        let elapsed = ctx.start.elapsed();
        match &ctx.matched {
            Some(m) => m.rule.request_metrics(ctx.backend).observe(status, elapsed),
            None => self.metrics.unmatched().observe(status, elapsed),
        }
        if ctx
            .router
            .as_ref()
            .is_some_and(|r| r.config.runtime.access_log)
        {
            let (route, backend) = match &ctx.matched {
                Some(m) => (
                    m.rule.route.as_ref(),
                    ctx.backend
                        .and_then(|i| m.rule.backends.get(i))
                        .map(|b| b.name.as_ref())
                        .unwrap_or(""),
                ),
                None => ("", ""),
            };
            let req = session.req_header();
            let host = match ctx.host_known {
                true => request_host(req).unwrap_or(""),
                false => "",
            };
            let endpoint = ctx
                .backend_set()
                .zip(ctx.endpoint)
                .map(|(s, i)| s.endpoints[i].label.as_ref())
                .unwrap_or("");
            log_access(&AccessEntry {
                client: session
                    .client_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                method: req.method.as_str(),
                host,
                path: req.uri.path(),
                status,
                route,
                backend,
                endpoint,
                attempts: ctx.attempts,
                elapsed,
                error: e.map(|e| e.to_string()).unwrap_or_default(),
            });
        }
    }
}

/// One access log line's fields, shared by Pingora's path and [`crate::h1_proxy`].
pub(crate) struct AccessEntry<'a> {
    pub client: String,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub backend: &'a str,
    pub endpoint: &'a str,
    pub attempts: u32,
    pub elapsed: Duration,
    pub error: String,
}

pub(crate) fn log_access(a: &AccessEntry<'_>) {
    tracing::info!(
        target: "access",
        client = %a.client,
        method = %a.method,
        host = %a.host,
        path = %a.path,
        status = a.status,
        route = a.route,
        backend = a.backend,
        endpoint = a.endpoint,
        attempts = a.attempts,
        duration_us = a.elapsed.as_micros() as u64,
        error = %a.error,
    );
}

//! HTTP/1.1 proxying of the common request, beside Pingora's generic path (plaintext, and
//! inside TLS once the handshake chose http/1.1).
//!
//! Why: with one worker and small keep-alive responses, Pingora's HTTP/1 path spends about 80k
//! instructions a request (a 14 KB future moved per request, header maps built and cloned, a
//! task pair and a channel, an idle-watch task and a timer per pooled connection), four times
//! nginx. This loop routes on the `httparse` view of the request, forwards the request and
//! response heads as the bytes that came in (rebuilt only when a header modifier or a URL
//! rewrite applies), and keeps upstream connections in a pool per worker thread, which needs
//! no lock because each worker runs its own single-threaded runtime.
//!
//! It serves only what it fully implements: HTTP/1.1 requests with a plain Host, no
//! `Transfer-Encoding`, `Expect` or `Upgrade`, a whole body of known length, and a rule whose
//! filters are header modifiers and URL rewrites at most and whose backends are plaintext
//! HTTP/1 ([`crate::router::Rule::plain_h1`]). Any other request hands the connection, with
//! every byte read so far put back, to Pingora for the rest of its life, so 404s, 400s, 421s,
//! redirects, mirrors, CORS, retries on status codes, TLS and h2 backends keep exactly
//! Pingora's behaviour.

use crate::backend::{Admitted, BackendSet, now_nanos};
use crate::engine::{AccessEntry, DEFAULT_CONNECT_ATTEMPTS, log_access, valid_host};
use crate::filters::{HeaderEdit, HeaderMods, rewrite_path};
use crate::metrics::Metrics;
use crate::router::{HeaderView, RequestView, RouteMatch, Router};
use arc_swap::ArcSwap;
use citoroute_core::TriedSet;
use http::{HeaderName, HeaderValue, Method};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A request (head and body) larger than this goes to Pingora's path.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Headers per request or response head that `httparse` is given room for; more: Pingora.
const MAX_HEADERS: usize = 64;
/// A response head larger than this is refused with 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// An idle client connection, or one that started a request head, waits this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// A pooled upstream connection idle longer than this is closed instead of reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a worker's pool is swept of expired connections (on its next use).
const POOL_SWEEP_EVERY: Duration = Duration::from_secs(5);
/// The most a body read takes at once.
const MAX_BODY_READ: usize = 64 * 1024;
/// Buffer capacity a connection starts with, for each direction; a larger head or body grows it.
const INITIAL_BUFFER: usize = 2048;

/// Serves the plain requests of HTTP/1.1 connections, in plaintext or inside TLS.
pub struct H1Proxy {
    router: Arc<ArcSwap<Router>>,
    metrics: Arc<Metrics>,
    /// Idle upstream connections each worker thread keeps, all endpoints together.
    pool_cap: usize,
}

impl H1Proxy {
    /// `pool_size` is `runtime.upstream_keepalive_pool_size`, shared out over `threads`
    /// workers (0 turns pooling off).
    pub fn new(
        router: Arc<ArcSwap<Router>>,
        metrics: Arc<Metrics>,
        pool_size: usize,
        threads: usize,
    ) -> Self {
        H1Proxy {
            router,
            metrics,
            pool_cap: pool_size.div_ceil(threads.max(1)),
        }
    }

    /// Serves requests on `down` until the client leaves or a request needs Pingora's path:
    /// then the bytes read but not served are returned, for the caller to put back in front of
    /// the connection before handing it to Pingora.
    pub async fn serve<S>(&self, down: &mut S, conn: &ConnInfo, shutdown: &ShutdownWatch) -> Served
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut stop = shutdown.clone();
        if *stop.borrow_and_update() {
            return Served::HandOff(Vec::new());
        }
        let mut buf: Vec<u8> = Vec::with_capacity(INITIAL_BUFFER);
        // The response buffer lives only while a request is in flight: an idle connection
        // keeps just `buf`.
        let mut up_buf: Vec<u8> = Vec::new();
        loop {
            let plan = loop {
                if !buf.is_empty() {
                    match self.plan(&buf, conn) {
                        Parsed::Ready(plan) => break plan,
                        Parsed::Partial if buf.len() < MAX_REQUEST_BYTES => {}
                        Parsed::Partial | Parsed::HandOff => return Served::HandOff(buf),
                    }
                }
                reserve(&mut buf);
                let idle = buf.is_empty();
                let read = tokio::time::timeout(CLIENT_TIMEOUT, down.read_buf(&mut buf));
                // An idle connection closes as soon as the server starts shutting down.
                let read = tokio::select! {
                    biased;
                    r = read => r,
                    _ = stop.changed(), if idle => return Served::Closed,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Served::Closed,
                }
            };
            up_buf.reserve(INITIAL_BUFFER);
            let keep_alive = self
                .proxy(down, &buf[..plan.len], &plan, conn, &mut up_buf)
                .await;
            up_buf = Vec::new();
            buf.drain(..plan.len);
            if buf.capacity() > MAX_REQUEST_BYTES && buf.len() <= INITIAL_BUFFER {
                buf.shrink_to(INITIAL_BUFFER);
            }
            if !keep_alive || *shutdown.borrow() {
                // A FIN after the last response rather than a reset, for the client's sake.
                let _ = down.shutdown().await;
                return Served::Closed;
            }
        }
    }

    /// Parses and routes the request at the start of `buf`.
    fn plan(&self, buf: &[u8], conn: &ConnInfo) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::HandOff,
        };
        let (Some(1), Some(method), Some(target)) = (req.version, req.method, req.path) else {
            return Parsed::HandOff;
        };
        if !plain_target(target) || !crlf_only(&buf[..head_len]) {
            return Parsed::HandOff;
        }
        let mut host = None;
        let mut content_length = None;
        let mut close = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"host") {
                if host.is_some() {
                    return Parsed::HandOff;
                }
                host = std::str::from_utf8(h.value).ok();
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let n = match parse_length(h.value) {
                    Some(n) if content_length.is_none() => n,
                    _ => return Parsed::HandOff,
                };
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Parsed::HandOff;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"upgrade")
                || name.eq_ignore_ascii_case(b"expect")
            {
                return Parsed::HandOff;
            }
        }
        let Some(host) = host.filter(|h| valid_host(h)) else {
            return Parsed::HandOff;
        };
        let router = self.router.load_full();
        // A Host that belongs to another listener than the SNI chose: Pingora's path answers 421.
        if let Some(sni) = &conn.sni
            && router.misdirected(conn.port, sni, host)
        {
            return Parsed::HandOff;
        }
        let len = head_len + content_length.unwrap_or(0) as usize;
        if len > MAX_REQUEST_BYTES {
            return Parsed::HandOff;
        }
        if buf.len() < len {
            return Parsed::Partial;
        }
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::HandOff;
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let view = RequestView {
            port: conn.port,
            host,
            path,
            query,
            method: &method,
            headers: HeaderView::Raw(&*req.headers),
        };
        let Some(matched) = router.route(&view) else {
            return Parsed::HandOff;
        };
        let rule = &matched.rule;
        let Some(picker) = rule.picker.as_ref().filter(|_| rule.plain_h1) else {
            return Parsed::HandOff;
        };
        let backend = picker.pick(fastrand::u64(..));
        let Some(set) = rule.backends.get(backend).and_then(|b| b.set.as_ref()) else {
            return Parsed::HandOff;
        };
        if set.endpoints.is_empty() {
            return Parsed::HandOff;
        }
        let key = set.hash_key(conn.client.map(|a| a.ip()), HeaderView::Raw(&*req.headers));
        let mods = [
            rule.filters.request_headers.as_deref(),
            rule.backends[backend].filters.request_headers.as_deref(),
        ];
        // URLRewrite, after the header modifiers as in Pingora's path.
        let rewrite = rule.filters.rewrite.as_deref();
        let target = match rewrite.and_then(|r| r.path.as_ref()) {
            Some(modifier) => {
                let path = rewrite_path(path, modifier, matched.prefix.as_deref());
                let target = match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                if !plain_target(&target) {
                    return Parsed::HandOff;
                }
                Some(format!("{method} {target} HTTP/1.1"))
            }
            None => None,
        };
        let new_host = rewrite.and_then(|r| r.hostname.as_deref());
        let edited = (mods.iter().any(Option::is_some) || rewrite.is_some()).then(|| {
            let edit = HeadEdit {
                mods: &mods,
                first_line: target.as_deref().map(str::as_bytes),
                host: new_host,
                drop_connection: false,
            };
            let mut r = rebuild_head(&buf[..head_len], req.headers, &edit);
            r.extend_from_slice(&buf[head_len..len]);
            r
        });
        let log = router.config.runtime.access_log.then(|| LoggedRequest {
            method: method.as_str().to_owned(),
            host: host.to_owned(),
            path: path.to_owned(),
        });
        Parsed::Ready(Plan {
            matched,
            backend,
            key,
            len,
            edited,
            head_request: method == Method::HEAD,
            close,
            log,
            start: Instant::now(),
        })
    }

    /// Proxies one planned request; returns whether the client connection stays open.
    async fn proxy<S: AsyncWrite + Unpin>(
        &self,
        down: &mut S,
        request: &[u8],
        plan: &Plan,
        conn: &ConnInfo,
        up_buf: &mut Vec<u8>,
    ) -> bool {
        let rule = &plan.matched.rule;
        let Some(set) = rule.backends[plan.backend].set.as_ref() else {
            return false;
        };
        let mut out = Outcome {
            status: 0,
            endpoint: None,
            attempts: 0,
            error: None,
            keep_alive: false,
        };
        let request = plan.edited.as_deref().unwrap_or(request);
        self.exchange(down, request, plan, set, up_buf, &mut out)
            .await;
        let elapsed = plan.start.elapsed();
        rule.request_metrics(Some(plan.backend))
            .observe(out.status, elapsed);
        if let Some(log) = &plan.log {
            log_access(&AccessEntry {
                client: conn.client.map(|a| a.to_string()).unwrap_or_default(),
                method: &log.method,
                host: &log.host,
                path: &log.path,
                status: out.status,
                route: &rule.route,
                backend: &rule.backends[plan.backend].name,
                endpoint: out
                    .endpoint
                    .map(|i| set.endpoints[i].label.as_ref())
                    .unwrap_or(""),
                attempts: out.attempts,
                elapsed,
                error: out.error.unwrap_or_default().to_string(),
            });
        }
        out.keep_alive && !plan.close
    }

    /// Sends the request to an endpoint and the response to the client, filling `out`.
    async fn exchange<S: AsyncWrite + Unpin>(
        &self,
        down: &mut S,
        request: &[u8],
        plan: &Plan,
        set: &BackendSet,
        up_buf: &mut Vec<u8>,
        out: &mut Outcome,
    ) {
        let rule = &plan.matched.rule;
        let mut read_timeout = rule.backend_timeout;
        if let Some(t) = rule.request_timeout {
            let left = (plan.start + t)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            read_timeout = Some(read_timeout.map_or(left, |b| b.min(left)));
        }
        let allowed = (rule.retry_attempts + 1).max(DEFAULT_CONNECT_ATTEMPTS);
        let mut tried = TriedSet::new();
        // Connect, retrying other endpoints; a pooled connection the backend closed meanwhile
        // is replaced by a new one to the same endpoint, once.
        let (mut up, mut head, i, mut admission) = loop {
            let Some((i, admission)) = set.choose(plan.key, &mut tried, now_nanos()) else {
                return self.fail(down, out, 503, "no endpoint left to try").await;
            };
            let mut admission = Admitted::new(admission);
            out.attempts += 1;
            out.endpoint = Some(i);
            let addr = set.endpoints[i].addr;
            let pooled = pool_take(addr, plan.start);
            let reused = pooled.is_some();
            let connected = match pooled {
                Some(up) => Ok(up),
                None => connect(addr, set.connect_timeout_or_default()).await,
            };
            let head_request = plan.head_request;
            let mut up =
                exchange_head(connected, request, up_buf, read_timeout, head_request).await;
            if reused && matches!(up, Err(UpstreamError::Stale)) {
                let connected = connect(addr, set.connect_timeout_or_default()).await;
                up = exchange_head(connected, request, up_buf, read_timeout, head_request).await;
            }
            match up {
                Ok((up, head)) => break (up, head, i, admission),
                Err(UpstreamError::Connect) => {
                    admission.resolve(false);
                    self.upstream_error(set, "connect");
                    if out.attempts < allowed && tried.len() < set.endpoints.len() {
                        continue;
                    }
                    return self.fail(down, out, 503, "cannot connect to backend").await;
                }
                Err(UpstreamError::Timeout) => {
                    admission.resolve(false);
                    self.upstream_error(set, "timeout");
                    return self.fail(down, out, 504, "backend timed out").await;
                }
                Err(UpstreamError::Stale | UpstreamError::Invalid) => {
                    admission.resolve(false);
                    self.upstream_error(set, "proxy");
                    return self
                        .fail(down, out, 502, "invalid response from backend")
                        .await;
                }
            }
        };
        // Informational responses go to the client as they come; then the final head.
        let head = loop {
            if !(100..200).contains(&head.status) {
                break head;
            }
            if head.status == 101 {
                // No upgrade was asked for.
                admission.resolve(false);
                self.upstream_error(set, "proxy");
                return self
                    .fail(down, out, 502, "unexpected 101 from backend")
                    .await;
            }
            if write_flush(down, &up_buf[..head.len]).await.is_err() {
                return;
            }
            up_buf.drain(..head.len);
            head = match read_head(&mut up, up_buf, read_timeout, plan.head_request).await {
                Ok(h) => h,
                Err(e) => {
                    admission.resolve(false);
                    self.upstream_error(set, e.kind());
                    let status = if matches!(e, UpstreamError::Timeout) {
                        504
                    } else {
                        502
                    };
                    return self
                        .fail(down, out, status, "no final response from backend")
                        .await;
                }
            };
        };
        out.status = head.status;
        admission.resolve(!matches!(head.status, 502..=504));
        let rule_backend = &rule.backends[plan.backend];
        let mods = [
            rule.filters.response_headers.as_deref(),
            rule_backend.filters.response_headers.as_deref(),
        ];
        let body_start = head.len;
        let mut first = match (
            mods.iter().any(Option::is_some),
            head.canonical,
            head.reframe,
        ) {
            (false, true, false) => None,
            _ => {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                if resp.parse(&up_buf[..head.len]).is_err() {
                    self.upstream_error(set, "proxy");
                    return self
                        .fail(down, out, 502, "invalid response from backend")
                        .await;
                }
                // "HTTP/1.0 200 OK" → "HTTP/1.1 200 OK": the client's connection stays open.
                let status_line = head.reframe.then(|| {
                    let line = first_line(&up_buf[..head.len]);
                    [&b"HTTP/1.1"[..], line.get(8..).unwrap_or(b"")].concat()
                });
                let edit = HeadEdit {
                    mods: &mods,
                    first_line: status_line.as_deref(),
                    host: None,
                    drop_connection: head.reframe,
                };
                Some(rebuild_head(&up_buf[..head.len], resp.headers, &edit))
            }
        };
        // The body bytes that came with the head, within the framing.
        let mut framing = head.framing;
        let avail = up_buf.len() - body_start;
        let (taken, mut ended) = framing.consume(&up_buf[body_start..]);
        let mut upstream_reusable = head.reusable && taken == avail;
        let result = match first.as_mut() {
            Some(h) => {
                h.extend_from_slice(&up_buf[body_start..body_start + taken]);
                write_flush(down, h).await
            }
            None => write_flush(down, &up_buf[..body_start + taken]).await,
        };
        if result.is_err() {
            return;
        }
        while !ended {
            // A body that keeps filling the buffer gets a larger one, up to 64 KiB a read.
            if up_buf.len() == up_buf.capacity() && up_buf.capacity() < MAX_BODY_READ {
                up_buf.reserve(up_buf.capacity());
            }
            up_buf.clear();
            reserve(up_buf);
            let n = match read_some(&mut up, up_buf, read_timeout).await {
                Ok(n) => n,
                Err(e) => {
                    self.upstream_error(set, e.kind());
                    return;
                }
            };
            if n == 0 {
                if matches!(framing, Framing::UntilClose) {
                    // The body ended with the connection; so does the client's.
                    return;
                }
                self.upstream_error(set, "proxy");
                return;
            }
            let (taken, end) = framing.consume(&up_buf[..n]);
            if taken < n {
                upstream_reusable = false;
            }
            if write_flush(down, &up_buf[..taken]).await.is_err() {
                return;
            }
            ended = end;
        }
        if matches!(framing, Framing::Invalid) {
            // The client has part of a body that cannot be finished: close its connection.
            self.upstream_error(set, "proxy");
            return;
        }
        if upstream_reusable {
            pool_put(set.endpoints[i].addr, up, plan.start, self.pool_cap);
        }
        out.keep_alive = head.client_keep_alive;
    }

    fn upstream_error(&self, set: &BackendSet, kind: &str) {
        self.metrics
            .upstream_errors
            .with_label_values(&[&set.name, kind])
            .inc();
    }

    /// Answers with an error status (the connection closes after it, as in Pingora's path).
    async fn fail<S: AsyncWrite + Unpin>(
        &self,
        down: &mut S,
        out: &mut Outcome,
        status: u16,
        why: &'static str,
    ) {
        out.status = status;
        out.error = Some(why);
        out.keep_alive = false;
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\ncache-control: private, no-store\r\nconnection: close\r\n\r\n"
        );
        let _ = write_flush(down, resp.as_bytes()).await;
    }
}

/// What a client connection carries into every request: its listener port, the client's
/// address and, on TLS, the SNI (for the misdirected-request check).
pub struct ConnInfo {
    port: u16,
    client: Option<SocketAddr>,
    sni: Option<String>,
}

impl ConnInfo {
    pub fn of<S: GetSocketDigest + Ssl + ?Sized>(stream: &S) -> ConnInfo {
        let digest = stream.get_socket_digest();
        let inet = |a: Option<&pingora_core::protocols::l4::socket::SocketAddr>| {
            a.and_then(|a| a.as_inet()).copied()
        };
        let local = digest.as_ref().and_then(|d| inet(d.local_addr()));
        let sni = stream
            .get_ssl_digest()
            .and_then(|d| d.extension.get::<crate::tls::Sni>().map(|s| s.0.clone()));
        ConnInfo {
            port: local.map(|a| a.port()).unwrap_or(0),
            client: digest.as_ref().and_then(|d| inet(d.peer_addr())),
            sni,
        }
    }
}

/// How [`H1Proxy::serve`] ended.
pub enum Served {
    /// The connection is done: the client left, an error, or the server is shutting down.
    Closed,
    /// A request needs Pingora's path: these bytes were read and not served.
    HandOff(Vec<u8>),
}

enum Parsed {
    Ready(Plan),
    Partial,
    HandOff,
}

/// A request routed and ready to send: `len` bytes of the buffer (head and body).
struct Plan {
    matched: RouteMatch,
    backend: usize,
    key: Option<u64>,
    len: usize,
    /// The request as edited by header modifiers; `None`: forward the bytes as they came.
    edited: Option<Vec<u8>>,
    head_request: bool,
    close: bool,
    log: Option<LoggedRequest>,
    start: Instant,
}

struct LoggedRequest {
    method: String,
    host: String,
    path: String,
}

struct Outcome {
    status: u16,
    endpoint: Option<usize>,
    attempts: u32,
    error: Option<&'static str>,
    keep_alive: bool,
}

#[derive(Debug)]
enum UpstreamError {
    /// Could not connect (the request was not sent).
    Connect,
    /// Nothing came back (a pooled connection the backend had closed): safe to send again.
    Stale,
    Timeout,
    Invalid,
}

impl UpstreamError {
    fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout => "timeout",
            UpstreamError::Connect => "connect",
            _ => "proxy",
        }
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        _ => Err(UpstreamError::Connect),
    }
}

/// Sends the request on `up` (if connecting worked) and reads the response head.
async fn exchange_head(
    up: Result<TcpStream, UpstreamError>,
    request: &[u8],
    up_buf: &mut Vec<u8>,
    timeout: Option<Duration>,
    head_request: bool,
) -> Result<(TcpStream, ResponseHead), UpstreamError> {
    let mut up = up?;
    up_buf.clear();
    // The backend's timeout bounds the write too, as on the engine path.
    let written = match timeout {
        None => up.write_all(request).await.is_ok(),
        Some(t) => match tokio::time::timeout(t, up.write_all(request)).await {
            Ok(r) => r.is_ok(),
            Err(_) => return Err(UpstreamError::Timeout),
        },
    };
    if !written {
        return Err(UpstreamError::Stale);
    }
    let head = read_head(&mut up, up_buf, timeout, head_request).await?;
    Ok((up, head))
}

/// Reads until `up_buf` holds a whole response head, and reads that head.
async fn read_head(
    up: &mut TcpStream,
    up_buf: &mut Vec<u8>,
    timeout: Option<Duration>,
    head_request: bool,
) -> Result<ResponseHead, UpstreamError> {
    loop {
        if !up_buf.is_empty() {
            match ResponseHead::parse(up_buf, head_request) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) if up_buf.len() < MAX_RESPONSE_HEAD => {}
                _ => return Err(UpstreamError::Invalid),
            }
        }
        reserve(up_buf);
        match read_some(up, up_buf, timeout).await {
            Ok(0) if up_buf.is_empty() => return Err(UpstreamError::Stale),
            Ok(0) => return Err(UpstreamError::Invalid),
            Ok(_) => {}
            Err(UpstreamError::Invalid) if up_buf.is_empty() => return Err(UpstreamError::Stale),
            Err(e) => return Err(e),
        }
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> Result<usize, UpstreamError> {
    let read = match timeout {
        None => r.read_buf(buf).await,
        Some(t) => match tokio::time::timeout(t, r.read_buf(buf)).await {
            Ok(r) => r,
            Err(_) => return Err(UpstreamError::Timeout),
        },
    };
    read.map_err(|_| UpstreamError::Invalid)
}

/// Writes to the client. A client that stops reading for [`CLIENT_TIMEOUT`] is given up on (the
/// timer is only armed when the write has to wait).
async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let write = async {
        w.write_all(bytes).await?;
        w.flush().await
    };
    tokio::time::timeout(CLIENT_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Room for at least 1 KiB more (the buffers only grow up to their callers' limits).
fn reserve(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(INITIAL_BUFFER));
    }
}

/// A decimal Content-Length.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// An origin-form target of characters every parser on the way agrees on.
fn plain_target(t: &str) -> bool {
    t.starts_with('/')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// Whether every line of a head ends in CRLF (`httparse` also takes a bare LF, which is then
/// not forwarded as it came).
fn crlf_only(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && head[i - 1] == b'\r'))
}

/// How a head is edited: header modifiers in order, then (requests with a URLRewrite) a new
/// request line and Host.
struct HeadEdit<'a> {
    mods: &'a [Option<&'a HeaderMods>],
    first_line: Option<&'a [u8]>,
    host: Option<&'a str>,
    /// Leave out `Connection` and `Keep-Alive` (a response re-framed as HTTP/1.1 keep-alive).
    drop_connection: bool,
}

/// A head's first line, without its line end.
fn first_line(head: &[u8]) -> &[u8] {
    head.iter()
        .position(|&b| b == b'\n')
        .map(|i| head[..i].strip_suffix(b"\r").unwrap_or(&head[..i]))
        .unwrap_or(head)
}

/// A head's first line, then its headers, edited; then the blank line.
fn rebuild_head(head: &[u8], headers: &[httparse::Header<'_>], edit: &HeadEdit<'_>) -> Vec<u8> {
    let first_line = edit.first_line.unwrap_or_else(|| first_line(head));
    let mut edited = EditedHeaders(
        headers
            .iter()
            .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
            .collect(),
    );
    for m in edit.mods.iter().flatten() {
        m.apply(&mut edited);
    }
    if edit.drop_connection {
        edited.remove(&http::header::CONNECTION);
        edited.remove(&HeaderName::from_static("keep-alive"));
    }
    if let Some(host) = edit.host {
        edited.remove(&http::header::HOST);
        edited.0.push((b"host".to_vec(), host.as_bytes().to_vec()));
    }
    let mut out = Vec::with_capacity(head.len() + 256);
    out.extend_from_slice(first_line);
    out.extend_from_slice(b"\r\n");
    for (n, v) in &edited.0 {
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

struct EditedHeaders(Vec<(Vec<u8>, Vec<u8>)>);

impl HeaderEdit for EditedHeaders {
    fn set(&mut self, n: &HeaderName, v: &HeaderValue) {
        self.remove(n);
        self.add(n, v);
    }
    fn add(&mut self, n: &HeaderName, v: &HeaderValue) {
        self.0
            .push((n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    fn remove(&mut self, n: &HeaderName) {
        self.0
            .retain(|(name, _)| !name.eq_ignore_ascii_case(n.as_str().as_bytes()));
    }
}

/// What a response head says about its body and the connections.
struct ResponseHead {
    status: u16,
    len: usize,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`, and a body whose end is known: the upstream
    /// connection may carry another request.
    reusable: bool,
    /// The backend ends its connection (HTTP/1.0 or `Connection: close`) but the body's end
    /// is known: the head goes to the client as HTTP/1.1 without `Connection`, so the client's
    /// connection need not end too (as on Pingora's path).
    reframe: bool,
    /// The body's end is known without the connection closing.
    client_keep_alive: bool,
    /// Every line ends in CRLF: the head may be forwarded as it came.
    canonical: bool,
}

impl ResponseHead {
    /// Reads the head at the start of `buf`: `Ok(None)` while it is incomplete, `Err` if it
    /// is malformed or its body framing is ambiguous (answered with 502, not passed on).
    fn parse(buf: &[u8], head_request: bool) -> Result<Option<ResponseHead>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let status = resp.code.ok_or(())?;
        let http11 = resp.version == Some(1);
        let mut length = None;
        let mut chunked = None;
        let mut close = !http11;
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = parse_length(h.value.trim_ascii()).ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                        close = false;
                    }
                }
            }
        }
        let framing =
            if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
                Framing::Length(0)
            } else {
                match (chunked, length) {
                    (Some(_), Some(_)) => return Err(()),
                    (Some(true), None) => Framing::Chunked(Chunked::default()),
                    (Some(false), None) | (None, None) => Framing::UntilClose,
                    (None, Some(n)) => Framing::Length(n),
                }
            };
        let until_close = matches!(framing, Framing::UntilClose);
        Ok(Some(ResponseHead {
            status,
            len,
            framing,
            reusable: !close && !until_close,
            reframe: close && !until_close,
            client_keep_alive: !until_close,
            canonical: crlf_only(&buf[..len]),
        }))
    }
}

/// How a response body ends.
enum Framing {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    /// The chunked encoding was broken: the connection cannot be reused.
    Invalid,
}

impl Framing {
    /// Takes the body bytes at the start of `bytes`: how many belong to this body, and
    /// whether the body is complete.
    fn consume(&mut self, bytes: &[u8]) -> (usize, bool) {
        match self {
            Framing::Length(left) => {
                let take = (*left).min(bytes.len() as u64);
                *left -= take;
                (take as usize, *left == 0)
            }
            Framing::Chunked(c) => match c.feed(bytes) {
                Ok(Some(n)) => (n, true),
                Ok(None) => (bytes.len(), false),
                Err(()) => {
                    *self = Framing::Invalid;
                    (0, true)
                }
            },
            Framing::UntilClose => (bytes.len(), false),
            Framing::Invalid => (0, true),
        }
    }
}

/// Follows a chunked body byte by byte to find where it ends (the bytes are passed on as
/// they are; only the framing is read).
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
}

impl Chunked {
    /// `Ok(Some(n))`: the body ended after `n` bytes of `bytes`; `Ok(None)`: it goes on;
    /// `Err`: not valid chunked encoding.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Size => match (b as char).to_digit(16) {
                    Some(d) if self.digits < 15 => {
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    None if self.digits > 0 && (b == b';' || b == b' ' || b == b'\t') => {
                        self.state = Extension
                    }
                    None if self.digits > 0 && b == b'\r' => self.state = SizeLf,
                    _ => return Err(()),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err(()),
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let take = self.size.min((bytes.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr if b == b'\r' => self.state = DataLf,
                DataLf if b == b'\n' => {
                    self.state = Size;
                    self.digits = 0;
                }
                TrailerStart if b == b'\r' => self.state = FinalLf,
                TrailerStart | TrailerLine if b != b'\r' && b != b'\n' => self.state = TrailerLine,
                TrailerLine if b == b'\r' => self.state = TrailerLf,
                TrailerLf if b == b'\n' => self.state = TrailerStart,
                FinalLf if b == b'\n' => return Ok(Some(i + 1)),
                _ => return Err(()),
            }
            i += 1;
        }
        Ok(None)
    }
}

/// Idle upstream connections of this worker thread, by endpoint. A worker is one thread
/// with its own runtime, so the pool needs no lock and a connection never changes reactor.
#[derive(Default)]
struct Pool {
    idle: HashMap<SocketAddr, Vec<(TcpStream, Instant)>, foldhash::fast::RandomState>,
    /// When every endpoint's list was last cleared of expired connections.
    swept: Option<Instant>,
    /// Connections in `idle`, all endpoints together.
    count: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// The most recently used idle connection to `addr` that is still usable: not idle for too
/// long and with nothing to read. Readable while idle means the backend closed it or sent
/// something unasked; either way it is dropped. The check costs a system call only when the
/// reactor has seen the socket readable since its last read.
fn pool_take(addr: SocketAddr, now: Instant) -> Option<TcpStream> {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let pool = &mut *pool;
        let list = pool.idle.get_mut(&addr)?;
        while let Some((conn, since)) = list.pop() {
            pool.count -= 1;
            if now.duration_since(since) > POOL_IDLE_TIMEOUT {
                pool.count -= list.len();
                list.clear();
                return None;
            }
            // Peeks only if the reactor saw the socket readable since the last read.
            let mut cx = Context::from_waker(Waker::noop());
            let mut byte = [0u8; 1];
            if conn
                .poll_peek(&mut cx, &mut ReadBuf::new(&mut byte))
                .is_pending()
            {
                return Some(conn);
            }
        }
        None
    })
}

/// Pools `conn`, idle since `now` (the clock read at the request's start will do: idle
/// times are judged in tens of seconds), unless the thread already keeps `cap` connections.
fn pool_put(addr: SocketAddr, conn: TcpStream, now: Instant, cap: usize) {
    POOL.with(|p| {
        let mut pool = p.borrow_mut();
        let pool = &mut *pool;
        // Endpoints that left the config are never taken from again: their connections are
        // closed by a sweep of the whole pool every few seconds.
        if pool
            .swept
            .is_none_or(|t| now.duration_since(t) > POOL_SWEEP_EVERY)
        {
            pool.swept = Some(now);
            pool.idle.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) <= POOL_IDLE_TIMEOUT);
                !list.is_empty()
            });
            pool.count = pool.idle.values().map(Vec::len).sum();
        }
        let list = pool.idle.entry(addr).or_default();
        // The oldest connection is at the front: drop it once it has idled too long.
        if list
            .first()
            .is_some_and(|(_, since)| now.duration_since(*since) > POOL_IDLE_TIMEOUT)
        {
            list.remove(0);
            pool.count -= 1;
        }
        if pool.count < cap {
            list.push((conn, now));
            pool.count += 1;
        }
    })
}

/// A connection with bytes already read put back in front, for handing a TLS connection (which
/// has no `rewind` of its plaintext) to Pingora. Everything but reading goes to `inner`.
#[derive(Debug)]
pub struct Rewound {
    inner: Stream,
    unread: Vec<u8>,
    at: usize,
}

impl Rewound {
    pub fn new(inner: Stream, unread: Vec<u8>) -> Self {
        Rewound {
            inner,
            unread,
            at: 0,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.at < this.unread.len() {
            let n = buf.remaining().min(this.unread.len() - this.at);
            buf.put_slice(&this.unread[this.at..this.at + n]);
            this.at += n;
            if this.at == this.unread.len() {
                this.unread = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl Shutdown for Rewound {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(self.inner.as_mut()).await
    }
}

impl UniqueID for Rewound {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Rewound {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<pingora_core::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Rewound {
    fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for Rewound {
    fn get_proxy_digest(&self) -> Option<Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Rewound {
    fn get_socket_digest(&self) -> Option<Arc<pingora_core::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

/// Peeking is not offered (Pingora's HTTP/1 path does not need it).
impl Peek for Rewound {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn feed_all(body: &[u8], step: usize) -> Result<Option<usize>, ()> {
        let mut c = Chunked::default();
        let mut offset = 0;
        for part in body.chunks(step) {
            if let Some(n) = c.feed(part)? {
                return Ok(Some(offset + n));
            }
            offset += part.len();
        }
        Ok(None)
    }

    #[test]
    fn chunked_end_is_found_whatever_the_read_boundaries() {
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for step in 1..body.len() {
            assert_eq!(feed_all(body, step), Ok(Some(end)), "step {step}");
        }
        assert_eq!(feed_all(b"0\r\n\r\n", 1), Ok(Some(5)));
        assert_eq!(feed_all(b"5\r\nhel", 2), Ok(None));
    }

    #[test]
    fn broken_chunked_encoding_is_an_error() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\r\r",
        ] {
            assert_eq!(
                feed_all(bad, 1),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let head = |s: &str| ResponseHead::parse(s.as_bytes(), false).unwrap_or(None);
        let r = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").unwrap();
        assert!(matches!(r.framing, Framing::Length(3)) && r.reusable && !r.reframe);
        let r = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n").unwrap();
        assert!(matches!(r.framing, Framing::Chunked(_)));
        let r = head("HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert!(matches!(r.framing, Framing::UntilClose) && !r.client_keep_alive);
        let r = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").unwrap();
        assert!(!r.reusable && r.reframe && r.client_keep_alive);
        let r = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert!(matches!(r.framing, Framing::Length(0)) && r.reusable);
        let r = ResponseHead::parse(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true);
        assert!(matches!(r.unwrap().unwrap().framing, Framing::Length(0)));
        assert!(matches!(
            ResponseHead::parse(b"HTTP/1.1 200 OK\r\n", false),
            Ok(None)
        ));
        assert!(ResponseHead::parse(b"HTTP/1.1 2x0 OK\r\n\r\n", false).is_err());
        let r = head("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n");
        let r = r.unwrap();
        assert!(!r.reusable && r.reframe && r.client_keep_alive);
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").is_none()
        );
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n")
                .is_none()
        );
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n").is_none());
        assert!(
            !head("HTTP/1.1 200 OK\ncontent-length: 1\n\n")
                .unwrap()
                .canonical
        );
    }

    #[test]
    fn rebuilt_heads_apply_the_modifiers_in_spec_order() {
        let head = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Old: 1\r\nX-Keep: 2\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).unwrap();
        let hv = |v: &'static str| HeaderValue::from_static(v);
        let hn = |n: &'static str| HeaderName::from_static(n);
        let mods = HeaderMods {
            set: vec![(hn("x-old"), hv("set"))],
            add: vec![(hn("x-new"), hv("added"))],
            remove: vec![hn("x-keep")],
        };
        let edit = HeadEdit {
            mods: &[Some(&mods), None],
            first_line: None,
            host: None,
            drop_connection: false,
        };
        let out = rebuild_head(head, req.headers, &edit);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /a HTTP/1.1\r\nHost: x\r\nx-old: set\r\nx-new: added\r\n\r\n"
        );
    }

    /// A connection to `listener` and the listener's end of it.
    async fn connected(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (ours, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn the_pool_reuses_live_connections_and_sweeps_expired_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = listener.local_addr().unwrap();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kept = other.local_addr().unwrap();
        let t0 = Instant::now();

        let (a, _a_peer) = connected(&listener).await;
        pool_put(gone, a, t0, 8);
        let reused = pool_take(gone, t0);
        assert!(reused.is_some(), "a live idle connection is reused");

        // The backend closes it while idle: not handed out.
        let (a, a_peer) = connected(&listener).await;
        pool_put(gone, a, t0, 8);
        drop(a_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closed = pool_take(gone, t0);
        assert!(closed.is_none(), "a closed idle connection is dropped");

        // An endpoint nobody asks for again is swept once its connections expire.
        let (a, _a_peer) = connected(&listener).await;
        pool_put(gone, a, t0, 8);
        let later = t0 + POOL_IDLE_TIMEOUT + POOL_SWEEP_EVERY + Duration::from_secs(1);
        let (b, _b_peer) = connected(&other).await;
        pool_put(kept, b, later, 8);
        POOL.with(|p| {
            let pool = p.borrow();
            assert!(!pool.idle.contains_key(&gone), "expired endpoint swept");
            assert_eq!(pool.idle.get(&kept).map(Vec::len), Some(1));
            assert_eq!(pool.count, 1);
        });
        // The thread's cap holds over all endpoints; 0 keeps nothing.
        let (c, _c_peer) = connected(&listener).await;
        pool_put(gone, c, later, 1);
        assert!(pool_take(gone, later).is_none(), "over the cap: not pooled");
        let (b, _b_peer) = connected(&other).await;
        pool_put(kept, b, later, 0);
        assert!(
            pool_take(kept, later).is_some(),
            "the first one is still there"
        );
        assert!(pool_take(kept, later).is_none(), "cap 0: not pooled");
        POOL.with(|p| assert_eq!(p.borrow().count, 0));
    }

    #[test]
    fn only_plain_origin_form_targets_are_forwarded_as_they_came() {
        assert!(plain_target("/a/b?x=1&y=%20"));
        assert!(!plain_target("http://h/a"));
        assert!(!plain_target("*"));
        assert!(!plain_target("/a b"));
        assert!(!plain_target("/a\"b"));
        assert!(crlf_only(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!crlf_only(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert_eq!(parse_length(b"12"), Some(12));
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b""), None);
    }
}

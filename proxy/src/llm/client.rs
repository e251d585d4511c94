//! The AI gateway's upstream client: HTTP/1.1 over TCP or rustls, idle connections pooled per
//! host. Backends with a `ca_file`, and a JWKS URL with a `jwks_ca_file`, get their own client
//! (their own trust roots and pool).

use crate::llm::error;
use bytes::{Bytes, BytesMut};
use citoroute_llm::{LlmError, UpstreamRequest};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A client connection: plain TCP or TLS.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Connects to `http://` and `https://` URIs (SNI from the host, ALPN `http/1.1`), with
/// `TCP_NODELAY`: requests and answers are small and latency bound.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: Arc<rustls::ClientConfig>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<TokioIo<UpstreamIo>>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| bad("upstream URI has no host".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            if !https {
                return Ok(TokioIo::new(UpstreamIo::Plain(tcp)));
            }
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| bad(format!("{host} is not a valid TLS server name")))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(UpstreamIo::Tls(Box::new(tls))))
        })
    }
}

/// An upstream client (cheap to clone: the pool is shared).
pub type UpstreamClient = hyper_util::client::legacy::Client<Connector, Full<Bytes>>;

fn build(tls: Arc<rustls::ClientConfig>) -> UpstreamClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(Connector { tls })
}

/// Upstream clients of one trust configuration, one per thread. A pooled connection is driven
/// by a task on the runtime that opened it; Pingora runs one runtime per worker thread, so a
/// pool shared by all of them would have a request on one thread wake the connection's task on
/// another (and back) each time.
#[derive(Clone)]
pub struct Clients {
    /// 0 for the system roots alone; else a hash of the extra CA bundle, so reloads of the
    /// same `ca_file` reuse the same per-thread pools.
    id: u64,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").field("id", &self.id).finish()
    }
}

impl Clients {
    /// This thread's client.
    pub fn get(&self) -> UpstreamClient {
        thread_local! {
            static CLIENTS: RefCell<HashMap<u64, UpstreamClient>> = RefCell::new(HashMap::new());
        }
        CLIENTS.with(|c| {
            c.borrow_mut()
                .entry(self.id)
                .or_insert_with(|| build(self.tls.clone()))
                .clone()
        })
    }
}

/// Clients trusting the system roots.
pub fn default_clients() -> Clients {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    CLIENTS
        .get_or_init(|| Clients {
            id: 0,
            tls: tls_config(crate::upstream_tls::system_roots().clone()),
        })
        .clone()
}

/// Clients trusting the system roots plus every certificate in the PEM file `ca_file`.
pub fn clients_with_ca(ca_file: &str) -> Result<Clients, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("cannot read {ca_file}: {e}"))?;
    let mut roots = crate::upstream_tls::system_roots().clone();
    let mut added = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{ca_file}: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{ca_file}: not a usable CA certificate: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err(format!("{ca_file}: no PEM certificate in it"));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    pem.hash(&mut hasher);
    Ok(Clients {
        id: hasher.finish() | 1,
        tls: tls_config(roots),
    })
}

fn tls_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Sends one upstream request. Dropping the returned response (or its body) before the end
/// closes that connection, which is how a client disconnect cancels the provider's work.
pub async fn send(
    client: &UpstreamClient,
    req: UpstreamRequest,
) -> Result<hyper::Response<Incoming>, LlmError> {
    let authority = req.uri.authority().cloned();
    let len = req.body.len();
    let mut request = hyper::Request::new(Full::new(req.body));
    *request.method_mut() = req.method;
    *request.uri_mut() = req.uri;
    *request.headers_mut() = req.headers;
    request
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    client.request(request).await.map_err(|e| {
        let mut msg = format!(
            "upstream {} failed: {e}",
            authority.as_ref().map(|a| a.as_str()).unwrap_or("")
        );
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        error(502, "api_error", "upstream_unavailable", msg)
    })
}

/// Reads a whole body, refusing more than `cap` bytes.
pub async fn read_all(mut body: Incoming, cap: usize) -> Result<Bytes, LlmError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| LlmError::bad_upstream(format!("reading upstream body: {e}")))?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > cap {
                return Err(LlmError::bad_upstream("upstream body too large"));
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out.freeze())
}

/// `GET url` with `clients` (their trust roots): the body of a 200 answer, at most `cap`
/// bytes, within `wait`. For documents the gateway fetches itself (a JWKS).
pub async fn get(
    clients: &Clients,
    url: &http::Uri,
    cap: usize,
    wait: Duration,
) -> Result<Bytes, String> {
    let fetch = async {
        let mut req = hyper::Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = url.clone();
        req.headers_mut().insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json"),
        );
        let resp = clients.get().request(req).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
        if resp.status() != http::StatusCode::OK {
            return Err(format!("answered {}", resp.status()));
        }
        read_all(resp.into_body(), cap).await.map_err(|e| e.message)
    };
    tokio::time::timeout(wait, fetch)
        .await
        .map_err(|_| format!("no answer within {wait:?}"))?
}

//! The SNI router for ports that carry TLS listeners (TLSRoute): it reads the ClientHello
//! without consuming it, then passes the raw bytes through to a backend, terminates and
//! forwards the plaintext, or terminates and serves HTTPS (an HTTPS listener sharing the port).

use crate::backend::now_nanos;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::router::{Router, TlsDecision, TlsRouteTarget};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use citoroute_core::TriedSet;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Peek, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A slow client may take this long to send its ClientHello before we give up on it.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS records carry at most 16 KiB of plaintext; a ClientHello record is never larger.
const MAX_RECORD: usize = 16 * 1024 + 256;

pub struct TlsMux {
    pub port: u16,
    pub router: Arc<ArcSwap<Router>>,
    /// Terminates for HTTPS listeners: offers h2 and http/1.1 by ALPN.
    pub acceptor: Acceptor,
    /// Terminates for TLS listeners: no ALPN, the bytes inside are not ours to interpret.
    pub raw_acceptor: Acceptor,
    pub http: Arc<HttpProxy<Engine>>,
    /// HTTP/1.1 inside terminated HTTPS, before `http`.
    pub fast: crate::h1_proxy::H1Proxy,
    pub metrics: Arc<Metrics>,
}

/// Reads the SNI from the first TLS record without consuming it. `Ok(None)`: no SNI sent.
async fn peek_sni(stream: &mut L4Stream) -> std::io::Result<Option<String>> {
    let mut head = [0u8; 5];
    stream.try_peek(&mut head).await?;
    if head[0] != 22 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a TLS handshake",
        ));
    }
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    if len == 0 || len > MAX_RECORD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad TLS record length",
        ));
    }
    let mut record = vec![0u8; 5 + len];
    stream.try_peek(&mut record).await?;
    // rustls parses the ClientHello; we only look at it and never answer from this acceptor.
    let mut acceptor = rustls::server::Acceptor::default();
    let mut cursor = std::io::Cursor::new(&record[..]);
    acceptor.read_tls(&mut cursor)?;
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(accepted.client_hello().server_name().map(str::to_string)),
        Ok(None) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "ClientHello spans more than one record",
        )),
        Err((e, _)) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        )),
    }
}

/// Connects to one endpoint of the target's weighted backends; returns the backend's name too.
async fn connect(target: &TlsRouteTarget) -> (Arc<str>, Option<tokio::net::TcpStream>) {
    let Some(backend) = target
        .picker
        .as_ref()
        .and_then(|p| target.backends.get(p.pick(fastrand::u64(..))))
    else {
        return (Arc::from(""), None);
    };
    let Some(set) = backend.set.clone() else {
        return (backend.name.clone(), None);
    };
    let stream = connect_set(target, &set).await;
    (backend.name.clone(), stream)
}

async fn connect_set(
    target: &TlsRouteTarget,
    set: &crate::backend::BackendSet,
) -> Option<tokio::net::TcpStream> {
    let mut tried = TriedSet::new();
    let connect_timeout = set.connect_timeout_or_default();
    for _ in 0..3 {
        let i = set.pick(None, &tried, now_nanos())?;
        tried.insert(i);
        let ep = &set.endpoints[i];
        let admission = ep
            .breaker
            .as_ref()
            .map(|b| (b.clone(), b.admit(now_nanos())));
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(ep.addr)).await {
            Ok(Ok(s)) => {
                if let Some((b, a)) = admission {
                    b.on_success(a, now_nanos());
                }
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            _ => {
                if let Some((b, a)) = admission {
                    b.on_failure(a, now_nanos());
                }
                tracing::warn!(route = %target.route, endpoint = %ep.label, "TLS route backend unreachable");
            }
        }
    }
    None
}

/// A stream that counts the bytes read from it, so that a relay ended by an error (e.g. a
/// TLS peer closing without close_notify) still reports what it moved.
struct Counted<S> {
    inner: S,
    read: u64,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Relays both ways until either side closes or the server shuts down; returns the bytes
/// read from the client and from the upstream.
async fn pipe<A, B>(client: A, upstream: B, shutdown: &ShutdownWatch) -> (u64, u64)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut client = Counted {
        inner: client,
        read: 0,
    };
    let mut upstream = Counted {
        inner: upstream,
        read: 0,
    };
    let mut shutdown = shutdown.clone();
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = shutdown.changed() => {}
    }
    let _ = upstream.shutdown().await;
    let _ = client.shutdown().await;
    (client.read, upstream.read)
}

impl TlsMux {
    /// Connects and relays one TLSRoute connection, counting it.
    async fn relay<A>(
        &self,
        client: A,
        target: &TlsRouteTarget,
        mode: &str,
        shutdown: &ShutdownWatch,
    ) where
        A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let m = &self.metrics;
        let (backend, upstream) = connect(target).await;
        let route = target.route.as_ref();
        let Some(upstream) = upstream else {
            m.tls_connections
                .with_label_values(&[route, &backend, mode, "upstream_unreachable"])
                .inc();
            return;
        };
        m.tls_connections
            .with_label_values(&[route, &backend, mode, "ok"])
            .inc();
        let active = m.tls_active.with_label_values(&[route]);
        active.inc();
        let (up, down) = pipe(client, upstream, shutdown).await;
        active.dec();
        m.tls_bytes
            .with_label_values(&[route, "downstream_to_upstream"])
            .inc_by(up);
        m.tls_bytes
            .with_label_values(&[route, "upstream_to_downstream"])
            .inc_by(down);
    }

    fn count(&self, route: &str, mode: &str, outcome: &str) {
        self.metrics
            .tls_connections
            .with_label_values(&[route, "", mode, outcome])
            .inc();
    }
}

#[async_trait]
impl ServerApp for TlsMux {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut l4 = *stream.into_any().downcast::<L4Stream>().ok()?;
        let sni = match tokio::time::timeout(HELLO_TIMEOUT, peek_sni(&mut l4)).await {
            Ok(Ok(sni)) => sni,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, port = self.port, "not a usable ClientHello");
                return None;
            }
            Err(_) => return None,
        };
        let decision = self.router.load().route_tls(self.port, sni.as_deref());
        match decision {
            TlsDecision::Reject => {
                tracing::debug!(sni = ?sni, port = self.port, "no TLS listener or route for this name");
                self.count("", "", "no_route");
                None
            }
            TlsDecision::Passthrough(target) => {
                self.relay(l4, &target, "passthrough", shutdown).await;
                None
            }
            TlsDecision::Terminate(target) => {
                let Ok(tls) = self.raw_acceptor.tls_handshake(l4).await else {
                    self.count(&target.route, "terminate", "handshake_failed");
                    return None;
                };
                self.relay(tls, &target, "terminate", shutdown).await;
                None
            }
            TlsDecision::Http => {
                let tls = self.acceptor.tls_handshake(l4).await.ok()?;
                crate::https::serve(&self.fast, &self.http, Box::new(tls), shutdown).await
            }
        }
    }
}

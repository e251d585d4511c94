//! HTTP over TLS, once the handshake is done: HTTP/1.1 goes through the plain path
//! ([`crate::h1_proxy`]) first, h2 and whatever that path hands off go to Pingora's engine.

use crate::engine::Engine;
use crate::h1_proxy::{ConnInfo, H1Proxy, Rewound, Served};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{ALPN, Stream};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::Arc;

/// Serves one TLS-terminated HTTP connection until it ends.
pub async fn serve(
    fast: &H1Proxy,
    http: &Arc<HttpProxy<Engine>>,
    mut stream: Stream,
    shutdown: &ShutdownWatch,
) -> Option<Stream> {
    if stream.selected_alpn_proto() != Some(ALPN::H2) {
        let conn = ConnInfo::of(&*stream);
        match fast.serve(&mut stream, &conn, shutdown).await {
            Served::Closed => return None,
            Served::HandOff(unread) if unread.is_empty() => {}
            Served::HandOff(unread) => stream = Box::new(Rewound::new(stream, unread)),
        }
    }
    // Keep-alive: the HTTP app hands the connection back after each request.
    let mut next = stream;
    loop {
        next = http.process_new(next, shutdown).await?;
    }
}

/// The app of ports whose listeners are all HTTPS: Pingora's TLS listener hands it each
/// connection after the handshake.
pub struct HttpsMux {
    pub fast: H1Proxy,
    pub http: Arc<HttpProxy<Engine>>,
}

#[async_trait]
impl ServerApp for HttpsMux {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        serve(&self.fast, &self.http, stream, shutdown).await
    }
}

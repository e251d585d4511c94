//! Plaintext HTTP ports: tell HTTP/1 from h2c (prior knowledge) by the first bytes. Pingora's
//! own h2c detection waits for a full 24-byte preface, so a shorter HTTP/1 request (e.g.
//! `GET / HTTP/1.0` plus a blank line) would hang; here the first byte that departs from the
//! preface decides.

use crate::engine::Engine;
use crate::h1_proxy::{ConnInfo, H1Proxy, Served};
use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a new connection may stay silent before it is closed.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PlainMux {
    /// Plain HTTP/1.1 requests, until one needs `h1`.
    pub fast: H1Proxy,
    /// HTTP/1.x only.
    pub h1: Arc<HttpProxy<Engine>>,
    /// h2c prior knowledge.
    pub h2c: Arc<HttpProxy<Engine>>,
}

/// Reads until the bytes depart from the h2 preface or match all of it; returns what was read
/// and whether it is h2c. `None`: the client sent nothing in time or closed.
async fn sniff(l4: &mut L4Stream) -> Option<(Vec<u8>, bool)> {
    let mut buf = [0u8; 24];
    let mut n = 0;
    loop {
        let read = tokio::time::timeout(FIRST_BYTES_TIMEOUT, l4.read(&mut buf[n..])).await;
        match read {
            Ok(Ok(0)) if n == 0 => return None,
            Ok(Ok(0)) => return Some((buf[..n].to_vec(), false)),
            Ok(Ok(k)) => n += k,
            _ => return None,
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Some((buf[..n].to_vec(), false));
        }
        if n == H2_PREFACE.len() {
            return Some((buf.to_vec(), true));
        }
    }
}

#[async_trait]
impl ServerApp for PlainMux {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut l4 = *stream.into_any().downcast::<L4Stream>().ok()?;
        let (seen, h2) = sniff(&mut l4).await?;
        l4.rewind(&seen);
        let app = if h2 {
            &self.h2c
        } else {
            let conn = ConnInfo::of(&l4);
            match self.fast.serve(&mut l4, &conn, shutdown).await {
                Served::Closed => return None,
                Served::HandOff(unread) => l4.rewind(&unread),
            }
            &self.h1
        };
        // Keep-alive: the HTTP app hands the connection back after each request.
        let mut next: Stream = Box::new(l4);
        loop {
            next = app.process_new(next, shutdown).await?;
        }
    }
}

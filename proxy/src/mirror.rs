//! RequestMirror: a copy of the request (head and body) goes to the mirror backend, fire and
//! forget; its answer is discarded and never delays the real request. The body is copied as it
//! streams through and the copy is sent once the body has ended; a body larger than
//! [`MAX_MIRROR_BODY`] is not mirrored at all (a truncated copy would mislead the mirror).

use crate::backend::BackendSet;
use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use pingora_http::RequestHeader;
use std::time::Duration;

/// The largest request body copied to mirrors.
pub const MAX_MIRROR_BODY: usize = 1024 * 1024;

pub struct MirrorClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for MirrorClient {
    fn default() -> Self {
        Self::new()
    }
}

/// A mirror request waiting for the request body to end.
#[derive(Debug)]
pub struct PendingMirror {
    head: http::request::Parts,
}

/// Mirrors of one request and the body copied so far.
#[derive(Debug, Default)]
pub struct MirrorCopies {
    pending: Vec<PendingMirror>,
    body: BytesMut,
}

impl MirrorCopies {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Copies a body chunk; gives the mirrors up when the body outgrows the limit.
    pub fn add_chunk(&mut self, chunk: &[u8]) {
        if self.pending.is_empty() {
            return;
        }
        if self.body.len() + chunk.len() > MAX_MIRROR_BODY {
            tracing::debug!("request body over {MAX_MIRROR_BODY} bytes: not mirrored");
            self.pending.clear();
            self.body = BytesMut::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    /// Sends every pending mirror with the body copied so far.
    pub fn finish(&mut self, client: &MirrorClient) {
        let body = std::mem::take(&mut self.body).freeze();
        for m in self.pending.drain(..) {
            client.dispatch(m.head, body.clone());
        }
    }
}

impl MirrorClient {
    pub fn new() -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        conn.set_nodelay(true);
        MirrorClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(conn),
        }
    }

    /// The mirror's request head: same method, path, query and headers, the (possibly
    /// rewritten) host, one endpoint of the mirror backend. None when it has no endpoint, or
    /// when it takes TLS: copies go over plain HTTP, and a backend under a BackendTLSPolicy
    /// must never receive a request in cleartext.
    pub fn prepare(backend: &BackendSet, req: &RequestHeader, host: &str) -> Option<PendingMirror> {
        if backend.endpoints.is_empty() || backend.uses_tls() {
            return None;
        }
        let ep = &backend.endpoints[fastrand::usize(..backend.endpoints.len())];
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let uri = format!("http://{}{pq}", ep.addr)
            .parse::<http::Uri>()
            .ok()?;
        let mut builder = http::Request::builder().method(req.method.clone()).uri(uri);
        for (n, v) in req.headers.iter() {
            // Framing is redone for the buffered body.
            if n != http::header::HOST
                && n != http::header::CONTENT_LENGTH
                && n != http::header::TRANSFER_ENCODING
            {
                builder = builder.header(n, v);
            }
        }
        builder = builder.header(http::header::HOST, host);
        let (head, ()) = builder.body(()).ok()?.into_parts();
        Some(PendingMirror { head })
    }

    /// Starts mirrors: sent at once when the request has no body, else kept in `copies`
    /// until the body has streamed through.
    pub fn start(&self, pending: PendingMirror, has_body: bool, copies: &mut MirrorCopies) {
        if has_body {
            copies.pending.push(pending);
        } else {
            self.dispatch(pending.head, Bytes::new());
        }
    }

    fn dispatch(&self, head: http::request::Parts, body: Bytes) {
        let request = http::Request::from_parts(head, Full::new(body));
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PendingMirror {
        let (head, ()) = http::Request::builder()
            .uri("http://127.0.0.1:9/")
            .body(())
            .unwrap_or_default()
            .into_parts();
        PendingMirror { head }
    }

    #[test]
    fn body_is_copied_until_the_limit_then_given_up() {
        let mut c = MirrorCopies::default();
        c.add_chunk(b"ignored: nothing pending");
        assert!(c.body.is_empty());
        c.pending.push(pending());
        c.add_chunk(b"abc");
        c.add_chunk(b"def");
        assert_eq!(&c.body[..], b"abcdef");
        c.add_chunk(&vec![0u8; MAX_MIRROR_BODY]);
        assert!(c.is_empty(), "an oversized body must drop the mirrors");
        assert!(c.body.is_empty());
    }
}

//! RequestMirror: a copy of the request head goes to the mirror backend, fire and forget; its
//! answer is discarded and never delays the real request.

use crate::backend::BackendSet;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use pingora_http::RequestHeader;
use std::time::Duration;

pub struct MirrorClient {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for MirrorClient {
    fn default() -> Self {
        Self::new()
    }
}

impl MirrorClient {
    pub fn new() -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(Duration::from_secs(2)));
        MirrorClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(conn),
        }
    }

    pub fn send(&self, backend: &BackendSet, req: &RequestHeader, host: &str) {
        if backend.endpoints.is_empty() {
            return;
        }
        let ep = &backend.endpoints[fastrand::usize(..backend.endpoints.len())];
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Ok(uri) = format!("http://{}{pq}", ep.addr).parse::<http::Uri>() else {
            return;
        };
        let mut builder = http::Request::builder().method(req.method.clone()).uri(uri);
        for (n, v) in req.headers.iter() {
            if n != http::header::HOST
                && n != http::header::CONTENT_LENGTH
                && n != http::header::TRANSFER_ENCODING
            {
                builder = builder.header(n, v);
            }
        }
        builder = builder.header(http::header::HOST, host);
        let Ok(request) = builder.body(Empty::<Bytes>::new()) else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.request(request)).await;
        });
    }
}

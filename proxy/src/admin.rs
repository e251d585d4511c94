//! The admin listener: `/metrics` (Prometheus text), `/healthz` (process alive), `/readyz`
//! (a config is loaded and serving), `/config` (the config now serving, as TOML).

use crate::backend::now_nanos;
use crate::reload::Reloader;
use bytes::Bytes;
use citoroute_core::BreakerState;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn handle(state: &Reloader, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => reply(200, "text/plain", "ok\n"),
        "/readyz" => {
            let router = state.router.load();
            reply(
                200,
                "text/plain",
                format!("ready generation={}\n", router.generation),
            )
        }
        "/metrics" => {
            let router = state.router.load();
            let now = now_nanos();
            state.metrics.breaker_state.reset();
            for set in router.backends.values() {
                for ep in &set.endpoints {
                    if let Some(b) = &ep.breaker {
                        let v = match b.state(now) {
                            BreakerState::Closed => 0,
                            BreakerState::Open => 1,
                            BreakerState::HalfOpen => 2,
                        };
                        state
                            .metrics
                            .breaker_state
                            .with_label_values(&[&set.name, &ep.label])
                            .set(v);
                    }
                }
            }
            reply(200, "text/plain; version=0.0.4", state.metrics.render())
        }
        "/config" => match state.config().to_toml() {
            Ok(t) => reply(200, "application/toml", t),
            Err(e) => reply(500, "text/plain", e.to_string()),
        },
        _ => reply(404, "text/plain", "not found\n"),
    }
}

/// Serves the admin endpoints until the process exits.
pub async fn serve(addr: SocketAddr, state: Arc<Reloader>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = handle(&state, req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

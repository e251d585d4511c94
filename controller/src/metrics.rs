//! Prometheus metrics of the controller, served as text on `/metrics`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run (one per debounced batch of cluster events).
    pub reconciles: IntCounter,
    /// Errors by reason (see [`crate::error::Error::reason`]).
    pub errors: IntCounterVec,
    /// Time spent in the pure translation.
    pub translate_seconds: Histogram,
    /// Writes issued to the API server, by kind of object.
    pub writes: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::new(
            "citoroute_controller_reconciles_total",
            "Reconciles run (one per debounced batch of cluster events).",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "citoroute_controller_errors_total",
                "Reconcile errors by reason.",
            ),
            &["reason"],
        )?;
        let translate_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "citoroute_controller_translate_duration_seconds",
                "Time spent translating a snapshot.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )?;
        let writes = IntCounterVec::new(
            Opts::new(
                "citoroute_controller_writes_total",
                "Writes issued to the API server, by kind.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(translate_seconds.clone()))?;
        registry.register(Box::new(writes.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            errors,
            translate_seconds,
            writes,
        })
    }

    /// Counts one error under its reason.
    pub fn error(&self, e: &crate::error::Error) {
        self.errors.with_label_values(&[e.reason()]).inc();
    }

    /// Counts one write of `kind`.
    pub fn write(&self, kind: &str) {
        self.writes.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Serves `/metrics` and `/healthz` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = match req.uri().path() {
                    "/metrics" => reply(200, metrics.render()),
                    "/healthz" => reply(200, "ok\n"),
                    _ => reply(404, "not found\n"),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

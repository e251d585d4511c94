//! Prometheus metrics, all prefixed `citoroute_`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub breaker_state: IntGaugeVec,
    pub config_generation: IntGauge,
    pub config_reloads: IntCounter,
    pub config_reload_failures: IntCounter,
    pub listeners_pending_restart: IntGauge,
    /// AI gateway: one per upstream attempt (failed ones included, with their status or
    /// `connect_error` / `timeout`) and per request refused before one (401, 403, 413, 429).
    pub llm_requests: IntCounterVec,
    pub llm_tokens: IntCounterVec,
    pub llm_duration: HistogramVec,
    pub llm_ttft: HistogramVec,
    /// TLS listener connections (TLSRoute passthrough/terminate) by route, backend, mode and
    /// outcome; bytes by route and direction; connections open now by route.
    pub tls_connections: IntCounterVec,
    pub tls_bytes: IntCounterVec,
    pub tls_active: IntGaugeVec,
    /// Requests that matched no route (route and backend labels empty).
    unmatched: RequestMetrics,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error caught by tests.
    r.unwrap_or_else(|e| panic!("metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "citoroute_requests_total",
                "Requests by route, backend and response status.",
            ),
            &["route", "backend", "code"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "citoroute_request_duration_seconds",
                "Time from request head received to response finished.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        ));
        let upstream_errors = must(IntCounterVec::new(
            Opts::new(
                "citoroute_upstream_errors_total",
                "Failed upstream attempts by backend and kind (connect, timeout, proxy).",
            ),
            &["backend", "kind"],
        ));
        let breaker_state = must(IntGaugeVec::new(
            Opts::new(
                "citoroute_circuit_breaker_state",
                "Endpoint breaker state: 0 closed, 1 open, 2 half-open.",
            ),
            &["backend", "endpoint"],
        ));
        let config_generation = must(IntGauge::new(
            "citoroute_config_generation",
            "Generation of the config now serving.",
        ));
        let config_reloads = must(IntCounter::new(
            "citoroute_config_reloads_total",
            "Configs compiled and swapped in.",
        ));
        let config_reload_failures = must(IntCounter::new(
            "citoroute_config_reload_failures_total",
            "Configs refused; the last good one kept serving.",
        ));
        let listeners_pending_restart = must(IntGauge::new(
            "citoroute_listeners_pending_restart",
            "1 when the config asks for listener sockets the process did not open at start.",
        ));
        let llm_requests = must(IntCounterVec::new(
            Opts::new(
                "citoroute_llm_requests_total",
                "AI gateway requests by consumer, backend, model, provider and status code.",
            ),
            &["consumer", "backend", "model", "provider", "code"],
        ));
        let llm_tokens = must(IntCounterVec::new(
            Opts::new(
                "citoroute_llm_tokens_total",
                "Tokens reported by LLM providers, by consumer, backend, model, provider and type (input, output).",
            ),
            &["consumer", "backend", "model", "provider", "type"],
        ));
        let llm_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0,
            320.0,
        ];
        let llm_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "citoroute_llm_request_duration_seconds",
                "AI gateway requests from head received to the last byte sent.",
            )
            .buckets(llm_buckets.clone()),
            &["backend", "model", "provider"],
        ));
        let llm_ttft = must(HistogramVec::new(
            HistogramOpts::new(
                "citoroute_llm_time_to_first_token_seconds",
                "From sending to the provider to the first content token (streams) or the whole answer.",
            )
            .buckets(llm_buckets),
            &["backend", "model", "provider"],
        ));
        let tls_connections = must(IntCounterVec::new(
            Opts::new(
                "citoroute_tls_connections_total",
                "Connections on TLS listeners by TLSRoute, backend, mode (passthrough, terminate) and outcome (ok, no_route, handshake_failed, upstream_unreachable).",
            ),
            &["route", "backend", "mode", "outcome"],
        ));
        let tls_bytes = must(IntCounterVec::new(
            Opts::new(
                "citoroute_tls_bytes_total",
                "Bytes relayed for TLSRoutes, by direction (downstream_to_upstream, upstream_to_downstream).",
            ),
            &["route", "direction"],
        ));
        let tls_active = must(IntGaugeVec::new(
            Opts::new(
                "citoroute_tls_active_connections",
                "TLSRoute connections open now.",
            ),
            &["route"],
        ));
        for c in [
            Box::new(llm_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tls_connections.clone()),
            Box::new(tls_bytes.clone()),
            Box::new(tls_active.clone()),
            Box::new(llm_tokens.clone()),
            Box::new(llm_duration.clone()),
            Box::new(llm_ttft.clone()),
            Box::new(requests.clone()),
            Box::new(duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(breaker_state.clone()),
            Box::new(config_generation.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_reload_failures.clone()),
            Box::new(listeners_pending_restart.clone()),
        ] {
            must(registry.register(c));
        }
        let unmatched = RequestMetrics::with_vecs(&requests, &duration, "", "");
        Metrics {
            registry,
            unmatched,
            requests,
            duration,
            upstream_errors,
            breaker_state,
            config_generation,
            config_reloads,
            config_reload_failures,
            listeners_pending_restart,
            llm_requests,
            llm_tokens,
            llm_duration,
            llm_ttft,
            tls_connections,
            tls_bytes,
            tls_active,
        }
    }

    /// Counts a request by route, backend and status (labelled lookups; the request path uses
    /// the [`RequestMetrics`] handles its router resolved instead).
    pub fn observe_request(&self, route: &str, backend: &str, status: u16, elapsed: Duration) {
        let code = status.to_string();
        self.requests
            .with_label_values(&[route, backend, code.as_str()])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// The handles for requests that matched no route.
    pub fn unmatched(&self) -> &RequestMetrics {
        &self.unmatched
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Status codes whose request counter a [`RequestMetrics`] keeps a handle for; others take the
/// labelled lookup.
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

/// The request metrics of one (route, backend) pair, resolved when the router is compiled so
/// that a request neither hashes label values nor formats its status code. Every series is
/// still created on first use, so `/metrics` shows exactly what the labelled lookups showed.
pub struct RequestMetrics {
    route: Arc<str>,
    backend: Arc<str>,
    requests: IntCounterVec,
    duration_vec: HistogramVec,
    duration: OnceLock<Histogram>,
    by_code: [OnceLock<IntCounter>; COMMON_CODES.len()],
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics")
            .field("route", &self.route)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl RequestMetrics {
    pub fn new(metrics: &Metrics, route: &str, backend: &str) -> RequestMetrics {
        RequestMetrics::with_vecs(&metrics.requests, &metrics.duration, route, backend)
    }

    fn with_vecs(
        requests: &IntCounterVec,
        duration: &HistogramVec,
        route: &str,
        backend: &str,
    ) -> RequestMetrics {
        RequestMetrics {
            route: route.into(),
            backend: backend.into(),
            requests: requests.clone(),
            duration_vec: duration.clone(),
            duration: OnceLock::new(),
            by_code: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one finished request; the same series as [`Metrics::observe_request`].
    pub fn observe(&self, status: u16, elapsed: Duration) {
        match COMMON_CODES.iter().position(|&c| c == status) {
            Some(i) => self.by_code[i].get_or_init(|| self.counter(status)).inc(),
            None => self.counter(status).inc(),
        }
        self.duration
            .get_or_init(|| self.duration_vec.with_label_values(&[&*self.route]))
            .observe(elapsed.as_secs_f64());
    }

    fn counter(&self, status: u16) -> IntCounter {
        let code = status.to_string();
        self.requests
            .with_label_values(&[&*self.route, &*self.backend, code.as_str()])
    }
}

//! Backends over real sockets: weighted splits, unresolved and empty backends, timeouts,
//! connect retries and circuit breaking.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_and_missing_backends() {
    let a = Backend::start("a", Proto::H1).await;
    let b = Backend::start("b", Proto::H1).await;
    let z = Backend::start("z", Proto::H1).await;
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.a]
endpoints = ["@A"]

[backends.b]
endpoints = ["@B"]

[backends.z]
endpoints = ["@Z"]

[backends.empty]
endpoints = []

[[http_routes]]
name = "weights"
listeners = ["web"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/w" } }]
backends = [{ backend = "a", weight = 3 }, { backend = "b", weight = 1 }, { backend = "z", weight = 0 }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/unresolved" } }]
backends = [{ weight = 1 }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/none" } }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/empty" } }]
backends = [{ backend = "empty" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/all-zero" } }]
backends = [{ backend = "a", weight = 0 }, { backend = "b", weight = 0 }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@A", a.addr.to_string()),
            ("@B", b.addr.to_string()),
            ("@Z", z.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start(&body, &[port]).await;

    const N: usize = 2000;
    const CLIENTS: usize = 4;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let mut conn = H1Conn::connect(addr(port)).await.unwrap();
            let mut counts = [0usize; 3];
            for _ in 0..N / CLIENTS {
                let r = conn.get("w.test", "/w").await.unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                match r.header("x-backend") {
                    Some("a") => counts[0] += 1,
                    Some("b") => counts[1] += 1,
                    other => panic!("unexpected backend {other:?}"),
                }
            }
            counts
        }));
    }
    let (mut na, mut nb) = (0, 0);
    for t in tasks {
        let c = t.await.unwrap();
        na += c[0];
        nb += c[1];
    }
    assert_eq!(na + nb, N);
    // Binomial(2000, 0.75): mean 1500, sigma 19.4; allow 4 sigma.
    let sigma = (N as f64 * 0.75 * 0.25).sqrt();
    let off = (na as f64 - N as f64 * 0.75).abs();
    assert!(
        off <= 4.0 * sigma,
        "3:1 split gave {na}:{nb} ({off:.0} off, 4 sigma = {:.0})",
        4.0 * sigma
    );
    assert_eq!(z.seen_count(), 0, "the weight-0 backend was chosen");
    assert_eq!(a.seen_count(), na);
    assert_eq!(b.seen_count(), nb);

    for (path, code) in [
        ("/unresolved", 500),
        ("/none", 500),
        ("/empty", 503),
        ("/all-zero", 500),
    ] {
        let r = h1_get(addr(port), "w.test", path).await.unwrap();
        assert_eq!(r.status, code, "{path}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_504_quickly() {
    let echo = Backend::start("echo", Proto::H1).await;
    let echo_h2 = Backend::start("echo-h2", Proto::H2c).await;
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.echo]
endpoints = ["@E"]

[backends.echo-h2]
endpoints = ["@H2"]
protocol = "h2c"

[[http_routes]]
name = "timeouts"
listeners = ["web"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/slow" } }]
timeouts = { request = "500ms" }
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/attempt" } }]
timeouts = { backend_request = "300ms" }
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/h2-slow" } }]
timeouts = { request = "500ms" }
backends = [{ backend = "echo-h2" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@E", echo.addr.to_string()),
            ("@H2", echo_h2.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start(&body, &[port]).await;

    // Fast enough: served.
    let r = h1_send(
        addr(port),
        h1_req("GET", "t.test", "/slow")
            .header("x-echo-sleep-ms", "50")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);

    for (path, limit_ms) in [("/slow", 500u64), ("/attempt", 300), ("/h2-slow", 500)] {
        let start = Instant::now();
        let r = h1_send(
            addr(port),
            h1_req("GET", "t.test", path)
                .header("x-echo-sleep-ms", "5000")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
        let took = start.elapsed();
        assert_eq!(r.status, 504, "{path}: {}", r.text());
        assert!(
            took >= Duration::from_millis(limit_ms - 50) && took < Duration::from_millis(2500),
            "{path}: 504 after {took:?} (timeout {limit_ms} ms)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_on_another_endpoint() {
    let good = Backend::start("good", Proto::H1).await;
    let dead = closed_addr();
    let port = free_port();
    // No breaker here: every second pick lands on the dead endpoint and must be retried.
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.flaky]
endpoints = ["@DEAD", "@GOOD"]
circuit_breaker = { enabled = false }

[[http_routes]]
name = "retry"
listeners = ["web"]

[[http_routes.rules]]
backends = [{ backend = "flaky" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@DEAD", dead.to_string()),
            ("@GOOD", good.addr.to_string()),
        ],
    );
    let proxy = Proxy::start(&body, &[port]).await;
    let mut conn = H1Conn::connect(addr(port)).await.unwrap();
    for i in 0..30 {
        let r = match conn.get("r.test", &format!("/r{i}")).await {
            Ok(r) => r,
            Err(_) => {
                // The proxy may close a connection after an error; never after a success.
                conn = H1Conn::connect(addr(port)).await.unwrap();
                conn.get("r.test", &format!("/r{i}")).await.unwrap()
            }
        };
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.backend(), "good");
    }
    let connect_errors = proxy
        .metric(
            "citoroute_upstream_errors_total",
            &[("backend", "flaky"), ("kind", "connect")],
        )
        .await;
    assert!(
        connect_errors >= 5.0,
        "the dead endpoint was hardly tried ({connect_errors} connect errors)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_and_skips_the_dead_endpoint() {
    let good = Backend::start("good", Proto::H1).await;
    let dead = closed_addr();
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.cb]
endpoints = ["@DEAD", "@GOOD"]
circuit_breaker = { consecutive_failures = 2, open_for = "60s" }

[[http_routes]]
name = "breaker"
listeners = ["web"]

[[http_routes.rules]]
backends = [{ backend = "cb" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@DEAD", dead.to_string()),
            ("@GOOD", good.addr.to_string()),
        ],
    );
    let proxy = Proxy::start(&body, &[port]).await;
    let dead_label = dead.to_string();
    let good_label = good.addr.to_string();
    let state = |text: &str, ep: &str| {
        metric_value(
            text,
            "citoroute_circuit_breaker_state",
            &[("backend", "cb"), ("endpoint", ep)],
        )
    };
    assert_eq!(state(&proxy.metrics().await, &dead_label), Some(0.0));

    let mut opened = false;
    for i in 0..30 {
        let r = h1_get(addr(port), "cb.test", &format!("/{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        if state(&proxy.metrics().await, &dead_label) == Some(1.0) {
            opened = true;
            break;
        }
    }
    assert!(opened, "the dead endpoint's breaker never opened");
    let m = proxy.metrics().await;
    assert_eq!(
        state(&m, &good_label),
        Some(0.0),
        "the good endpoint tripped"
    );
    let errors = |m: &str| {
        metric_value(
            m,
            "citoroute_upstream_errors_total",
            &[("backend", "cb"), ("kind", "connect")],
        )
        .unwrap_or(0.0)
    };
    let before = errors(&m);
    assert!(before >= 2.0);
    for i in 0..20 {
        let r = h1_get(addr(port), "cb.test", &format!("/after{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "good");
    }
    let m = proxy.metrics().await;
    assert_eq!(
        errors(&m),
        before,
        "the open breaker's endpoint was still tried"
    );
    assert_eq!(state(&m, &dead_label), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_status_codes_are_retried_on_another_endpoint() {
    let good = Backend::start("good", Proto::H1).await;
    let bad = Backend::start_failing("bad", 503).await;
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.mixed]
endpoints = ["@BAD", "@GOOD"]
circuit_breaker = { enabled = false }

[[http_routes]]
name = "retry-codes"
listeners = ["web"]

[[http_routes.rules]]
retry = { attempts = 2, codes = [503], backoff = "10ms" }
backends = [{ backend = "mixed" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@BAD", bad.addr.to_string()),
            ("@GOOD", good.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start(&body, &[port]).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = h1_get(addr(port), "rc.test", &format!("/{i}"))
            .await
            .unwrap();
        statuses.push(r.status);
    }
    assert!(bad.seen_count() > 0, "the failing endpoint was never tried");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "503s were not retried: {statuses:?}"
    );
}

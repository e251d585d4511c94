//! The `check` subcommand and the admin endpoints (`/metrics`, `/healthz`, `/config`).

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use std::process::Command;
use std::time::Duration;

#[test]
fn check_accepts_the_quickstart_example() {
    let out = Command::new(BIN)
        .arg("check")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/quickstart.toml"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok"), "stdout: {stdout}");
}

#[test]
fn check_rejects_a_bad_file_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let semantic = dir.path().join("semantic.toml");
    std::fs::write(
        &semantic,
        r#"version = 1

[[listeners]]
name = "web"
address = "not-an-ip"
port = 8080
protocol = "HTTP"

[[http_routes]]
name = "r"
listeners = ["nope"]

[[http_routes.rules]]
backends = [{ backend = "ghost" }]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg(&semantic)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad config passed check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "listeners[0].address",
        "http_routes[0].listeners[0]",
        "http_routes[0].rules[0].backends[0].backend",
    ] {
        assert!(stderr.contains(key), "stderr lacks {key}: {stderr}");
    }

    let syntax = dir.path().join("syntax.toml");
    std::fs::write(&syntax, "version = 1\n[runtime]\nbogus_key = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg(&syntax)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown key passed check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bogus_key"), "stderr: {stderr}");

    let out = Command::new(BIN)
        .arg("check")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a missing file passed check");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_backend_and_code() {
    let echo = Backend::start("echo", Proto::H1).await;
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.mb]
endpoints = ["@E"]

[[http_routes]]
name = "metrics-route"
listeners = ["web"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/m" } }]
backends = [{ backend = "mb" }]
"#,
        &[("@PORT", port.to_string()), ("@E", echo.addr.to_string())],
    );
    let proxy = Proxy::start(&body, &[port]).await;

    let mut conn = H1Conn::connect(addr(port)).await.unwrap();
    for _ in 0..3 {
        assert_eq!(conn.get("m.test", "/m").await.unwrap().status, 200);
    }
    let r = conn
        .send(
            h1_req("GET", "m.test", "/m/teapot")
                .header("x-echo-status", "418")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 418);
    assert_eq!(conn.get("m.test", "/elsewhere").await.unwrap().status, 404);

    let labels_200 = [
        ("route", "metrics-route"),
        ("backend", "mb"),
        ("code", "200"),
    ];
    let counted = eventually(
        Duration::from_secs(3),
        Duration::from_millis(20),
        || async {
            let m = proxy.metrics().await;
            metric_value(&m, "citoroute_requests_total", &labels_200) == Some(3.0)
                && metric_value(
                    &m,
                    "citoroute_request_duration_seconds_count",
                    &[("route", "metrics-route")],
                ) == Some(4.0)
        },
    )
    .await;
    let m = proxy.metrics().await;
    assert!(counted, "requests not counted:\n{m}");
    assert_eq!(
        metric_value(
            &m,
            "citoroute_requests_total",
            &[
                ("route", "metrics-route"),
                ("backend", "mb"),
                ("code", "418")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "citoroute_requests_total",
            &[("route", ""), ("code", "404")]
        ),
        Some(1.0),
        "the 404 is counted without a route"
    );
    assert!(m.contains("# TYPE citoroute_requests_total counter"));
    assert!(m.contains("# TYPE citoroute_request_duration_seconds histogram"));
    let inf = metric_value(
        &m,
        "citoroute_request_duration_seconds_bucket",
        &[("route", "metrics-route"), ("le", "+Inf")],
    );
    assert_eq!(inf, Some(4.0));
    let sum = metric_value(
        &m,
        "citoroute_request_duration_seconds_sum",
        &[("route", "metrics-route")],
    )
    .unwrap();
    assert!(sum > 0.0 && sum < 10.0, "duration sum {sum}");
    assert_eq!(
        metric_value(&m, "citoroute_config_generation", &[]),
        Some(1.0)
    );

    let h = h1_get(proxy.admin, "admin", "/healthz").await.unwrap();
    assert_eq!(h.status, 200);
    let c = h1_get(proxy.admin, "admin", "/config").await.unwrap();
    assert_eq!(c.status, 200);
    assert!(c.text().contains("metrics-route"), "/config: {}", c.text());
    let nf = h1_get(proxy.admin, "admin", "/nope").await.unwrap();
    assert_eq!(nf.status, 404);
}

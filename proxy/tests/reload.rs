//! Hot reload over real sockets: a rewritten config file is served within about a second,
//! invalid configs are refused while the last good one keeps serving, and a stream of
//! rewrites under concurrent keep-alive traffic fails no request.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A config with one listener, backends `alpha` and `beta`, and `route` on `path` to `backend`.
fn config(port: u16, alpha: &Backend, beta: &Backend, path: &str, backend: &str) -> String {
    format!(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = {port}
protocol = "HTTP"

[backends.alpha]
endpoints = ["{}"]

[backends.beta]
endpoints = ["{}"]

[[http_routes]]
name = "reload"
listeners = ["web"]

[[http_routes.rules]]
matches = [{{ path = {{ type = "PathPrefix", value = "{path}" }} }}]
backends = [{{ backend = "{backend}" }}]
"#,
        alpha.addr, beta.addr
    )
}

async fn generation(p: &Proxy) -> f64 {
    p.metric("citoroute_config_generation", &[]).await
}

async fn failures(p: &Proxy) -> f64 {
    p.metric("citoroute_config_reload_failures_total", &[])
        .await
}

async fn status(port: u16, path: &str) -> u16 {
    h1_get(addr(port), "reload.test", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_config_is_served_within_a_second() {
    let alpha = Backend::start("alpha", Proto::H1).await;
    let beta = Backend::start("beta", Proto::H1).await;
    let port = free_port();
    let mut proxy = Proxy::start(&config(port, &alpha, &beta, "/a", "alpha"), &[port]).await;
    assert_eq!(status(port, "/a").await, 200);
    assert_eq!(status(port, "/b").await, 404);
    assert_eq!(generation(&proxy).await, 1.0);

    let start = Instant::now();
    proxy.rewrite(&config(port, &alpha, &beta, "/b", "beta"));
    let served = eventually(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async { status(port, "/b").await == 200 },
    )
    .await;
    let took = start.elapsed();
    assert!(
        served,
        "the new route was never served; log:\n{}",
        proxy.log()
    );
    assert!(
        took < Duration::from_millis(1500),
        "the new route took {took:?}"
    );
    println!("new route served {took:?} after the rename");
    let r = h1_get(addr(port), "reload.test", "/b/x").await.unwrap();
    assert_eq!(r.backend(), "beta");
    assert_eq!(status(port, "/a").await, 404, "the old route still serves");
    assert_eq!(generation(&proxy).await, 2.0);
    assert_eq!(
        proxy.metric("citoroute_config_reloads_total", &[]).await,
        1.0
    );
    proxy.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configs_are_refused_and_the_old_routes_keep_serving() {
    let alpha = Backend::start("alpha", Proto::H1).await;
    let beta = Backend::start("beta", Proto::H1).await;
    let port = free_port();
    let mut proxy = Proxy::start(&config(port, &alpha, &beta, "/a", "alpha"), &[port]).await;
    assert_eq!(failures(&proxy).await, 0.0);

    let head = config_head(proxy.admin.port());
    let broken = [
        // Not TOML.
        format!("{head}\n[[listeners]\nname = \"web\n"),
        // TOML and the schema, but a route naming a backend that does not exist.
        format!(
            "{head}{}",
            config(port, &alpha, &beta, "/c", "alpha").replace(
                "backends = [{ backend = \"alpha\" }]",
                "backends = [{ backend = \"missing\" }]"
            )
        ),
        // An unknown key.
        format!(
            "{head}{}",
            config(port, &alpha, &beta, "/c", "alpha")
                .replace("[[http_routes]]", "bogus = 1\n[[http_routes]]")
        ),
    ];
    for (i, text) in broken.iter().enumerate() {
        proxy.rewrite_raw(text);
        let want = (i + 1) as f64;
        let refused = eventually(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || async { failures(&proxy).await >= want },
        )
        .await;
        assert!(refused, "broken config {i} was not counted as refused");
        assert_eq!(failures(&proxy).await, want);
        assert_eq!(status(port, "/a").await, 200, "broken config {i}");
        assert_eq!(
            status(port, "/c").await,
            404,
            "broken config {i} was applied"
        );
        assert_eq!(generation(&proxy).await, 1.0);
    }
    assert!(
        proxy.log().contains("missing"),
        "the refusal names the problem; log:\n{}",
        proxy.log()
    );

    // The watch survives refusals: a good config still goes in.
    proxy.rewrite(&config(port, &alpha, &beta, "/b", "beta"));
    let served = eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { status(port, "/b").await == 200 },
    )
    .await;
    assert!(served, "a valid config after refused ones was not applied");
    assert_eq!(generation(&proxy).await, 2.0);
    proxy.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    const CLIENTS: usize = 4;
    const REWRITES: usize = 110;
    const REWRITE_EVERY: Duration = Duration::from_millis(70);
    const MAX_REQUESTS_PER_CLIENT: usize = 500_000;
    const MAX_CLIENT_TIME: Duration = Duration::from_secs(40);

    let alpha = Backend::start("alpha", Proto::H1).await;
    let beta = Backend::start("beta", Proto::H1).await;
    let port = free_port();
    // Both configs answer /load with 200, from different backends; each also has a route the
    // other lacks, so the swap changes the routing table, not just a backend.
    let config_a = config(port, &alpha, &beta, "/load", "alpha")
        + "\n[[http_routes.rules]]\nmatches = [{ path = { type = \"Exact\", value = \"/only-a\" } }]\nbackends = [{ backend = \"alpha\" }]\n";
    let config_b = config(port, &alpha, &beta, "/load", "beta")
        + "\n[[http_routes.rules]]\nmatches = [{ path = { type = \"Exact\", value = \"/only-b\" } }]\nbackends = [{ backend = \"beta\" }]\n";
    let mut proxy = Proxy::start(&config_a, &[port]).await;
    let gen_before = generation(&proxy).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let (mut ok, mut alpha_n, mut beta_n) = (0usize, 0usize, 0usize);
            let mut failures = Vec::new();
            // One of the clients speaks h2c; the others keep HTTP/1.1 connections alive.
            let h2 = c == 0;
            let mut h1_conn = if h2 {
                None
            } else {
                Some(H1Conn::connect(addr(port)).await.unwrap())
            };
            let mut h2_conn = if h2 {
                Some(H2Conn::connect(addr(port)).await.unwrap())
            } else {
                None
            };
            let mut reconnects = 0;
            while !stop.load(Ordering::Relaxed)
                && ok + failures.len() < MAX_REQUESTS_PER_CLIENT
                && started.elapsed() < MAX_CLIENT_TIME
            {
                let r = match (&mut h1_conn, &mut h2_conn) {
                    (Some(c), _) => c.get("load.test", "/load").await,
                    (_, Some(c)) => c.get("http://load.test/load").await,
                    _ => unreachable!(),
                };
                match r {
                    Ok(r) if r.status == 200 => {
                        ok += 1;
                        match r.header("x-backend") {
                            Some("alpha") => alpha_n += 1,
                            Some("beta") => beta_n += 1,
                            _ => failures.push(format!("no backend header: {:?}", r.headers)),
                        }
                    }
                    Ok(r) => failures.push(format!("status {}: {}", r.status, r.text())),
                    Err(e) => {
                        failures.push(format!("client {c}: {e}"));
                        if reconnects > 10 {
                            break;
                        }
                        reconnects += 1;
                        if h2 {
                            h2_conn = H2Conn::connect(addr(port)).await.ok();
                        } else {
                            h1_conn = H1Conn::connect(addr(port)).await.ok();
                        }
                    }
                }
            }
            (ok, alpha_n, beta_n, failures)
        }));
    }

    let started = Instant::now();
    for i in 0..REWRITES {
        // A counter comment makes every rewrite new bytes, so each poll sees a change.
        let body = if i % 2 == 0 { &config_b } else { &config_a };
        proxy.rewrite(&format!("{body}\n# rewrite {i}\n"));
        tokio::time::sleep(REWRITE_EVERY).await;
    }
    // Let the last rewrite land under traffic too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rewriting = started.elapsed();
    stop.store(true, Ordering::Relaxed);

    let (mut ok, mut alpha_n, mut beta_n) = (0, 0, 0);
    let mut failures = Vec::new();
    for t in tasks {
        let (o, a, b, f) = t.await.unwrap();
        ok += o;
        alpha_n += a;
        beta_n += b;
        failures.extend(f);
    }
    let generations = generation(&proxy).await - gen_before;
    let refused = proxy
        .metric("citoroute_config_reload_failures_total", &[])
        .await;
    println!(
        "reload under load: {REWRITES} rewrites in {rewriting:?}, {generations} generations applied, \
         {ok} requests OK ({alpha_n} alpha, {beta_n} beta), {} failed, {CLIENTS} clients",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed under reload, first: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(refused, 0.0, "a valid config was refused");
    assert!(
        generations >= 10.0,
        "only {generations} generations applied in {rewriting:?}"
    );
    assert!(ok >= 500, "only {ok} requests made");
    assert!(
        alpha_n > 0 && beta_n > 0,
        "the swaps never changed the serving backend ({alpha_n} alpha, {beta_n} beta)"
    );
    proxy.assert_alive();
}

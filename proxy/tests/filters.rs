//! Gateway API filters over real sockets: header modifiers, redirects, rewrites, mirrors,
//! CORS and per-backend filters.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use std::time::Duration;

const CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.echo]
endpoints = ["@ECHO"]

[backends.echo2]
endpoints = ["@ECHO2"]

[backends.mirror]
endpoints = ["@MIRROR"]

[[http_routes]]
name = "filters"
listeners = ["web"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/headers" } }]
filters = [
  { type = "RequestHeaderModifier", set = [{ name = "x-set", value = "set-by-proxy" }], add = [{ name = "x-add", value = "added" }], remove = ["x-remove"] },
  { type = "ResponseHeaderModifier", set = [{ name = "x-resp-set", value = "r1" }], add = [{ name = "x-backend", value = "also" }], remove = ["x-remove-me"] },
]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/redir-scheme" } }]
filters = [{ type = "RequestRedirect", scheme = "https" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/redir-host" } }]
filters = [{ type = "RequestRedirect", hostname = "elsewhere.test" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/redir-port" } }]
filters = [{ type = "RequestRedirect", port = 8443 }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/redir-full" } }]
filters = [{ type = "RequestRedirect", path = { type = "ReplaceFullPath", value = "/replaced" }, status_code = 301 }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/old" } }]
filters = [{ type = "RequestRedirect", path = { type = "ReplacePrefixMatch", value = "/new" }, status_code = 308 }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/redir-all" } }]
filters = [{ type = "RequestRedirect", scheme = "https", hostname = "secure.test", port = 8443, path = { type = "ReplaceFullPath", value = "/login" }, status_code = 307 }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/rw-host" } }]
filters = [{ type = "URLRewrite", hostname = "rewritten.test" }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/rw-full" } }]
filters = [{ type = "URLRewrite", path = { type = "ReplaceFullPath", value = "/full" } }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/api" } }]
filters = [{ type = "URLRewrite", path = { type = "ReplacePrefixMatch", value = "/v2" } }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/strip" } }]
filters = [{ type = "URLRewrite", hostname = "inner.test", path = { type = "ReplacePrefixMatch", value = "/" } }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/mirror" } }]
filters = [{ type = "RequestMirror", backend = "mirror" }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/cors" } }]
filters = [{ type = "CORS", allow_origins = ["https://app.test", "https://*.wild.test"], allow_methods = ["GET", "POST"], allow_headers = ["x-user"], expose_headers = ["x-backend"], max_age = 600 }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/any-cors" } }]
filters = [{ type = "CORS", allow_origins = ["*"], allow_methods = ["*"], allow_headers = ["*"], allow_credentials = true }]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/per-backend" } }]
backends = [
  { backend = "echo", weight = 1, filters = [
    { type = "RequestHeaderModifier", set = [{ name = "x-per-backend", value = "one" }] },
    { type = "ResponseHeaderModifier", set = [{ name = "x-chosen", value = "one" }] },
  ] },
  { backend = "echo2", weight = 1 },
]
"#;

struct Setup {
    _proxy: Proxy,
    port: u16,
    echo: Backend,
    mirror: Backend,
}

async fn setup() -> Setup {
    let echo = Backend::start("echo", Proto::H1).await;
    let echo2 = Backend::start("echo2", Proto::H1).await;
    let mirror = Backend::start("mirror", Proto::H1).await;
    let port = free_port();
    let body = fill(
        CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@ECHO2", echo2.addr.to_string()),
            ("@ECHO", echo.addr.to_string()),
            ("@MIRROR", mirror.addr.to_string()),
        ],
    );
    let proxy = Proxy::start(&body, &[port]).await;
    Setup {
        _proxy: proxy,
        port,
        echo,
        mirror,
    }
}

async fn send(port: u16, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = h1_req(method, host, path);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    h1_send(addr(port), b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_header_modifiers() {
    let s = setup().await;
    let r = send(
        s.port,
        "GET",
        "f.test",
        "/headers",
        &[
            ("x-set", "from-client"),
            ("x-add", "from-client"),
            ("x-remove", "gone"),
            ("x-keep", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.seen_headers("x-set"), ["set-by-proxy"]);
    assert_eq!(r.seen_headers("x-add"), ["from-client", "added"]);
    assert!(
        r.seen_headers("x-remove").is_empty(),
        "x-remove reached the backend"
    );
    assert_eq!(r.seen_headers("x-keep"), ["kept"]);
    // Response side: set a new header, add to the backend's, remove one of the backend's.
    assert_eq!(r.header("x-resp-set"), Some("r1"));
    let xb: Vec<_> = r
        .headers
        .get_all("x-backend")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(xb, ["echo", "also"]);
    assert!(r.header("x-remove-me").is_none(), "x-remove-me not removed");
    // Other routes are untouched by this rule's modifiers.
    let r = send(s.port, "GET", "f.test", "/rw-host", &[("x-remove", "kept")]).await;
    assert_eq!(r.seen_headers("x-remove"), ["kept"]);
    assert_eq!(r.header("x-remove-me"), Some("yes"));
    assert!(r.header("x-resp-set").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_redirects() {
    let s = setup().await;
    let p = s.port;
    let cases: Vec<(&str, u16, String)> = vec![
        // Scheme changes: the well-known port, left out of the Location.
        (
            "/redir-scheme/a?x=1",
            302,
            "https://redir.test/redir-scheme/a?x=1".into(),
        ),
        // Hostname only: the listener's port stays.
        (
            "/redir-host/x",
            302,
            format!("http://elsewhere.test:{p}/redir-host/x"),
        ),
        (
            "/redir-port",
            302,
            "http://redir.test:8443/redir-port".into(),
        ),
        (
            "/redir-full/deep/path?q=1",
            301,
            format!("http://redir.test:{p}/replaced?q=1"),
        ),
        (
            "/old/a/b?x=1",
            308,
            format!("http://redir.test:{p}/new/a/b?x=1"),
        ),
        ("/old", 308, format!("http://redir.test:{p}/new")),
        ("/old/", 308, format!("http://redir.test:{p}/new/")),
        ("/redir-all/x", 307, "https://secure.test:8443/login".into()),
    ];
    let mut wrong = Vec::new();
    for (path, code, location) in &cases {
        let r = send(p, "GET", &format!("redir.test:{p}"), path, &[]).await;
        if r.status != *code || r.header("location") != Some(location.as_str()) {
            wrong.push(format!(
                "{path}: want {code} {location}, got {} {:?}",
                r.status,
                r.header("location")
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "redirect mismatches:\n{}",
        wrong.join("\n")
    );
    assert_eq!(s.echo.seen_count(), 0, "a redirect reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rewrites() {
    let s = setup().await;
    let r = send(s.port, "GET", "orig.test", "/rw-host/x?y=1", &[]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(r.seen_header("host").as_deref(), Some("rewritten.test"));
    assert_eq!(j["path"], "/rw-host/x");
    assert_eq!(j["query"], "y=1");

    let r = send(s.port, "GET", "orig.test", "/rw-full/a/b?k=v", &[]).await;
    let j = r.json();
    assert_eq!(j["path"], "/full");
    assert_eq!(j["query"], "k=v");
    assert_eq!(r.seen_header("host").as_deref(), Some("orig.test"));

    for (path, want) in [
        ("/api/x/y", "/v2/x/y"),
        ("/api", "/v2"),
        ("/api/", "/v2/"),
        ("/strip/x", "/x"),
        ("/strip", "/"),
    ] {
        let r = send(s.port, "GET", "orig.test", path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["path"], want, "rewrite of {path}");
    }
    let r = send(s.port, "GET", "orig.test", "/api/q?z=1", &[]).await;
    assert_eq!(r.json()["path"], "/v2/q");
    assert_eq!(r.json()["query"], "z=1");
    let r = send(s.port, "GET", "orig.test", "/strip/x", &[]).await;
    assert_eq!(r.seen_header("host").as_deref(), Some("inner.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_mirror_reaches_the_mirror_backend() {
    let s = setup().await;
    let r = send(
        s.port,
        "GET",
        "m.test",
        "/mirror/x?k=1",
        &[("x-mirror-test", "copy-me")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "echo", "the real backend answers");
    let arrived = eventually(
        Duration::from_secs(3),
        Duration::from_millis(20),
        || async { s.mirror.seen_count() > 0 },
    )
    .await;
    assert!(arrived, "the mirror backend never saw the request");
    let seen = s.mirror.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["method"], "GET");
    assert_eq!(seen[0]["path"], "/mirror/x");
    assert_eq!(seen[0]["query"], "k=1");
    assert_eq!(seen[0]["headers"]["x-mirror-test"][0], "copy-me");
    assert_eq!(seen[0]["headers"]["host"][0], "m.test");
    // Routes without the filter are not mirrored.
    send(s.port, "GET", "m.test", "/headers", &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.mirror.seen_count(), 1);

    // A request body reaches the mirror too, whole, sent with a Content-Length and chunked.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = payload.iter().map(|&b| u64::from(b)).sum();
    for chunked in [false, true] {
        let mut b = h1_req("POST", "m.test", "/mirror/upload");
        if chunked {
            b = b.header("transfer-encoding", "chunked");
        }
        let r = h1_send(
            addr(s.port),
            b.body(Full::new(Bytes::from(payload.clone()))).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["body_len"],
            payload.len(),
            "the real backend's body"
        );
    }
    let arrived = eventually(
        Duration::from_secs(3),
        Duration::from_millis(20),
        || async { s.mirror.seen_count() == 3 },
    )
    .await;
    assert!(arrived, "the mirrored POSTs never arrived");
    for seen in &s.mirror.seen()[1..] {
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["body_len"], payload.len());
        assert_eq!(seen["body_sum"], sum);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_simple_requests() {
    let s = setup().await;
    let before = s.echo.seen_count();
    let r = send(
        s.port,
        "OPTIONS",
        "c.test",
        "/cors",
        &[
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-user"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-user"));
    assert_eq!(r.header("access-control-expose-headers"), Some("x-backend"));
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_eq!(
        s.echo.seen_count(),
        before,
        "the preflight reached the backend"
    );

    // A wildcard origin pattern.
    let r = send(
        s.port,
        "OPTIONS",
        "c.test",
        "/cors",
        &[
            ("origin", "https://x.wild.test"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://x.wild.test")
    );

    // A disallowed origin gets no CORS grant.
    let r = send(
        s.port,
        "OPTIONS",
        "c.test",
        "/cors",
        &[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert!(r.status < 500, "status {}", r.status);
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-methods").is_none());

    // Simple requests: allowed origin gets the grant, disallowed does not.
    let r = send(
        s.port,
        "GET",
        "c.test",
        "/cors",
        &[("origin", "https://app.test")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );
    assert_eq!(r.header("access-control-expose-headers"), Some("x-backend"));
    assert!(
        r.headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin")),
        "no Vary: Origin"
    );
    let r = send(
        s.port,
        "GET",
        "c.test",
        "/cors",
        &[("origin", "https://evil.test")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    // Without an Origin, no CORS headers at all.
    let r = send(s.port, "GET", "c.test", "/cors", &[]).await;
    assert!(r.header("access-control-allow-origin").is_none());
}

/// Wildcards with credentials: browsers refuse `*` on credentialed requests, so the proxy
/// echoes the origin, the method and the headers the preflight asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_wildcards_with_credentials_echo_the_request() {
    let s = setup().await;
    let r = send(
        s.port,
        "OPTIONS",
        "c.test",
        "/any-cors",
        &[
            ("origin", "https://other.test"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-one, x-two"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.test")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-one, x-two")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = send(
        s.port,
        "GET",
        "c.test",
        "/any-cors",
        &[("origin", "https://other.test"), ("cookie", "a=b")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.test")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_backend_filters_apply_only_to_their_backend() {
    let s = setup().await;
    let (mut one, mut two) = (0, 0);
    let mut conn = H1Conn::connect(addr(s.port)).await.unwrap();
    for _ in 0..60 {
        let r = conn.get("pb.test", "/per-backend").await.unwrap();
        assert_eq!(r.status, 200);
        match r.backend().as_str() {
            "echo" => {
                one += 1;
                assert_eq!(r.seen_headers("x-per-backend"), ["one"]);
                assert_eq!(r.header("x-chosen"), Some("one"));
            }
            "echo2" => {
                two += 1;
                assert!(r.seen_headers("x-per-backend").is_empty());
                assert!(r.header("x-chosen").is_none());
            }
            other => panic!("unexpected backend {other}"),
        }
    }
    assert!(one > 0 && two > 0, "1:1 split gave {one}:{two}");
}

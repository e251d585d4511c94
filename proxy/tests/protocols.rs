//! Protocols over real sockets: h2c downstream to HTTP/1.1 and h2c backends, HTTPS with two
//! certificates chosen by SNI, HTTP/2 over TLS by ALPN, and WebSocket.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const PROTO_CONFIG: &str = r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.h1]
endpoints = ["@H1"]

[backends.h2]
endpoints = ["@H2"]
protocol = "h2c"

[[http_routes]]
name = "proto"
listeners = ["web"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/to-h1" } }]
backends = [{ backend = "h1" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/to-h2" } }]
backends = [{ backend = "h2" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/rw-h2" } }]
filters = [{ type = "URLRewrite", hostname = "rewritten.test", path = { type = "ReplacePrefixMatch", value = "/inner" } }]
backends = [{ backend = "h2" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/rw-h1" } }]
filters = [{ type = "URLRewrite", hostname = "rewritten.test", path = { type = "ReplacePrefixMatch", value = "/inner" } }]
backends = [{ backend = "h1" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_through_the_proxy_to_h1_and_h2c_backends() {
    let h1 = Backend::start("h1", Proto::H1).await;
    let h2 = Backend::start("h2", Proto::H2c).await;
    let port = free_port();
    let body = fill(
        PROTO_CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@H1", h1.addr.to_string()),
            ("@H2", h2.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start(&body, &[port]).await;

    let mut conn = H2Conn::connect(addr(port)).await.unwrap();
    for i in 0..5 {
        let r = conn
            .get(&format!("http://proto.test/to-h1/{i}?a=b"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, http::Version::HTTP_2);
        let j = r.json();
        assert_eq!(j["backend"], "h1");
        assert_eq!(j["version"], "HTTP/1.1");
        assert_eq!(j["path"], format!("/to-h1/{i}"));
        assert_eq!(j["query"], "a=b");
        assert_eq!(r.seen_header("host").as_deref(), Some("proto.test"));

        let r = conn
            .get(&format!("http://proto.test/to-h2/{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, http::Version::HTTP_2);
        let j = r.json();
        assert_eq!(j["backend"], "h2");
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["path"], format!("/to-h2/{i}"));
    }
    // Concurrent streams on one h2c connection.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = conn.clone();
        tasks.push(tokio::spawn(async move {
            c.get(&format!("http://proto.test/to-h2/c{i}")).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // An HTTP/1.1 client to the h2c backend.
    let r = h1_get(addr(port), "proto.test", "/to-h2/from-h1")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_11);
    assert_eq!(r.json()["version"], "HTTP/2.0");
    let j = r.json();
    let host = j["authority"]
        .as_str()
        .map(str::to_string)
        .or(r.seen_header("host"));
    assert_eq!(host.as_deref(), Some("proto.test"));
}

/// The host an echo backend saw: `:authority` over HTTP/2, else the `Host` header.
fn seen_host(r: &Resp) -> Option<String> {
    let j = r.json();
    j["authority"]
        .as_str()
        .map(str::to_string)
        .or_else(|| r.seen_header("host"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rewrite_reaches_h1_and_h2c_backends_from_h1_and_h2c_clients() {
    let h1 = Backend::start("h1", Proto::H1).await;
    let h2 = Backend::start("h2", Proto::H2c).await;
    let port = free_port();
    let body = fill(
        PROTO_CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@H1", h1.addr.to_string()),
            ("@H2", h2.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start(&body, &[port]).await;
    let mut c2 = H2Conn::connect(addr(port)).await.unwrap();
    let mut c1 = H1Conn::connect(addr(port)).await.unwrap();
    let mut wrong = Vec::new();
    for path in ["/rw-h1/x?q=1", "/rw-h2/x?q=1"] {
        let via_h2 = c2.get(&format!("http://proto.test{path}")).await.unwrap();
        let via_h1 = c1.get("proto.test", path).await.unwrap();
        for (client, r) in [("h2c", via_h2), ("h1", via_h1)] {
            let j = r.json();
            let host = seen_host(&r);
            let hosts = r.seen_headers("host");
            if r.status != 200
                || host.as_deref() != Some("rewritten.test")
                || hosts.iter().any(|h| h != "rewritten.test")
                || j["path"] != "/inner/x"
                || j["query"] != "q=1"
            {
                wrong.push(format!(
                    "{client} client, {path}: status {}, authority {}, host headers {hosts:?}, path {}",
                    r.status, j["authority"], j["path"]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "rewrites not applied:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_bodies_cross_every_protocol_pair() {
    let h1 = Backend::start("h1", Proto::H1).await;
    let h2 = Backend::start("h2", Proto::H2c).await;
    let port = free_port();
    let body = fill(
        PROTO_CONFIG,
        &[
            ("@PORT", port.to_string()),
            ("@H1", h1.addr.to_string()),
            ("@H2", h2.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start(&body, &[port]).await;
    let payload: Bytes = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    let sum: u64 = payload.iter().map(|&b| u64::from(b)).sum();
    let mut c2 = H2Conn::connect(addr(port)).await.unwrap();
    let mut c1 = H1Conn::connect(addr(port)).await.unwrap();
    for target in ["/to-h1/upload", "/to-h2/upload"] {
        let via_h1 = c1
            .send(
                h1_req("POST", "proto.test", target)
                    .body(Full::new(payload.clone()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let via_h2 = c2
            .send(
                http::Request::builder()
                    .method("POST")
                    .uri(format!("http://proto.test{target}"))
                    .body(Full::new(payload.clone()))
                    .unwrap(),
            )
            .await
            .unwrap();
        for (client, r) in [("h1", via_h1), ("h2c", via_h2)] {
            assert_eq!(r.status, 200, "{client} -> {target}: {}", r.text());
            let j = r.json();
            assert_eq!(j["method"], "POST");
            assert_eq!(j["body_len"], payload.len(), "{client} -> {target}");
            assert_eq!(j["body_sum"], sum, "{client} -> {target}");
        }
    }
}

/// Whether the DER certificate carries `name` (DNS names are stored as plain ASCII).
fn der_mentions(der: &[u8], name: &str) -> bool {
    der.windows(name.len()).any(|w| w == name.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sni_picks_the_certificate_and_alpn_picks_h2() {
    let echo = Backend::start("echo", Proto::H1).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let a = pki.leaf(dir.path(), "a", "a.tls.test");
    let b = pki.leaf(dir.path(), "b", "b.tls.test");
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "https-a"
address = "127.0.0.1"
port = @PORT
protocol = "HTTPS"
hostname = "a.tls.test"
tls = { certificates = ["a"] }

[[listeners]]
name = "https-b"
address = "127.0.0.1"
port = @PORT
protocol = "HTTPS"
hostname = "b.tls.test"
tls = { certificates = ["b"] }

[certificates.a]
cert_file = "@ACERT"
key_file = "@AKEY"

[certificates.b]
cert_file = "@BCERT"
key_file = "@BKEY"

[backends.echo]
endpoints = ["@E"]

[[http_routes]]
name = "tls"
listeners = ["https-a", "https-b"]

[[http_routes.rules]]
backends = [{ backend = "echo" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/moved" } }]
filters = [{ type = "RequestRedirect", hostname = "b.tls.test" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@ACERT", a.cert_file.display().to_string()),
            ("@AKEY", a.key_file.display().to_string()),
            ("@BCERT", b.cert_file.display().to_string()),
            ("@BKEY", b.key_file.display().to_string()),
            ("@E", echo.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;
    let root = pki.root();

    // SNI a.tls.test, HTTP/2 by ALPN.
    let tls = tls_connect(addr(port), "a.tls.test", &root, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    {
        let (_, session) = tls.get_ref();
        let served = &session.peer_certificates().expect("a certificate")[0];
        assert_eq!(served.as_ref(), a.der.as_ref(), "SNI a got another cert");
        assert!(der_mentions(served, "a.tls.test"));
        assert!(!der_mentions(served, "b.tls.test"));
        assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
    }
    let mut h2 = H2Conn::over(tls).await.unwrap();
    let r = h2.get("https://a.tls.test/secure?x=1").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.json()["path"], "/secure");
    assert_eq!(r.seen_header("host").as_deref(), Some("a.tls.test"));
    // The connection's certificate was chosen for listener https-a: a request on it for a
    // name of listener https-b is misdirected (a client reusing the connection must retry
    // on a new one).
    let r = h2.get("https://b.tls.test/secure").await.unwrap();
    assert_eq!(r.status, 421, "{}", r.text());
    let r = h2.get("https://a.tls.test/again").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // SNI b.tls.test, HTTP/1.1 by ALPN.
    let tls = tls_connect(addr(port), "b.tls.test", &root, &[b"http/1.1"])
        .await
        .unwrap();
    {
        let (_, session) = tls.get_ref();
        let served = &session.peer_certificates().expect("a certificate")[0];
        assert_eq!(served.as_ref(), b.der.as_ref(), "SNI b got another cert");
        assert!(der_mentions(served, "b.tls.test"));
        assert!(!der_mentions(served, "a.tls.test"));
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    }
    let mut h1 = H1Conn::over(tls).await.unwrap();
    let r = h1.get("b.tls.test", "/plain").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.version, http::Version::HTTP_11);
    assert_eq!(r.json()["path"], "/plain");
    let r = h1.get("a.tls.test", "/plain").await.unwrap();
    assert_eq!(r.status, 421, "{}", r.text());
    // A redirect on a TLS listener keeps the https scheme and the listener's port.
    let r = h1.get("b.tls.test", "/moved/x?y=1").await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("https://b.tls.test:{port}/moved/x?y=1").as_str())
    );

    // A client that verifies b.tls.test but is sent a's certificate would fail: prove the
    // verification is real by asking for a name neither certificate carries.
    let err = tls_connect(addr(port), "c.tls.test", &root, &[b"http/1.1"]).await;
    assert!(err.is_err(), "a certificate for c.tls.test was accepted");
}

/// A listener with several certificates serves the one that names the SNI; the first one is
/// the default when none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listener_with_several_certificates_serves_the_one_naming_the_sni() {
    let echo = Backend::start("echo", Proto::H1).await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let x = pki.leaf(dir.path(), "x", "x.multi.test");
    let y = pki.leaf(dir.path(), "y", "y.multi.test");
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "https"
address = "127.0.0.1"
port = @PORT
protocol = "HTTPS"
hostname = "*.multi.test"
tls = { certificates = ["x", "y"] }

[certificates.x]
cert_file = "@XCERT"
key_file = "@XKEY"

[certificates.y]
cert_file = "@YCERT"
key_file = "@YKEY"

[backends.echo]
endpoints = ["@E"]

[[http_routes]]
name = "multi"
listeners = ["https"]

[[http_routes.rules]]
backends = [{ backend = "echo" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@XCERT", x.cert_file.display().to_string()),
            ("@XKEY", x.key_file.display().to_string()),
            ("@YCERT", y.cert_file.display().to_string()),
            ("@YKEY", y.key_file.display().to_string()),
            ("@E", echo.addr.to_string()),
        ],
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;
    let root = pki.root();
    for (sni, want) in [("y.multi.test", &y), ("x.multi.test", &x)] {
        let tls = tls_connect(addr(port), sni, &root, &[b"http/1.1"])
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        let served = &session.peer_certificates().expect("a certificate")[0];
        assert_eq!(served.as_ref(), want.der.as_ref(), "SNI {sni}");
        let mut h1 = H1Conn::over(tls).await.unwrap();
        assert_eq!(h1.get(sni, "/").await.unwrap().status, 200);
    }
    // No certificate names z.multi.test: the first is served, and the client refuses it.
    assert!(
        tls_connect(addr(port), "z.multi.test", &root, &[b"http/1.1"])
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let ws = ws_echo_backend().await;
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.ws]
endpoints = ["@WS"]
protocol = "websocket"

[[http_routes]]
name = "ws"
listeners = ["web"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/ws" } }]
backends = [{ backend = "ws" }]
"#,
        &[("@PORT", port.to_string()), ("@WS", ws.to_string())],
    );
    let _proxy = Proxy::start(&body, &[port]).await;

    let stream = TcpStream::connect(addr(port)).await.unwrap();
    let (mut socket, resp) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async("ws://ws.test/ws/chat", stream),
    )
    .await
    .expect("handshake timed out")
    .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let text = format!("hello {i}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo timed out")
            .expect("stream ended")
            .expect("read");
        assert_eq!(got, Message::text(text));
    }
    let payload = Bytes::from_static(&[0, 1, 2, 255]);
    socket.send(Message::binary(payload.clone())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("echo timed out")
        .expect("stream ended")
        .expect("read");
    assert_eq!(got, Message::binary(payload));
    socket.close(None).await.unwrap();

    // A second WebSocket on a new connection works as well.
    let stream = TcpStream::connect(addr(port)).await.unwrap();
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async("ws://ws.test/ws/again", stream),
    )
    .await
    .expect("handshake timed out")
    .expect("second WebSocket handshake");
    socket.send(Message::text("again")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("echo timed out")
        .expect("stream ended")
        .expect("read");
    assert_eq!(got, Message::text("again"));
}

//! TLS to backends (BackendTLSPolicy) over real sockets: one TLS backend whose certificate
//! names `backend.test` and the URI `spiffe://td/ns/app`, reached through backends that differ
//! only in their `tls` table. The backend reports the SNI and ALPN it saw. Covers the CA
//! check, the SNI name check, subject alternative names replacing it, the system trust store,
//! HTTP/2 by ALPN, pooled connections never crossing trust settings, and a CA file change
//! taking effect by reload alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Starts a TLS server with `leaf` answering every request with JSON
/// `{sni, alpn, version, path}`: what the proxy's connection looked like.
async fn tls_backend(leaf: &Leaf) -> SocketAddr {
    let cfg = leaf.server_config(&[b"h2", b"http/1.1"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let sni = conn.server_name().map(str::to_string);
                let alpn = conn
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned());
                let h2 = alpn.as_deref() == Some("h2");
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let json = serde_json::json!({
                        "sni": sni,
                        "alpn": alpn,
                        "version": format!("{:?}", req.version()),
                        "path": req.uri().path(),
                    });
                    async move {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            json.to_string(),
                        ))))
                    }
                });
                let io = TokioIo::new(tls);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    });
    addr
}

/// Backends by name and their `tls` tables; each gets the route `/<name>`.
const BACKENDS: &[(&str, &str)] = &[
    (
        "good",
        r#"{ sni = "backend.test", ca_files = ["@DIR/trusted-ca.pem"] }"#,
    ),
    (
        "wrong-ca",
        r#"{ sni = "backend.test", ca_files = ["@DIR/other-ca.pem"] }"#,
    ),
    (
        "wrong-name",
        r#"{ sni = "other.test", ca_files = ["@DIR/trusted-ca.pem"] }"#,
    ),
    ("system", r#"{ sni = "backend.test" }"#),
    (
        "san-dns",
        r#"{ sni = "other.test", ca_files = ["@DIR/trusted-ca.pem"], subject_alt_names = ["backend.test"] }"#,
    ),
    (
        "san-uri",
        r#"{ sni = "other.test", ca_files = ["@DIR/trusted-ca.pem"], subject_alt_names = ["spiffe://td/ns/app"] }"#,
    ),
    (
        "san-mismatch",
        r#"{ sni = "backend.test", ca_files = ["@DIR/trusted-ca.pem"], subject_alt_names = ["nope.test", "spiffe://td/ns/other"] }"#,
    ),
    (
        "reloaded",
        r#"{ sni = "backend.test", ca_files = ["@DIR/reloaded-ca.pem"] }"#,
    ),
];

fn config(port: u16, endpoint: SocketAddr, dir: &Path) -> String {
    let mut out = format!(
        "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1\"\nport = {port}\nprotocol = \"HTTP\"\n\n"
    );
    for (name, tls) in BACKENDS {
        out.push_str(&format!(
            "[backends.{name:?}]\nendpoints = [\"{endpoint}\"]\ntls = {tls}\n\n"
        ));
    }
    out.push_str(
        "[backends.h2]\nendpoints = [\"@EP\"]\nprotocol = \"h2\"\ntls = { sni = \"backend.test\", ca_files = [\"@DIR/trusted-ca.pem\"] }\n\n",
    );
    out.push_str("[[http_routes]]\nname = \"r\"\nlisteners = [\"http\"]\n\n");
    for name in BACKENDS.iter().map(|(n, _)| *n).chain(["h2"]) {
        out.push_str(&format!(
            "[[http_routes.rules]]\nmatches = [{{ path = {{ type = \"PathPrefix\", value = \"/{name}\" }} }}]\nbackends = [{{ backend = {name:?} }}]\n\n"
        ));
    }
    fill(
        &out,
        &[
            ("@DIR", dir.display().to_string()),
            ("@EP", endpoint.to_string()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_certificates_are_verified_by_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Pki::new();
    let other = Pki::new();
    let leaf = trusted.leaf_with_sans(
        dir.path(),
        "backend",
        "backend.test",
        &["backend.test"],
        &["spiffe://td/ns/app"],
    );
    for (file, ca) in [
        ("trusted-ca.pem", &trusted),
        ("other-ca.pem", &other),
        ("reloaded-ca.pem", &trusted),
        // The "system" trust store of this proxy, through SSL_CERT_FILE.
        ("system-ca.pem", &trusted),
    ] {
        std::fs::write(dir.path().join(file), ca.root_pem()).unwrap();
    }
    let endpoint = tls_backend(&leaf).await;
    let port = free_port();
    let body = config(port, endpoint, dir.path());
    let system_ca = dir.path().join("system-ca.pem").display().to_string();
    let proxy = Proxy::start_with_env(
        dir,
        &body,
        &[port],
        &[("SSL_CERT_FILE", Some(system_ca)), ("SSL_CERT_DIR", None)],
    )
    .await;
    let get = |path: &'static str| async move {
        h1_get(addr(port), "any.test", path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    };

    // The CA and the SNI name check pass; the SNI is the configured one.
    let r = get("/good").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sni"], "backend.test");
    assert_eq!(r.json()["alpn"], "http/1.1");

    // Same endpoint and SNI, other trust: the pooled connection of "good" is not reused.
    let r = get("/wrong-ca").await;
    assert_eq!(
        r.status,
        502,
        "a certificate from an untrusted CA: {}",
        r.text()
    );
    let r = get("/wrong-name").await;
    assert_eq!(
        r.status,
        502,
        "a certificate not naming the SNI: {}",
        r.text()
    );

    // Without ca_files, the system trust store (here SSL_CERT_FILE) decides.
    let r = get("/system").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // subject_alt_names replace the SNI check: the SNI sent stays `other.test`.
    for path in ["/san-dns", "/san-uri"] {
        let r = get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["sni"], "other.test", "{path}");
    }
    // And the SNI name no longer suffices: none of the listed names is on the certificate.
    let r = get("/san-mismatch").await;
    assert_eq!(r.status, 502, "{}", r.text());

    // HTTP/2 over TLS by ALPN.
    let r = get("/h2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["alpn"], "h2");
    assert_eq!(r.json()["version"], "HTTP/2.0");

    // A CA file replaced under the same name takes effect without a new config text.
    assert_eq!(get("/reloaded").await.status, 200);
    std::fs::write(proxy.dir().join("reloaded-ca.pem"), other.root_pem()).unwrap();
    let refused = eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async { get("/reloaded").await.status == 502 },
    )
    .await;
    assert!(
        refused,
        "the new CA file was not picked up\n{}",
        proxy.log()
    );
}

/// Mirrored copies travel over plain HTTP: a mirror backend with `tls` gets none, one without
/// gets its copy (the same plain echo server behind both names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_never_send_cleartext_to_a_tls_backend() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    std::fs::write(dir.path().join("ca.pem"), pki.root_pem()).unwrap();
    let main = Backend::start("main", Proto::H1).await;
    let shadow = Backend::start("shadow", Proto::H1).await;
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "http"
address = "127.0.0.1"
port = @PORT
protocol = "HTTP"

[backends.main]
endpoints = ["@MAIN"]

[backends.shadow-tls]
endpoints = ["@SHADOW"]
tls = { sni = "shadow.test", ca_files = ["@DIR/ca.pem"] }

[backends.shadow-plain]
endpoints = ["@SHADOW"]

[[http_routes]]
name = "r"
listeners = ["http"]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/to-tls" } }]
filters = [{ type = "RequestMirror", backend = "shadow-tls" }]
backends = [{ backend = "main" }]

[[http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/to-plain" } }]
filters = [{ type = "RequestMirror", backend = "shadow-plain" }]
backends = [{ backend = "main" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@MAIN", main.addr.to_string()),
            ("@SHADOW", shadow.addr.to_string()),
            ("@DIR", dir.path().display().to_string()),
        ],
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;
    let r = h1_get(addr(port), "any.test", "/to-tls").await.unwrap();
    assert_eq!(r.status, 200);
    let r = h1_get(addr(port), "any.test", "/to-plain").await.unwrap();
    assert_eq!(r.status, 200);
    let copied = eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { shadow.seen_count() >= 1 },
    )
    .await;
    assert!(copied, "the plain mirror got no copy");
    // The TLS mirror was decided before the plain one was sent.
    let paths: Vec<String> = shadow
        .seen()
        .iter()
        .map(|j| j["path"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(paths, ["/to-plain"]);
}

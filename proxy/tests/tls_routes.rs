//! TLS listeners over real sockets: SNI passthrough to a TLS backend, termination to a TCP
//! backend, and an HTTPS listener sharing a port with a passthrough listener.

#![allow(clippy::unwrap_used)]

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Pki {
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", admin)).await {
            let _ = s
                .write_all(b"GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            if out.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("proxy not ready");
}

/// A TLS backend that presents `leaf` and answers every connection with `tag`.
async fn tls_backend(leaf: &Leaf, tag: &'static str) -> u16 {
    let cert = rustls_pemfile::certs(&mut leaf.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let key: PrivateKeyDer = rustls_pemfile::private_key(&mut leaf.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    let _ = tls.write_all(tag.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    port
}

/// A plaintext backend: answers one HTTP/1.1 response carrying `tag`, or echoes raw bytes
/// prefixed with `tag` for non-HTTP input.
async fn plain_backend(tag: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                let req = &buf[..n];
                let reply = if req.starts_with(b"GET ") {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{tag}",
                        tag.len()
                    )
                } else {
                    format!("{tag}:{}", String::from_utf8_lossy(req))
                };
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

async fn tls_exchange(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    sni: &str,
    send: &[u8],
) -> std::io::Result<(CertificateDer<'static>, Vec<u8>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    if !send.is_empty() {
        tls.write_all(send).await?;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    Ok((peer, out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_terminate_and_mixed_ports() {
    let pki = Pki::new();
    let backend_leaf = pki.leaf(&["pass.test"]);
    let web_leaf = pki.leaf(&["web.test"]);
    let term_leaf = pki.leaf(&["*.term.test"]);
    let tls_be = tls_backend(&backend_leaf, "from-tls-backend").await;
    let plain_be = plain_backend("from-plain-backend").await;

    let dir = tempfile::tempdir().unwrap();
    for (name, leaf) in [("web", &web_leaf), ("term", &term_leaf)] {
        std::fs::write(dir.path().join(format!("{name}.crt")), &leaf.cert_pem).unwrap();
        std::fs::write(dir.path().join(format!("{name}.key")), &leaf.key_pem).unwrap();
    }
    let (mixed, term, admin) = (free_port(), free_port(), free_port());
    let d = dir.path().display();
    let config = format!(
        r#"
version = 1
[runtime]
admin_address = "127.0.0.1:{admin}"
grace_period = "0s"
shutdown_timeout = "1s"
[[listeners]]
name = "web"
address = "127.0.0.1"
port = {mixed}
protocol = "HTTPS"
hostname = "web.test"
tls = {{ certificates = ["web"] }}
[[listeners]]
name = "pass"
address = "127.0.0.1"
port = {mixed}
protocol = "TLS"
hostname = "pass.test"
tls = {{ mode = "Passthrough" }}
[[listeners]]
name = "term"
address = "127.0.0.1"
port = {term}
protocol = "TLS"
hostname = "*.term.test"
tls = {{ certificates = ["term"] }}
[certificates.web]
cert_file = "{d}/web.crt"
key_file = "{d}/web.key"
[certificates.term]
cert_file = "{d}/term.crt"
key_file = "{d}/term.key"
[backends.tls]
endpoints = ["127.0.0.1:{tls_be}"]
[backends.plain]
endpoints = ["127.0.0.1:{plain_be}"]
[[http_routes]]
name = "web"
listeners = ["web"]
[[http_routes.rules]]
backends = [{{ backend = "plain" }}]
[[tls_routes]]
name = "pass"
listeners = ["pass"]
backends = [{{ backend = "tls" }}]
[[tls_routes]]
name = "term"
listeners = ["term"]
backends = [{{ backend = "plain" }}]
"#
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let _proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_citoroute-proxy"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(admin).await;
    let client = pki.client();

    // Passthrough: the client completes its handshake with the backend itself.
    let (peer, body) = tls_exchange(&client, mixed, "pass.test", b"")
        .await
        .unwrap();
    assert_eq!(
        peer, backend_leaf.der,
        "passthrough must show the backend's certificate"
    );
    assert_eq!(body, b"from-tls-backend");

    // Same port, HTTPS listener: terminated by the proxy and routed as HTTP.
    let (peer, body) = tls_exchange(
        &client,
        mixed,
        "web.test",
        b"GET / HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(peer, web_leaf.der);
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("from-plain-backend"), "{text}");

    // Terminate: the proxy's certificate, then plaintext to a TCP backend.
    let (peer, body) = tls_exchange(&client, term, "db.term.test", b"hello")
        .await
        .unwrap();
    assert_eq!(peer, term_leaf.der);
    assert_eq!(body, b"from-plain-backend:hello");

    // No listener for the name: the connection is refused, nothing is served.
    assert!(
        tls_exchange(&client, mixed, "other.test", b"")
            .await
            .is_err()
    );

    // Every TLSRoute connection is counted, with its bytes; relays end asynchronously.
    let want = [
        r#"citoroute_tls_connections_total{backend="tls",mode="passthrough",outcome="ok",route="pass"} 1"#,
        r#"citoroute_tls_connections_total{backend="plain",mode="terminate",outcome="ok",route="term"} 1"#,
        r#"citoroute_tls_connections_total{backend="",mode="",outcome="no_route",route=""} 1"#,
        r#"citoroute_tls_active_connections{route="pass"} 0"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = admin_get(admin, "/metrics").await;
        if want.iter().all(|w| text.contains(w)) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for w in want {
        assert!(text.contains(w), "missing {w} in\n{text}");
    }
    let bytes = |dir: &str| -> u64 {
        let key = format!(r#"citoroute_tls_bytes_total{{direction="{dir}",route="term"}} "#);
        text.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(bytes("downstream_to_upstream"), 5, "\n{text}");
    assert_eq!(
        bytes("upstream_to_downstream"),
        "from-plain-backend:hello".len() as u64
    );
}

async fn admin_get(admin: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", admin)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

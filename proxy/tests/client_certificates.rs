//! Frontend mTLS over real sockets: listeners with `client_validation` checked by rustls
//! clients presenting real certificates (signed by a trusted CA, by another CA, or none), in
//! the strict and the insecure-fallback mode, and CA changes taking effect by reload alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A client certificate and its key, read back from the files [`Pki::leaf`] wrote.
struct ClientCert {
    chain: Vec<CertificateDer<'static>>,
    key_pem: Vec<u8>,
}

impl ClientCert {
    fn issued_by(ca: &Pki, dir: &Path, name: &str) -> ClientCert {
        let leaf = ca.leaf(dir, name, name);
        ClientCert {
            chain: vec![leaf.der],
            key_pem: std::fs::read(leaf.key_file).unwrap(),
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        rustls_pemfile::private_key(&mut self.key_pem.as_slice())
            .unwrap()
            .unwrap()
    }
}

/// One HTTPS GET over a fresh connection (no session resumption), presenting `cert`.
/// `Err` when the handshake or the request fails: with TLS 1.3 a refused client certificate
/// shows only when the client reads the server's alert.
async fn get(
    port: u16,
    sni: &str,
    server_root: &CertificateDer<'static>,
    cert: Option<&ClientCert>,
    tls12_only: bool,
) -> Result<Resp, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr(port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_string())?
    .map_err(|e| format!("TLS handshake: {e}"))?;
    let mut h1 = H1Conn::over(tls).await?;
    h1.get(sni, "/").await
}

/// Whether a GET passes with status 200.
async fn passes(
    port: u16,
    sni: &str,
    root: &CertificateDer<'static>,
    cert: Option<&ClientCert>,
) -> bool {
    matches!(get(port, sni, root, cert, false).await, Ok(r) if r.status == 200)
}

const CONFIG: &str = r#"
[[listeners]]
name = "strict"
address = "127.0.0.1"
port = @STRICT
protocol = "HTTPS"
hostname = "strict.test"
tls = { certificates = ["strict"], client_validation = { ca_files = [@STRICT_CAS] } }

[[listeners]]
name = "fallback"
address = "127.0.0.1"
port = @FALLBACK
protocol = "HTTPS"
hostname = "fallback.test"
tls = { certificates = ["fallback"], client_validation = { ca_files = ["@CA_A"], allow_insecure_fallback = @INSECURE } }

[[listeners]]
name = "open"
address = "127.0.0.1"
port = @OPEN
protocol = "HTTPS"
hostname = "open.test"
tls = { certificates = ["open"]@OPEN_VALIDATION }

[certificates.strict]
cert_file = "@DIR/strict.crt"
key_file = "@DIR/strict.key"

[certificates.fallback]
cert_file = "@DIR/fallback.crt"
key_file = "@DIR/fallback.key"

[certificates.open]
cert_file = "@DIR/open.crt"
key_file = "@DIR/open.key"

[backends.echo]
endpoints = ["@ECHO"]

[[http_routes]]
name = "all"
listeners = ["strict", "fallback", "open"]

[[http_routes.rules]]
backends = [{ backend = "echo" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_per_port_and_ca_changes_apply_on_reload() {
    let echo = Backend::start("echo", Proto::H1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let server_pki = Pki::new();
    for name in ["strict", "fallback", "open"] {
        server_pki.leaf(&d, name, &format!("{name}.test"));
    }
    let root = server_pki.root();
    let (ca_a, ca_b) = (Pki::new(), Pki::new());
    std::fs::write(d.join("ca-a.pem"), ca_a.root_pem()).unwrap();
    std::fs::write(d.join("ca-b.pem"), ca_b.root_pem()).unwrap();
    let cert_a = ClientCert::issued_by(&ca_a, &d, "client-a");
    let cert_b = ClientCert::issued_by(&ca_b, &d, "client-b");

    let (strict, fallback, open) = (free_port(), free_port(), free_port());
    let body = |strict_cas: &str, insecure: bool, open_validation: &str| {
        fill(
            CONFIG,
            &[
                ("@STRICT_CAS", strict_cas.to_string()),
                ("@STRICT", strict.to_string()),
                ("@FALLBACK", fallback.to_string()),
                ("@OPEN_VALIDATION", open_validation.to_string()),
                ("@OPEN", open.to_string()),
                ("@INSECURE", insecure.to_string()),
                ("@CA_A", d.join("ca-a.pem").display().to_string()),
                ("@DIR", d.display().to_string()),
                ("@ECHO", echo.addr.to_string()),
            ],
        )
    };
    let ca_a_file = format!("{:?}", d.join("ca-a.pem").display().to_string());
    let ca_b_file = format!("{:?}", d.join("ca-b.pem").display().to_string());
    let mut proxy =
        Proxy::start_in(dir, &body(&ca_a_file, true, ""), &[strict, fallback, open]).await;

    // Strict: only a certificate of CA A passes, over TLS 1.3 and TLS 1.2.
    for tls12 in [false, true] {
        let r = get(strict, "strict.test", &root, Some(&cert_a), tls12).await;
        let r = r.unwrap_or_else(|e| panic!("CA A, tls12={tls12}: {e}"));
        assert_eq!((r.status, r.backend()), (200, "echo".to_string()));
        assert!(
            get(strict, "strict.test", &root, Some(&cert_b), tls12)
                .await
                .is_err(),
            "a certificate of another CA passed (tls12={tls12})"
        );
        assert!(
            get(strict, "strict.test", &root, None, tls12)
                .await
                .is_err(),
            "no certificate passed (tls12={tls12})"
        );
    }
    // Insecure fallback: valid, foreign and missing certificates all pass.
    for (what, cert) in [
        ("CA A", Some(&cert_a)),
        ("CA B", Some(&cert_b)),
        ("none", None),
    ] {
        assert!(
            passes(fallback, "fallback.test", &root, cert).await,
            "fallback refused a client with certificate {what}"
        );
    }
    // No validation: no certificate needed.
    assert!(passes(open, "open.test", &root, None).await);

    // Reload, no restart: strict now trusts CA B only, fallback turns strict, and the open
    // port starts asking for CA A.
    let generation = proxy.metric("citoroute_config_generation", &[]).await;
    proxy.rewrite(&body(
        &ca_b_file,
        false,
        &format!(", client_validation = {{ ca_files = [{ca_a_file}] }}"),
    ));
    assert!(
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || async { proxy.metric("citoroute_config_generation", &[]).await > generation }
        )
        .await,
        "the new config was not applied; log:\n{}",
        proxy.log()
    );
    assert!(passes(strict, "strict.test", &root, Some(&cert_b)).await);
    assert!(!passes(strict, "strict.test", &root, Some(&cert_a)).await);
    assert!(passes(fallback, "fallback.test", &root, Some(&cert_a)).await);
    assert!(!passes(fallback, "fallback.test", &root, Some(&cert_b)).await);
    assert!(!passes(fallback, "fallback.test", &root, None).await);
    assert!(passes(open, "open.test", &root, Some(&cert_a)).await);
    assert!(!passes(open, "open.test", &root, None).await);
    proxy.assert_alive();
}

/// In Kubernetes a CA ConfigMap changes the mounted file, not the config: the proxy notices
/// the file and reloads by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_ca_file_takes_effect_without_a_config_change() {
    let echo = Backend::start("echo", Proto::H1).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let server_pki = Pki::new();
    let leaf = server_pki.leaf(&d, "server", "mtls.test");
    let root = server_pki.root();
    let (ca_a, ca_b) = (Pki::new(), Pki::new());
    let ca_file = d.join("ca.crt");
    std::fs::write(&ca_file, ca_a.root_pem()).unwrap();
    let cert_a = ClientCert::issued_by(&ca_a, &d, "client-a");
    let cert_b = ClientCert::issued_by(&ca_b, &d, "client-b");
    let port = free_port();
    let body = fill(
        r#"
[[listeners]]
name = "mtls"
address = "127.0.0.1"
port = @PORT
protocol = "HTTPS"
tls = { certificates = ["server"], client_validation = { ca_files = ["@CA"] } }

[certificates.server]
cert_file = "@CERT"
key_file = "@KEY"

[backends.echo]
endpoints = ["@ECHO"]

[[http_routes]]
name = "all"
listeners = ["mtls"]

[[http_routes.rules]]
backends = [{ backend = "echo" }]
"#,
        &[
            ("@PORT", port.to_string()),
            ("@CA", ca_file.display().to_string()),
            ("@CERT", leaf.cert_file.display().to_string()),
            ("@KEY", leaf.key_file.display().to_string()),
            ("@ECHO", echo.addr.to_string()),
        ],
    );
    let mut proxy = Proxy::start_in(dir, &body, &[port]).await;
    assert!(passes(port, "mtls.test", &root, Some(&cert_a)).await);
    assert!(!passes(port, "mtls.test", &root, Some(&cert_b)).await);

    // Replace the CA file the way a volume update does: write aside, rename over.
    let aside = d.join("ca.crt.new");
    std::fs::write(&aside, ca_b.root_pem()).unwrap();
    std::fs::rename(&aside, &ca_file).unwrap();
    assert!(
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || async { passes(port, "mtls.test", &root, Some(&cert_b)).await }
        )
        .await,
        "the new CA was not picked up; log:\n{}",
        proxy.log()
    );
    assert!(!passes(port, "mtls.test", &root, Some(&cert_a)).await);
    proxy.assert_alive();
}

//! `ca_file` on an LLM backend: a loopback HTTPS provider whose certificate a test CA signed
//! is refused with the system roots alone and reached once the backend trusts that CA.

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use llm_fakes::*;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Terminates TLS with `leaf` and pipes each connection to the plain fake at `to`.
async fn tls_front(leaf: &Leaf, to: SocketAddr) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(leaf.server_config(&[])));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(to).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn config(port: u16, front: SocketAddr, key_file: &str, ca_file: Option<&str>) -> String {
    format!(
        r#"[[listeners]]
name = "http"
address = "127.0.0.1"
port = {port}
protocol = "HTTP"

[llm_backends.private]
provider = "openai"
model = "gpt-4o-mini"
endpoint = "https://localhost:{front_port}"
api_key_file = {key_file:?}
{ca}

[[llm_routes]]
name = "chat"
listeners = ["http"]
backends = [{{ backend = "private" }}]
"#,
        front_port = front.port(),
        ca = ca_file
            .map(|f| format!("ca_file = {f:?}"))
            .unwrap_or_default(),
    )
}

async fn chat(port: u16) -> Resp {
    let req = h1_req("POST", "gw", "/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )))
        .unwrap();
    h1_send(addr(port), req).await.unwrap()
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_where_configured() {
    let fake = Fake::start(Kind::OpenAi).await;
    let pki = Pki::new();
    let certs = tempfile::tempdir().unwrap();
    let leaf = pki.leaf(certs.path(), "provider", "localhost");
    let front = tls_front(&leaf, fake.addr).await;

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("openai.key");
    std::fs::write(&key_file, OPENAI_KEY).unwrap();
    let key_file = key_file.display().to_string();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.root_pem()).unwrap();
    let ca_file = ca_file.display().to_string();

    // System roots only: the handshake fails, the client gets a 502 saying why.
    let port = free_port();
    let proxy = Proxy::start(&config(port, front, &key_file, None), &[port]).await;
    let r = chat(port).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        r.text().contains("UnknownIssuer") || r.text().contains("certificate"),
        "{}",
        r.text()
    );
    assert_eq!(fake.count(), 0);
    drop(proxy);

    // With the CA: through, over TLS.
    let port = free_port();
    let mut proxy = Proxy::start(&config(port, front, &key_file, Some(&ca_file)), &[port]).await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from OpenAI"
    );
    assert_eq!(fake.count(), 1);

    // A ca_file with no certificate in it is refused with the file named; the last good
    // config keeps serving.
    let empty = proxy.dir().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    proxy.rewrite(&config(
        port,
        front,
        &key_file,
        Some(&empty.display().to_string()),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !proxy.log().contains("no PEM certificate") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(proxy.log().contains("ca_file"), "{}", proxy.log());
    assert!(
        proxy.log().contains("no PEM certificate"),
        "{}",
        proxy.log()
    );
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

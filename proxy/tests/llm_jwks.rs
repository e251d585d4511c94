//! JWT keys that change at run time: a JWKS fetched from a URL (a loopback server serving real
//! RSA and P-256 keys) and refreshed in the background, early on an unknown `kid` (rate
//! limited), keeping the last good set through failures; a JWKS file re-read when it is
//! replaced; and a JWKS served over https with a certificate from a private CA, trusted only
//! through `jwks_ca_file`.

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use llm_fakes::*;
use rand::SeedableRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A signing key with its public JWK.
struct Key {
    kid: &'static str,
    alg: Algorithm,
    jwk: Value,
    private: EncodingKey,
}

impl Key {
    fn rsa(kid: &'static str, seed: u64) -> Key {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
        Key {
            kid,
            alg: Algorithm::RS256,
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64url(&key.n().to_bytes_be()), "e": b64url(&key.e().to_bytes_be())}),
            private: EncodingKey::from_rsa_der(&der),
        }
    }

    fn p256(kid: &'static str) -> Key {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        Key {
            kid,
            alg: Algorithm::ES256,
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256", "use": "sig",
                "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65])}),
            private: EncodingKey::from_ec_der(&kp.serialize_der()),
        }
    }

    fn token(&self, team: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.into());
        let claims = json!({"iss": "https://issuer.test", "aud": "citoroute", "sub": "s",
            "team": team, "exp": now + 600});
        encode(&h, &claims, &self.private).unwrap()
    }
}

fn jwks(keys: &[&Key]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

/// A loopback JWKS endpoint whose answer the test changes; counts the fetches (requests that
/// got through, so a refused TLS handshake is not one).
struct JwksServer {
    addr: SocketAddr,
    answer: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicU64>,
    tls: bool,
}

/// A TLS acceptor presenting `leaf`.
fn tls_acceptor(leaf: &Leaf) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(Arc::new(leaf.server_config(&[])))
}

impl JwksServer {
    async fn start(status: u16, body: String) -> JwksServer {
        Self::start_with(status, body, None).await
    }

    /// Over TLS with `leaf`'s certificate.
    async fn start_tls(status: u16, body: String, leaf: &Leaf) -> JwksServer {
        Self::start_with(status, body, Some(tls_acceptor(leaf))).await
    }

    async fn start_with(
        status: u16,
        body: String,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> JwksServer {
        let https = tls.is_some();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(Mutex::new((status, body)));
        let fetches = Arc::new(AtomicU64::new(0));
        let (a, f) = (answer.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (a, f, tls) = (a.clone(), f.clone(), tls.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (a, f) = (a.clone(), f.clone());
                        async move {
                            f.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = a.lock().unwrap().clone();
                            let status = if req.uri().path() == "/jwks" {
                                status
                            } else {
                                404
                            };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        JwksServer {
            addr,
            answer,
            fetches,
            tls: https,
        }
    }

    fn serve(&self, status: u16, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// `https://localhost:<port>/jwks` over TLS (the certificate names `localhost`).
    fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}/jwks", self.addr.port())
        } else {
            format!("http://{}/jwks", self.addr)
        }
    }
}

/// The gateway config: one route for consumer `team-a`, keys from `jwt_keys` (TOML lines).
fn config(port: u16, fake: &Fake, key_file: &str, jwt_keys: &str) -> String {
    format!(
        r#"[[listeners]]
name = "http"
address = "127.0.0.1"
port = {port}
protocol = "HTTP"

[llm_backends.gpt]
provider = "openai"
model = "gpt-4o-mini"
endpoint = "{url}"
api_key_file = {key_file:?}

[consumers.team-a]
jwt_claim = {{ key = "team", value = "a" }}

[jwt]
issuer = "https://issuer.test"
audiences = ["citoroute"]
{jwt_keys}

[[llm_routes]]
name = "chat"
listeners = ["http"]
consumers = ["team-a"]
backends = [{{ backend = "gpt" }}]
"#,
        url = fake.url(),
    )
}

async fn setup() -> (Fake, tempfile::TempDir, String, u16) {
    let fake = Fake::start(Kind::OpenAi).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("openai.key");
    std::fs::write(&key_file, OPENAI_KEY).unwrap();
    (fake, dir, key_file.display().to_string(), free_port())
}

async fn ask(port: u16, token: &str) -> Resp {
    let req = h1_req("POST", "gw", "/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )))
        .unwrap();
    h1_send(addr(port), req).await.unwrap()
}

/// Asks with `token` until the status is `want`, for at most `limit`; returns the last answer.
async fn ask_until(port: u16, token: &str, want: u16, limit: Duration) -> Resp {
    let deadline = Instant::now() + limit;
    loop {
        let r = ask(port, token).await;
        if r.status == want || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn jwks_url_rsa_and_ec_keys_and_a_rotation_seen_on_the_first_unknown_kid() {
    let rsa1 = Key::rsa("rsa-1", 11);
    let ec1 = Key::p256("ec-1");
    let ec2 = Key::p256("ec-2");
    let server = JwksServer::start(200, jwks(&[&rsa1, &ec1])).await;
    let (fake, dir, key_file, port) = setup().await;
    // An hour between scheduled fetches: every fetch after the first is one a request caused.
    let keys = format!(
        "jwks_url = {:?}\njwks_refresh_interval = \"1h\"",
        server.url()
    );
    let _proxy = Proxy::start_in(dir, &config(port, &fake, &key_file, &keys), &[port]).await;
    assert_eq!(server.fetches(), 1, "fetched once at start");

    for k in [&rsa1, &ec1] {
        let r = ask(port, &k.token("a")).await;
        assert_eq!(r.status, 200, "{}: {}", k.kid, r.text());
    }
    let r = ask(port, &rsa1.token("b")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(server.fetches(), 1, "known keys need no fetch");

    // The issuer rotates: ec-1 out, ec-2 in. The first ec-2 token makes the gateway look.
    server.serve(200, jwks(&[&rsa1, &ec2]));
    let r = ask(port, &ec2.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.fetches(), 2);
    let r = ask(port, &ec1.token("a")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("no key with kid ec-1"), "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");

    // Tokens naming made-up kids cannot make the gateway hammer the issuer: no new fetch
    // within the rate limit's gap.
    let forged = Key::p256("made-up");
    for _ in 0..5 {
        let r = ask(port, &forged.token("a")).await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert_eq!(server.fetches(), 2, "unknown kids are rate limited");
    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn jwks_url_down_at_start_then_refreshed_in_the_background_keeping_the_last_good_keys() {
    let rsa1 = Key::rsa("rsa-1", 12);
    let ec1 = Key::p256("ec-1");
    let ec2 = Key::p256("ec-2");
    let server = JwksServer::start(503, "unavailable".into()).await;
    let (fake, dir, key_file, port) = setup().await;
    let keys = format!(
        "jwks_url = {:?}\njwks_refresh_interval = \"1s\"",
        server.url()
    );
    let proxy = Proxy::start_in(dir, &config(port, &fake, &key_file, &keys), &[port]).await;

    // No keys yet: the gateway cannot judge tokens, which is its problem (503), not the
    // client's.
    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "jwks_unavailable");
    assert!(r.text().contains("503"), "{}", r.text());
    assert_eq!(fake.count(), 0);

    // The issuer comes back: the retries (1s apart at most) pick the keys up.
    server.serve(200, jwks(&[&rsa1, &ec1]));
    let r = ask_until(port, &rsa1.token("a"), 200, Duration::from_secs(15)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Scheduled refreshes run with no request at all.
    let before = server.fetches();
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.fetches() < before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.fetches() >= before + 2, "no background refresh");

    // A rotation published on the URL arrives by itself.
    server.serve(200, jwks(&[&ec2]));
    let deadline = Instant::now() + Duration::from_secs(15);
    let seen = server.fetches();
    while server.fetches() < seen + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = ask(port, &ec2.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ask(port, &ec1.token("a")).await;
    assert_eq!(r.status, 401, "{}", r.text());

    // The issuer breaks (an error status, then a document with no usable key): the last good
    // keys stay in use.
    for (status, body) in [
        (500, "oops".to_string()),
        (200, r#"{"keys":[]}"#.to_string()),
    ] {
        server.serve(status, body);
        let seen = server.fetches();
        let deadline = Instant::now() + Duration::from_secs(15);
        while server.fetches() < seen + 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(server.fetches() >= seen + 2, "no refresh attempts");
        let r = ask(port, &ec2.token("a")).await;
        assert_eq!(r.status, 200, "after {status}: {}", r.text());
    }
    assert!(
        proxy.log().contains("keeping the last good keys"),
        "{}",
        proxy.log()
    );
}

#[tokio::test]
async fn jwks_file_is_reread_when_it_is_replaced() {
    let rsa1 = Key::rsa("rsa-1", 13);
    let ec1 = Key::p256("ec-1");
    let (fake, dir, key_file, port) = setup().await;
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[&rsa1])).unwrap();
    let keys = format!("jwks_file = {:?}", jwks_file.display().to_string());
    let _proxy = Proxy::start_in(dir, &config(port, &fake, &key_file, &keys), &[port]).await;

    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // An unknown kid now uses up the early re-read for the next few seconds...
    let r = ask(port, &ec1.token("a")).await;
    assert_eq!(r.status, 401, "{}", r.text());
    // ...so the new key below can only arrive through the file watch. The file is replaced
    // the way a Secret volume is updated (a new file renamed over the old one).
    let tmp = jwks_file.with_extension("new");
    std::fs::write(&tmp, jwks(&[&ec1])).unwrap();
    std::fs::rename(&tmp, &jwks_file).unwrap();
    let r = ask_until(port, &ec1.token("a"), 200, Duration::from_millis(4000)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 401, "{}", r.text());

    // A broken file keeps the last good keys.
    std::fs::write(&tmp, "{not json").unwrap();
    std::fs::rename(&tmp, &jwks_file).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = ask(port, &ec1.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn jwks_url_over_https_from_a_private_ca_is_trusted_through_jwks_ca_file() {
    let rsa1 = Key::rsa("rsa-1", 14);
    let pki = Pki::new();
    let (fake, dir, key_file, port) = setup().await;
    let leaf = pki.leaf(dir.path(), "idp", "localhost");
    let server = JwksServer::start_tls(200, jwks(&[&rsa1]), &leaf).await;
    let ca_file = dir.path().join("idp-ca.pem");
    std::fs::write(&ca_file, pki.root_pem()).unwrap();
    let ca_file = ca_file.display().to_string();
    let not_a_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "not a certificate\n").unwrap();
    let not_a_ca = not_a_ca.display().to_string();
    let keys = |ca: Option<&str>| {
        let ca = ca
            .map(|f| format!("jwks_ca_file = {f:?}"))
            .unwrap_or_default();
        format!(
            "jwks_url = {:?}\njwks_refresh_interval = \"1h\"\n{ca}",
            server.url()
        )
    };

    // The system roots alone do not know the CA: the handshake fails, no key set arrives and
    // a valid token gets 503 (the gateway cannot judge it), naming the certificate problem.
    let mut proxy =
        Proxy::start_in(dir, &config(port, &fake, &key_file, &keys(None)), &[port]).await;
    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "jwks_unavailable");
    assert!(
        r.text().contains("UnknownIssuer") || r.text().contains("certificate"),
        "{}",
        r.text()
    );
    assert_eq!(server.fetches(), 0, "no request got through TLS");
    assert_eq!(fake.count(), 0);

    // With the CA: a new source (the CA is part of its key), fetched over TLS at once.
    proxy.rewrite(&config(port, &fake, &key_file, &keys(Some(&ca_file))));
    let r = ask_until(port, &rsa1.token("a"), 200, Duration::from_secs(15)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(server.fetches(), 1);
    let r = ask(port, &rsa1.token("b")).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // A CA file with no certificate refuses the config, naming the key; the last good config
    // keeps serving with its keys.
    proxy.rewrite(&config(port, &fake, &key_file, &keys(Some(&not_a_ca))));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("no PEM certificate") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.log().contains("jwks_ca_file"), "{}", proxy.log());
    assert!(
        proxy.log().contains("no PEM certificate"),
        "{}",
        proxy.log()
    );
    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // So does one that is not there.
    let missing = proxy.dir().join("missing-ca.pem").display().to_string();
    proxy.rewrite(&config(port, &fake, &key_file, &keys(Some(&missing))));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("cannot read") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy
            .log()
            .contains(&format!("jwks_ca_file: cannot read {missing}")),
        "{}",
        proxy.log()
    );
    let r = ask(port, &rsa1.token("a")).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Back to no CA: the source that trusts the CA is not shared with this one, which fails.
    proxy.rewrite(&config(port, &fake, &key_file, &keys(None)));
    let r = ask_until(port, &rsa1.token("a"), 503, Duration::from_secs(15)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "jwks_unavailable");
    assert_eq!(server.fetches(), 1);
}

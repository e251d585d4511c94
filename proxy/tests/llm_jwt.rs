//! AI gateway authentication: JWTs signed with a real RSA key, consumers identified by a
//! claim, per-route consumer lists, and per-consumer token limits.

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use llm_fakes::*;
use rand::SeedableRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// An RSA key pair: the JWKS of its public half and the private half for signing. (2048-bit
/// generation takes seconds in a debug build: one per test.)
fn rsa_keys(seed: u64) -> (String, EncodingKey) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
    let jwks = json!({"keys": [{
        "kty": "RSA", "kid": "gw-1", "use": "sig", "alg": "RS256",
        "n": b64url(&key.n().to_bytes_be()), "e": b64url(&key.e().to_bytes_be())
    }]});
    (jwks.to_string(), EncodingKey::from_rsa_der(&der))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &EncodingKey, claims: Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("gw-1".into());
    encode(&h, &claims, key).unwrap()
}

fn claims(sub: &str, team: &str) -> Value {
    json!({"iss": "https://issuer.test", "aud": "citoroute", "sub": sub, "team": team,
           "exp": now() + 600, "iat": now()})
}

fn ask(path: &str, bearer: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut b = h1_req("POST", "gw", path).header("content-type", "application/json");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::from(
        json!({"model": "m", "messages": [{"role": "user", "content": "Say hello"}]}).to_string(),
    )))
    .unwrap()
}

#[tokio::test]
async fn consumers_are_identified_by_jwt_claims() {
    let (jwks, key) = rsa_keys(7);
    let fake = Fake::start(Kind::OpenAi).await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let key_file = dir.path().join("openai.key");
    std::fs::write(&key_file, OPENAI_KEY).unwrap();
    let port = free_port();
    let body = format!(
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
token_limit_per_minute = 20

[consumers.team-b]
jwt_claim = {{ key = "team", value = "b" }}

[jwt]
issuer = "https://issuer.test"
audiences = ["citoroute"]
jwks_file = {jwks_file:?}
claim = "sub"

[[llm_routes]]
name = "team-a-only"
listeners = ["http"]
consumers = ["team-a"]
backends = [{{ backend = "gpt" }}]

[[llm_routes]]
name = "open"
listeners = ["http"]
path = {{ type = "Exact", value = "/open/chat" }}
backends = [{{ backend = "gpt" }}]
"#,
        url = fake.url(),
        key_file = key_file.display().to_string(),
        jwks_file = jwks_file.display().to_string(),
    );
    let proxy = Proxy::start_in(dir, &body, &[port]).await;
    let at = addr(port);
    let path = "/v1/chat/completions";

    // No token, a malformed one, one signed by another key, an expired one: 401.
    let expired = token(
        &key,
        json!({"iss": "https://issuer.test", "aud": "citoroute", "sub": "alice", "team": "a", "exp": now() - 3600}),
    );
    let wrong_aud = token(
        &key,
        json!({"iss": "https://issuer.test", "aud": "someone-else", "sub": "alice", "team": "a", "exp": now() + 600}),
    );
    // Same header and claims, another signature (one byte of it changed).
    let forged = {
        let t = token(&key, claims("alice", "a"));
        let (rest, sig) = t.rsplit_once('.').unwrap();
        let mut sig = sig.as_bytes().to_vec();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        format!("{rest}.{}", String::from_utf8(sig).unwrap())
    };
    for (what, t) in [
        ("no token", None),
        ("garbage", Some("not.a.jwt".to_string())),
        ("bad signature", Some(forged)),
        ("expired", Some(expired)),
        ("wrong audience", Some(wrong_aud)),
    ] {
        let r = h1_send(at, ask(path, t.as_deref())).await.unwrap();
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], "invalid_api_key", "{what}: {v}");
    }
    assert_eq!(fake.count(), 0);

    // A valid token of a consumer the route does not list: 403.
    let bob = token(&key, claims("bob", "b"));
    let r = h1_send(at, ask(path, Some(&bob))).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "permission_error");
    // A valid token of no consumer at all: 403 too.
    let carol = token(&key, claims("carol", "c"));
    let r = h1_send(at, ask(path, Some(&carol))).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(fake.count(), 0);

    // The listed consumer gets through; the provider sees the gateway's key, not the JWT.
    let minute = now() / 60;
    let alice = token(&key, claims("alice", "a"));
    let r = h1_send(at, ask(path, Some(&alice))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from OpenAI"
    );
    let seen = fake.seen();
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {OPENAI_KEY}").as_str()
    );
    assert_eq!(
        proxy
            .metric(
                "citoroute_llm_tokens_total",
                &[("consumer", "team-a"), ("type", "input")]
            )
            .await,
        9.0
    );

    // Token limit: 20 per minute; each answer costs 13, so the third request is refused.
    let r = h1_send(at, ask(path, Some(&alice))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h1_send(at, ask(path, Some(&alice))).await.unwrap();
    if now() / 60 == minute {
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait));
        assert_eq!(fake.count(), 2);
    }

    // The open route needs no token, and bob may use it.
    let r = h1_send(at, ask("/open/chat", None)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = h1_send(at, ask("/open/chat", Some(&bob))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

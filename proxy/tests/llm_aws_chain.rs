//! Bedrock backends without credential files take the AWS default chain: environment
//! variables, the shared credentials and config files, the container credentials endpoint
//! (a loopback server here, with a token file) with temporary credentials renewed before they
//! expire. EC2 instance metadata is off in every test (`AWS_EC2_METADATA_DISABLED=true`).

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use bytes::Bytes;
use citoroute_llm::Credentials;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use llm_fakes::*;
use serde_json::json;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

fn aws(id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials::Aws {
        access_key_id: id.into(),
        secret_access_key: secret.into(),
        session_token: token.map(str::to_string),
    }
}

fn config(port: u16, fake: &Fake) -> String {
    format!(
        r#"[[listeners]]
name = "http"
address = "127.0.0.1"
port = {port}
protocol = "HTTP"

[llm_backends.nova]
provider = "bedrock"
model = "amazon.nova-lite-v1:0"
endpoint = "{url}"
region = "{REGION}"

[[llm_routes]]
name = "chat"
listeners = ["http"]
backends = [{{ backend = "nova" }}]
"#,
        url = fake.url(),
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

/// The access key id and session token of the last request the fake saw.
fn last_signer(fake: &Fake) -> (String, Option<String>) {
    let seen = fake.seen();
    let last = seen.last().unwrap();
    let auth = last.headers["authorization"].to_str().unwrap().to_string();
    let id = auth
        .split("Credential=")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    let token = last
        .headers
        .get("x-amz-security-token")
        .map(|v| v.to_str().unwrap().to_string());
    (id, token)
}

async fn bedrock_accepting(creds: Vec<Credentials>) -> Fake {
    Fake::start_with(
        Kind::Bedrock,
        Fault {
            aws: creds,
            ..Fault::default()
        },
    )
    .await
}

#[tokio::test]
async fn credentials_from_the_environment() {
    let fake = bedrock_accepting(vec![aws("AKIDENV", "env-secret", Some("env-token"))]).await;
    let port = free_port();
    let _proxy = Proxy::start_with_env(
        tempfile::tempdir().unwrap(),
        &config(port, &fake),
        &[port],
        &[
            ("AWS_ACCESS_KEY_ID", Some("AKIDENV".into())),
            ("AWS_SECRET_ACCESS_KEY", Some("env-secret".into())),
            ("AWS_SESSION_TOKEN", Some("env-token".into())),
        ],
    )
    .await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from Bedrock"
    );
    assert_eq!(
        last_signer(&fake),
        ("AKIDENV".to_string(), Some("env-token".to_string()))
    );
}

#[tokio::test]
async fn credentials_from_the_profile_files() {
    let fake = bedrock_accepting(vec![
        aws("AKIDCONFIG", "config-secret", None),
        aws("AKIDSHARED", "shared-secret", None),
    ])
    .await;

    // A named profile in the config file (AWS_PROFILE).
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config");
    std::fs::write(
        &config_file,
        "[default]\nregion = us-east-1\n\n[profile ci]\naws_access_key_id = AKIDCONFIG\naws_secret_access_key = config-secret\n",
    )
    .unwrap();
    let port = free_port();
    let env = [
        ("AWS_CONFIG_FILE", Some(config_file.display().to_string())),
        ("AWS_PROFILE", Some("ci".into())),
    ];
    let proxy = Proxy::start_with_env(dir, &config(port, &fake), &[port], &env).await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_signer(&fake), ("AKIDCONFIG".to_string(), None));
    drop(proxy);

    // The default profile of the shared credentials file.
    let dir = tempfile::tempdir().unwrap();
    let creds_file = dir.path().join("credentials");
    std::fs::write(
        &creds_file,
        "[default]\naws_access_key_id = AKIDSHARED\naws_secret_access_key = shared-secret\n",
    )
    .unwrap();
    let port = free_port();
    let env = [(
        "AWS_SHARED_CREDENTIALS_FILE",
        Some(creds_file.display().to_string()),
    )];
    let _proxy = Proxy::start_with_env(dir, &config(port, &fake), &[port], &env).await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(last_signer(&fake), ("AKIDSHARED".to_string(), None));
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time (the container endpoint's `Expiration`).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
}

#[tokio::test]
async fn temporary_credentials_from_the_container_endpoint_are_renewed() {
    // The endpoint hands out short-lived credentials first, longer ones after.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let auth_seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (c, a) = (calls.clone(), auth_seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (c, a) = (c.clone(), a.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (c, a) = (c.clone(), a.clone());
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        a.lock().unwrap().push(auth.clone());
                        if auth != "container-secret-token" || req.uri().path() != "/creds" {
                            return Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(401)
                                    .body(Full::new(Bytes::from_static(b"{}")))
                                    .unwrap(),
                            );
                        }
                        let n = c.fetch_add(1, Ordering::SeqCst);
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap()
                            .as_secs();
                        let (id, secret, token, life) = if n == 0 {
                            ("ASIAFIRST", "first-secret", "first-token", 6)
                        } else {
                            ("ASIASECOND", "second-secret", "second-token", 3600)
                        };
                        let body = json!({"AccessKeyId": id, "SecretAccessKey": secret,
                            "Token": token, "Expiration": rfc3339(now + life)});
                        Ok(hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let fake = bedrock_accepting(vec![
        aws("ASIAFIRST", "first-secret", Some("first-token")),
        aws("ASIASECOND", "second-secret", Some("second-token")),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "container-secret-token").unwrap();
    let port = free_port();
    let env = [
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            Some(format!("http://{endpoint}/creds")),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            Some(token_file.display().to_string()),
        ),
    ];
    let _proxy = Proxy::start_with_env(dir, &config(port, &fake), &[port], &env).await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = last_signer(&fake);
    assert_eq!(
        first,
        ("ASIAFIRST".to_string(), Some("first-token".to_string()))
    );

    // The first set lasts 6 s: it is replaced before it runs out, with no failed request.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = chat(port).await;
        assert_eq!(r.status, 200, "{}", r.text());
        if last_signer(&fake).0 == "ASIASECOND" || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        last_signer(&fake),
        ("ASIASECOND".to_string(), Some("second-token".to_string()))
    );
    assert!(
        auth_seen
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == "container-secret-token"),
        "the token file's content is the Authorization header"
    );
}

#[tokio::test]
async fn no_credentials_anywhere_is_a_clear_502() {
    let fake = bedrock_accepting(vec![]).await;
    let port = free_port();
    let _proxy = Proxy::start_with_env(
        tempfile::tempdir().unwrap(),
        &config(port, &fake),
        &[port],
        &[],
    )
    .await;
    let r = chat(port).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("no AWS credentials"), "{}", r.text());
    assert_eq!(fake.count(), 0);
}

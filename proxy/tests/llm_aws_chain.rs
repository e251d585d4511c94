//! Bedrock backends without credential files take the AWS default chain: environment
//! variables, the shared credentials and config files, web identity (EKS IRSA: a token file
//! exchanged at STS), the container credentials endpoint (with a token file) with temporary
//! credentials renewed before they expire, and EC2 instance metadata (IMDSv2). STS, the
//! container endpoint and IMDS are loopback fakes speaking the documented wire formats; EC2
//! instance metadata is off (`AWS_EC2_METADATA_DISABLED=true`) in every test but its own, so
//! nothing leaves the machine.

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use bytes::Bytes;
use citoroute_llm::Credentials;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use llm_fakes::*;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
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

/// A request one of the loopback fakes below (STS, IMDS) received.
#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: String,
}

/// A fake's answer: status, headers, body.
type Reply = (u16, Vec<(&'static str, String)>, String);

/// A loopback HTTP/1 server that records every request and answers it with `answer`.
async fn loopback(
    answer: impl Fn(&Hit) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (h, answer) = (h.clone(), answer.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (h, answer) = (h.clone(), answer.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let hit = Hit {
                            method: parts.method.to_string(),
                            path: parts.uri.path().to_string(),
                            headers: parts.headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        let (status, headers, text) = answer(&hit);
                        h.lock().unwrap().push(hit);
                        let mut resp = hyper::Response::builder().status(status);
                        for (k, v) in headers {
                            resp = resp.header(k, v);
                        }
                        Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(text))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

/// `%XX` and `+` decoding of one `application/x-www-form-urlencoded` component.
fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = s
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

#[test]
fn form_bodies() {
    let f = form("Action=Assume&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&A=b+c&Empty=");
    assert_eq!(f["Action"], "Assume");
    assert_eq!(f["RoleArn"], "arn:aws:iam::1:role/r");
    assert_eq!(f["A"], "b c");
    assert_eq!(f["Empty"], "");
}

/// Empty config and credentials files: the profile link of the chain finds nothing.
fn empty_profile_files(dir: &tempfile::TempDir) -> [(&'static str, Option<String>); 2] {
    let config = dir.path().join("empty-config");
    let creds = dir.path().join("empty-credentials");
    std::fs::write(&config, "").unwrap();
    std::fs::write(&creds, "").unwrap();
    [
        ("AWS_CONFIG_FILE", Some(config.display().to_string())),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            Some(creds.display().to_string()),
        ),
    ]
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn web_identity_credentials_from_sts() {
    // A projected service account token as EKS writes it (header.payload.signature).
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImNpdG8ifQ.eyJpc3MiOiJodHRwczovL29pZGMuZWtzLnVzLWVhc3QtMS5hbWF6b25hd3MuY29tL2lkL0VYQU1QTEUiLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YWk6Y2l0b3JvdXRlIiwiYXVkIjpbInN0cy5hbWF6b25hd3MuY29tIl19.c2lnbmF0dXJlLW5vdC1jaGVja2Vk";
    const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/citoroute-bedrock";
    const SESSION: &str = "citoroute-gw";

    // STS AssumeRoleWithWebIdentity (query protocol: a form POST, an XML answer).
    let (sts, hits) = loopback(|hit| {
        let f = form(&hit.body);
        let field = |k: &str| f.get(k).map(String::as_str);
        let form_post = hit.headers.get("content-type").is_some_and(|v| {
            v.to_str()
                .unwrap_or("")
                .starts_with("application/x-www-form-urlencoded")
        });
        if hit.method != "POST"
            || hit.path != "/"
            || !form_post
            || field("Action") != Some("AssumeRoleWithWebIdentity")
            || field("Version") != Some("2011-06-15")
            || field("RoleArn") != Some(ROLE_ARN)
            || field("RoleSessionName") != Some(SESSION)
            || field("WebIdentityToken") != Some(TOKEN)
        {
            return (
                400,
                vec![("content-type", "text/xml".into())],
                r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>unexpected AssumeRoleWithWebIdentity request</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"#.into(),
            );
        }
        let body = format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ai:citoroute</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/citoroute-bedrock/{SESSION}</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:{SESSION}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>irsa-session-token</SessionToken>
      <SecretAccessKey>irsa-secret</SecretAccessKey>
      <Expiration>{}</Expiration>
      <AccessKeyId>ASIAIRSA</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"#,
            rfc3339(unix_now() + 3600)
        );
        (
            200,
            vec![
                ("content-type", "text/xml".into()),
                ("x-amzn-requestid", "ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE".into()),
            ],
            body,
        )
    })
    .await;

    let fake = bedrock_accepting(vec![aws(
        "ASIAIRSA",
        "irsa-secret",
        Some("irsa-session-token"),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let port = free_port();
    let mut env = empty_profile_files(&dir).to_vec();
    env.extend([
        (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            Some(token_file.display().to_string()),
        ),
        ("AWS_ROLE_ARN", Some(ROLE_ARN.into())),
        ("AWS_ROLE_SESSION_NAME", Some(SESSION.into())),
        // The STS client of the web identity link reads the service-specific endpoint
        // variable (then `AWS_ENDPOINT_URL`); its region is the backend's.
        ("AWS_ENDPOINT_URL_STS", Some(format!("http://{sts}"))),
    ]);
    let _proxy = Proxy::start_with_env(dir, &config(port, &fake), &[port], &env).await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        last_signer(&fake),
        (
            "ASIAIRSA".to_string(),
            Some("irsa-session-token".to_string())
        )
    );

    let hits = hits.lock().unwrap().clone();
    assert!(!hits.is_empty());
    for hit in &hits {
        let f = form(&hit.body);
        assert_eq!((hit.method.as_str(), hit.path.as_str()), ("POST", "/"));
        assert_eq!(f["Action"], "AssumeRoleWithWebIdentity", "{}", hit.body);
        assert_eq!(f["RoleArn"], ROLE_ARN);
        assert_eq!(f["RoleSessionName"], SESSION);
        assert_eq!(f["WebIdentityToken"], TOKEN);
        assert!(
            hit.headers.get("authorization").is_none(),
            "AssumeRoleWithWebIdentity is an unsigned call"
        );
    }
}

#[tokio::test]
async fn instance_metadata_credentials_take_the_imdsv2_token() {
    const IMDS_TOKEN: &str = "AQAEAHh0ZXN0LWltZHMtc2Vzc2lvbi10b2tlbg==";
    const ROLE: &str = "citoroute-node";
    const CREDS: &str = "/latest/meta-data/iam/security-credentials/";
    const CREDS_EXTENDED: &str = "/latest/meta-data/iam/security-credentials-extended/";

    let (imds, hits) = loopback(|hit| {
        let text = |status: u16, body: &str| (status, vec![], body.to_string());
        if hit.method == "PUT" && hit.path == "/latest/api/token" {
            // The TTL header is required (1 s to 6 h); proxied requests are refused.
            let ttl = hit
                .headers
                .get("x-aws-ec2-metadata-token-ttl-seconds")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|t| (1..=21_600).contains(t));
            if hit.headers.contains_key("x-forwarded-for") {
                return text(403, "");
            }
            let Some(ttl) = ttl else {
                return text(400, "");
            };
            return (
                200,
                vec![("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())],
                IMDS_TOKEN.into(),
            );
        }
        if hit.method != "GET" {
            return text(405, "");
        }
        let token = hit
            .headers
            .get("x-aws-ec2-metadata-token")
            .and_then(|v| v.to_str().ok());
        if token != Some(IMDS_TOKEN) {
            return text(401, "");
        }
        let Some(role) = hit
            .path
            .strip_prefix(CREDS)
            .or_else(|| hit.path.strip_prefix(CREDS_EXTENDED))
        else {
            return text(404, "");
        };
        if role.is_empty() {
            return text(200, ROLE);
        }
        if role != ROLE {
            return text(404, "");
        }
        let now = unix_now();
        let body = json!({
            "Code": "Success",
            "LastUpdated": rfc3339(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": "ASIAIMDS",
            "SecretAccessKey": "imds-secret",
            "Token": "imds-session-token",
            "Expiration": rfc3339(now + 6 * 3600),
        });
        (
            200,
            vec![("content-type", "text/plain".into())],
            serde_json::to_string_pretty(&body).unwrap(),
        )
    })
    .await;

    let fake = bedrock_accepting(vec![aws(
        "ASIAIMDS",
        "imds-secret",
        Some("imds-session-token"),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = empty_profile_files(&dir).to_vec();
    env.extend([
        ("AWS_EC2_METADATA_DISABLED", None),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            Some(format!("http://{imds}")),
        ),
    ]);
    let _proxy = Proxy::start_with_env(dir, &config(port, &fake), &[port], &env).await;
    let r = chat(port).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        last_signer(&fake),
        (
            "ASIAIMDS".to_string(),
            Some("imds-session-token".to_string())
        )
    );

    // The session token came first and every metadata read carried it (none got a 401).
    let hits = hits.lock().unwrap().clone();
    let summary: Vec<(String, String)> = hits
        .iter()
        .map(|h| (h.method.clone(), h.path.clone()))
        .collect();
    assert_eq!(
        (hits[0].method.as_str(), hits[0].path.as_str()),
        ("PUT", "/latest/api/token"),
        "{summary:?}"
    );
    let gets: Vec<&Hit> = hits.iter().filter(|h| h.method == "GET").collect();
    assert!(gets.len() >= 2, "{summary:?}");
    assert!(
        gets.iter().all(|h| h
            .headers
            .get("x-aws-ec2-metadata-token")
            .is_some_and(|v| v == IMDS_TOKEN)),
        "{summary:?}"
    );
    assert!(
        gets.iter()
            .any(|h| h.path == CREDS || h.path == CREDS_EXTENDED),
        "{summary:?}"
    );
    assert!(
        gets.iter()
            .any(|h| h.path == format!("{CREDS}{ROLE}")
                || h.path == format!("{CREDS_EXTENDED}{ROLE}")),
        "{summary:?}"
    );
}

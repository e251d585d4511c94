//! Snapshot tests: every directory under `tests/snapshots/<provider>/<case>/`
//! is one case.
//!
//! Inputs: `request.json` (the client's body), optionally
//! `provider_response.json` (+ `provider_status`, default 200), `stream.sse`
//! (OpenAI/Anthropic upstream stream) or `stream.json` (Bedrock: a list of
//! `{"event": type, "payload": {...}}` / `{"exception": type, "payload":
//! {...}}` frames, encoded to a real event stream here).
//!
//! Expected outputs: `expected_upstream.json` (method, URI, headers, body, or
//! the error), `expected_client.json` (status, body, usage),
//! `expected_client.sse` and `expected_stream_meta.json` (usage, first
//! token). Run with `UPDATE_SNAPSHOTS=1` to rewrite them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use citoroute_llm::{
    BackendTarget, Credentials, Provider, ResponseContext, build_upstream_request, eventstream,
    sigv4, stream_translator, translate_response,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const CREATED: u64 = 1_700_000_100;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn update() -> bool {
    std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn aws_creds() -> Credentials {
    Credentials::Aws {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("session-token-example".into()),
    }
}

fn target(provider: &str) -> (Provider, BackendTarget, Credentials) {
    match provider {
        "openai" => (
            Provider::OpenAi,
            BackendTarget {
                provider: Provider::OpenAi,
                model: "gpt-4o-mini-2024-07-18".into(),
                endpoint: "https://api.openai.com/v1".into(),
                region: None,
                anthropic_version: None,
            },
            Credentials::ApiKey("sk-test-openai".into()),
        ),
        "anthropic" => (
            Provider::Anthropic,
            BackendTarget {
                provider: Provider::Anthropic,
                model: "claude-sonnet-4-5-20250929".into(),
                endpoint: String::new(),
                region: None,
                anthropic_version: None,
            },
            Credentials::ApiKey("sk-ant-test".into()),
        ),
        "bedrock" => (
            Provider::Bedrock,
            BackendTarget {
                provider: Provider::Bedrock,
                model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
                endpoint: String::new(),
                region: Some("us-east-1".into()),
                anthropic_version: None,
            },
            aws_creds(),
        ),
        other => panic!("unknown provider dir {other}"),
    }
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for p in ["openai", "anthropic", "bedrock"] {
        let dir = root().join(p);
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("provider dir")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for e in entries {
            out.push((p.to_string(), e));
        }
    }
    out
}

/// Compares (or rewrites) a JSON snapshot; returns a failure description.
fn check_json(path: &Path, actual: &Value) -> Option<String> {
    let text = serde_json::to_string_pretty(actual).expect("serialize") + "\n";
    if update() {
        fs::write(path, text).expect("write snapshot");
        return None;
    }
    let expected: Value = match fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s).expect("snapshot is JSON"),
        Err(_) => return Some(format!("{} missing; actual:\n{text}", path.display())),
    };
    (expected != *actual).then(|| format!("{} differs; actual:\n{text}", path.display()))
}

fn check_text(path: &Path, actual: &str) -> Option<String> {
    if update() {
        fs::write(path, actual).expect("write snapshot");
        return None;
    }
    match fs::read_to_string(path) {
        Ok(s) if s == actual => None,
        Ok(_) => Some(format!("{} differs; actual:\n{actual}", path.display())),
        Err(_) => Some(format!("{} missing; actual:\n{actual}", path.display())),
    }
}

/// The upstream stream bytes of a case, if it has a stream.
fn stream_bytes(dir: &Path) -> Option<Vec<u8>> {
    if let Ok(b) = fs::read(dir.join("stream.sse")) {
        return Some(b);
    }
    let frames: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("stream.json")).ok()?).expect("json");
    let mut out = Vec::new();
    for f in frames.as_array().expect("frame list") {
        let payload = f["payload"].to_string();
        if let Some(e) = f.get("event").and_then(Value::as_str) {
            out.extend(eventstream::encode_event(e, payload.as_bytes()));
        } else if let Some(e) = f.get("exception").and_then(Value::as_str) {
            out.extend(eventstream::encode_exception(e, payload.as_bytes()));
        }
    }
    Some(out)
}

fn run_stream(provider: Provider, ctx: &ResponseContext, pieces: &[&[u8]]) -> (Vec<u8>, Value) {
    let mut t = stream_translator(provider, ctx);
    let mut out = Vec::new();
    let mut error = Value::Null;
    for p in pieces {
        match t.feed(p) {
            Ok(b) => out.extend(b),
            Err(e) => {
                error = e.to_openai_value();
                break;
            }
        }
    }
    out.extend(t.finish());
    let usage = t.usage().map(|u| {
        json!({"prompt": u.prompt_tokens, "completion": u.completion_tokens,
               "total": u.total_tokens, "cached": u.cached_prompt_tokens})
    });
    let meta = json!({"usage": usage, "saw_first_token": t.saw_first_token(), "feed_error": error});
    (out, meta)
}

struct StreamCase {
    name: String,
    provider: Provider,
    ctx: ResponseContext,
    bytes: Vec<u8>,
    expected: Vec<u8>,
}

fn run_case(provider_dir: &str, dir: &Path, failures: &mut Vec<String>) -> Option<StreamCase> {
    let (provider, target, creds) = target(provider_dir);
    let request = fs::read(dir.join("request.json")).expect("request.json");
    let upstream = build_upstream_request(&target, &creds, &request, now());
    let snapshot = match &upstream {
        Ok(u) => {
            let headers: BTreeMap<String, String> = u
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().expect("ascii").to_string()))
                .collect();
            let body: Value = serde_json::from_slice(&u.body).expect("upstream body is JSON");
            json!({
                "method": u.method.as_str(),
                "uri": u.uri.to_string(),
                "headers": headers,
                "body": body,
                "stream": u.stream,
                "client_model": u.client_model,
                "include_usage": u.include_usage,
            })
        }
        Err(e) => json!({"error": {"status": e.status, "body": e.to_openai_value()}}),
    };
    failures.extend(check_json(&dir.join("expected_upstream.json"), &snapshot));
    let Ok(u) = upstream else {
        return None;
    };
    if provider == Provider::Bedrock {
        let mut req = http::Request::builder()
            .method(u.method.clone())
            .uri(u.uri.clone())
            .body(())
            .expect("request");
        *req.headers_mut() = u.headers.clone();
        let (parts, ()) = req.into_parts();
        if let Err(e) = sigv4::verify(&parts, &u.body, &creds, "us-east-1", "bedrock", now()) {
            failures.push(format!("{}: signature does not verify: {e}", dir.display()));
        }
    }
    let ctx = u.response_context("chatcmpl-snapshot", CREATED);
    if let Ok(body) = fs::read(dir.join("provider_response.json")) {
        let status = fs::read_to_string(dir.join("provider_status"))
            .map(|s| s.trim().parse().expect("status"))
            .unwrap_or(200);
        let t = translate_response(provider, status, &body, &ctx);
        let usage = t.usage.map(|u| {
            json!({"prompt": u.prompt_tokens, "completion": u.completion_tokens,
                   "total": u.total_tokens, "cached": u.cached_prompt_tokens})
        });
        let actual = json!({
            "status": t.status,
            "body": serde_json::from_slice::<Value>(&t.body).expect("client body is JSON"),
            "usage": usage,
        });
        failures.extend(check_json(&dir.join("expected_client.json"), &actual));
    }
    let bytes = stream_bytes(dir)?;
    let (out, meta) = run_stream(provider, &ctx, &[&bytes]);
    let text = String::from_utf8(out.clone()).expect("utf-8 output");
    failures.extend(check_text(&dir.join("expected_client.sse"), &text));
    failures.extend(check_json(&dir.join("expected_stream_meta.json"), &meta));
    Some(StreamCase {
        name: dir.display().to_string(),
        provider,
        ctx,
        bytes,
        expected: out,
    })
}

struct Results {
    streams: Vec<StreamCase>,
    failures: Vec<String>,
    count: usize,
}

/// Runs every case once per process (both tests share it, so snapshot
/// updates are written once).
fn results() -> &'static Results {
    static RESULTS: OnceLock<Results> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let mut failures = Vec::new();
        let cases = cases();
        let count = cases.len();
        let streams = cases
            .into_iter()
            .filter_map(|(p, dir)| run_case(&p, &dir, &mut failures))
            .collect();
        Results {
            streams,
            failures,
            count,
        }
    })
}

#[test]
fn snapshots() {
    let r = results();
    assert!(
        r.count >= 30,
        "expected the full case set, found {}",
        r.count
    );
    assert!(r.streams.len() >= 10, "expected streaming cases");
    assert!(r.failures.is_empty(), "{}", r.failures.join("\n\n"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Splitting a stream at arbitrary points never changes the output.
    #[test]
    fn chunk_boundaries_do_not_matter(
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..24),
        single_bytes in any::<bool>(),
    ) {
        for case in &results().streams {
            let len = case.bytes.len();
            let mut points: Vec<usize> = if single_bytes && len < 4096 {
                (0..=len).collect()
            } else {
                let mut p: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
                p.push(0);
                p.push(len);
                p
            };
            points.sort_unstable();
            points.dedup();
            let pieces: Vec<&[u8]> = points.windows(2).map(|w| &case.bytes[w[0]..w[1]]).collect();
            let (out, _) = run_stream(case.provider, &case.ctx, &pieces);
            prop_assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&case.expected),
                "case {}", case.name
            );
        }
    }
}

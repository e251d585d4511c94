//! Fake LLM providers for the AI gateway tests, speaking the documented wire formats:
//!
//! * OpenAI chat completions: JSON, or `data: {chunk}` server-sent events ending in
//!   `data: [DONE]` (a usage chunk when `stream_options.include_usage` is set).
//! * Anthropic Messages: JSON, or `event:`/`data:` SSE (message_start, content_block_start,
//!   ping, content_block_delta, content_block_stop, message_delta, message_stop); errors as
//!   `{"type":"error","error":{...}}`.
//! * Bedrock Converse / ConverseStream: JSON, or binary event-stream frames (with CRCs) made
//!   by `citoroute_llm::eventstream::encode_event`; every request's SigV4 signature is
//!   recomputed with `citoroute_llm::sigv4::verify` and a wrong one gets 403.
//!
//! Each fake checks its provider's authentication, records what it received, and can be told
//! to fail every request with a status (and `retry-after`) or to stall.

#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use citoroute_llm::Credentials;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;

pub const OPENAI_KEY: &str = "sk-test-openai";
pub const ANTHROPIC_KEY: &str = "sk-ant-test";
pub const AWS_ID: &str = "AKIDTESTEXAMPLE";
pub const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYTESTKEY";
pub const REGION: &str = "us-east-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
    Bedrock,
}

/// What a fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// How a fake misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Answer every request with this status and the provider's error body.
    pub status: Option<u16>,
    pub retry_after: Option<u64>,
    /// Wait this long before answering.
    pub stall: Option<Duration>,
    /// AWS credentials a Bedrock fake accepts (any of them); empty: `AWS_ID`/`AWS_SECRET`.
    pub aws: Vec<Credentials>,
}

pub struct Fake {
    pub addr: SocketAddr,
    pub kind: Kind,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Streams whose body was dropped before the end (client disconnects reaching us).
    pub aborted: Arc<AtomicU64>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A body sent as separate frames with a short pause between them, as a real stream is.
fn chunked(parts: Vec<Vec<u8>>, gap: Duration, aborted: Arc<AtomicU64>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for p in parts {
            if tx.send(Bytes::from(p)).await.is_err() {
                aborted.fetch_add(1, Ordering::SeqCst);
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

fn json_resp(status: u16, v: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(v.to_string()))
        .unwrap()
}

impl Fake {
    pub async fn start(kind: Kind) -> Fake {
        Self::start_with(kind, Fault::default()).await
    }

    pub async fn start_with(kind: Kind, fault: Fault) -> Fake {
        Self::start_slow(kind, fault, Duration::from_millis(5)).await
    }

    /// Like [`Fake::start_with`], with `gap` between the frames of a stream.
    pub async fn start_slow(kind: Kind, fault: Fault, gap: Duration) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let aborted = Arc::new(AtomicU64::new(0));
        let (seen2, aborted2) = (seen.clone(), aborted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, aborted, fault) = (seen2.clone(), aborted2.clone(), fault.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, aborted, fault) = (seen.clone(), aborted.clone(), fault.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            seen.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                headers: parts.headers.clone(),
                                body: v.clone(),
                            });
                            if let Some(d) = fault.stall {
                                tokio::time::sleep(d).await;
                            }
                            Ok::<_, Infallible>(answer(
                                kind, &parts, &body, &v, &fault, gap, aborted,
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Fake {
            addr,
            kind,
            seen,
            aborted,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The text of the last user message (string content or text parts).
fn last_user_text(v: &Value) -> String {
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    let Some(m) = msgs.iter().rev().find(|m| m["role"] == "user") else {
        return String::new();
    };
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn provider_error(
    kind: Kind,
    status: u16,
    message: &str,
    retry_after: Option<u64>,
) -> Response<Body> {
    let mut r = match kind {
        Kind::OpenAi => json_resp(
            status,
            json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
        ),
        Kind::Anthropic => {
            let t = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json_resp(
                status,
                json!({"type": "error", "error": {"type": t, "message": message}}),
            )
        }
        Kind::Bedrock => {
            let t = match status {
                400 => "ValidationException",
                403 => "AccessDeniedException",
                429 => "ThrottlingException",
                503 => "ServiceUnavailableException",
                _ => "InternalServerException",
            };
            let mut r = json_resp(status, json!({"message": message}));
            r.headers_mut()
                .insert("x-amzn-errortype", http::HeaderValue::from_static(t));
            r
        }
    };
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert("retry-after", http::HeaderValue::from(s));
    }
    r
}

fn answer(
    kind: Kind,
    parts: &http::request::Parts,
    raw: &Bytes,
    v: &Value,
    fault: &Fault,
    gap: Duration,
    aborted: Arc<AtomicU64>,
) -> Response<Body> {
    // Authentication first, as the providers do.
    match kind {
        Kind::OpenAi => {
            if parts.uri.path() != "/v1/chat/completions" {
                return provider_error(kind, 404, "unknown path", None);
            }
            let want = format!("Bearer {OPENAI_KEY}");
            if parts.headers.get("authorization").map(|h| h.as_bytes()) != Some(want.as_bytes()) {
                return provider_error(kind, 401, "Incorrect API key provided", None);
            }
        }
        Kind::Anthropic => {
            if parts.uri.path() != "/v1/messages" {
                return provider_error(kind, 404, "unknown path", None);
            }
            if parts.headers.get("x-api-key").map(|h| h.as_bytes())
                != Some(ANTHROPIC_KEY.as_bytes())
            {
                return provider_error(kind, 401, "invalid x-api-key", None);
            }
            if parts.headers.get("anthropic-version").is_none() {
                return provider_error(kind, 400, "anthropic-version header is required", None);
            }
            if v["max_tokens"].as_u64().is_none() {
                return provider_error(kind, 400, "max_tokens: Field required", None);
            }
        }
        Kind::Bedrock => {
            let default = [Credentials::Aws {
                access_key_id: AWS_ID.into(),
                secret_access_key: AWS_SECRET.into(),
                session_token: None,
            }];
            let accepted = if fault.aws.is_empty() {
                &default[..]
            } else {
                &fault.aws[..]
            };
            let mut failure = None;
            for creds in accepted {
                match citoroute_llm::sigv4::verify(
                    parts,
                    raw,
                    creds,
                    REGION,
                    "bedrock",
                    SystemTime::now(),
                ) {
                    Ok(()) => {
                        failure = None;
                        break;
                    }
                    Err(e) => failure = Some(e),
                }
            }
            if let Some(e) = failure {
                return provider_error(
                    kind,
                    403,
                    &format!(
                        "The request signature we calculated does not match the signature you provided ({e})"
                    ),
                    None,
                );
            }
        }
    }
    if let Some(status) = fault.status {
        return provider_error(kind, status, "the fake was told to fail", fault.retry_after);
    }
    let text = last_user_text(v);
    // "FAIL <status>" in the prompt: answer that provider error.
    if let Some(code) = text
        .strip_prefix("FAIL ")
        .and_then(|c| c.trim().parse::<u16>().ok())
    {
        return provider_error(kind, code, "failure requested by the prompt", None);
    }
    // "STREAM_ERROR" in a streaming prompt: a first delta, then the provider's in-band error
    // (Anthropic `error` event, a Bedrock frame with a broken CRC, an OpenAI error chunk).
    let streaming = v["stream"] == true || parts.uri.path().ends_with("/converse-stream");
    if text == "STREAM_ERROR" && streaming {
        let parts = match kind {
            Kind::Anthropic => vec![
                format!("event: message_start\ndata: {}\n\n", json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": "m", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}}})).into_bytes(),
                format!("event: content_block_delta\ndata: {}\n\n", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial"}})).into_bytes(),
                format!("event: error\ndata: {}\n\n", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})).into_bytes(),
            ],
            Kind::Bedrock => {
                use citoroute_llm::eventstream::encode_event;
                let mut bad = encode_event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "lost"}}).to_string().as_bytes());
                let n = bad.len();
                bad[n - 8] ^= 0x20;
                vec![
                    encode_event("messageStart", json!({"role": "assistant"}).to_string().as_bytes()),
                    encode_event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "partial"}}).to_string().as_bytes()),
                    bad,
                ]
            }
            Kind::OpenAi => vec![
                format!("data: {}\n\n", json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}, "finish_reason": null}]})).into_bytes(),
                format!("data: {}\n\n", json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": null}})).into_bytes(),
            ],
        };
        let ct = if kind == Kind::Bedrock {
            "application/vnd.amazon.eventstream"
        } else {
            "text/event-stream"
        };
        return sse(parts, gap, aborted, ct);
    }
    let reply = match kind {
        Kind::OpenAi => "Hello from OpenAI",
        Kind::Anthropic => "Hello from Claude",
        Kind::Bedrock => "Hello from Bedrock",
    };
    match kind {
        Kind::OpenAi => {
            let model = v["model"].as_str().unwrap_or("").to_string();
            if v["stream"] == true {
                let chunk = |delta: Value, finish: Value| {
                    let c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
                    format!("data: {c}\n\n").into_bytes()
                };
                let mut parts = vec![
                    chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    chunk(json!({"content": "Hello "}), Value::Null),
                    chunk(json!({"content": "from OpenAI"}), Value::Null),
                    chunk(json!({}), json!("stop")),
                ];
                if v["stream_options"]["include_usage"] == true {
                    let c = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}});
                    parts.push(format!("data: {c}\n\n").into_bytes());
                }
                parts.push(b"data: [DONE]\n\n".to_vec());
                return sse(parts, gap, aborted, "text/event-stream");
            }
            json_resp(
                200,
                json!({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
            )
        }
        Kind::Anthropic => {
            let model = v["model"].as_str().unwrap_or("").to_string();
            if v["stream"] == true {
                let ev = |name: &str, data: Value| {
                    format!("event: {name}\ndata: {data}\n\n").into_bytes()
                };
                let parts = vec![
                    ev(
                        "message_start",
                        json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                    ),
                    ev(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                    ),
                    ev("ping", json!({"type": "ping"})),
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello "}}),
                    ),
                    ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "from Claude"}}),
                    ),
                    ev(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": 0}),
                    ),
                    ev(
                        "message_delta",
                        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 5}}),
                    ),
                    ev("message_stop", json!({"type": "message_stop"})),
                ];
                return sse(parts, gap, aborted, "text/event-stream; charset=utf-8");
            }
            json_resp(
                200,
                json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": 12, "output_tokens": 5}}),
            )
        }
        Kind::Bedrock => {
            if parts.uri.path().ends_with("/converse-stream") {
                use citoroute_llm::eventstream::encode_event;
                let p = "abcdefghijklmnopqrstuvwxyz";
                let frames = vec![
                    encode_event("messageStart", json!({"role": "assistant", "p": p}).to_string().as_bytes()),
                    encode_event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hello "}, "p": p}).to_string().as_bytes()),
                    encode_event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "from Bedrock"}, "p": p}).to_string().as_bytes()),
                    encode_event("contentBlockStop", json!({"contentBlockIndex": 0, "p": p}).to_string().as_bytes()),
                    encode_event("messageStop", json!({"stopReason": "end_turn", "p": p}).to_string().as_bytes()),
                    encode_event("metadata", json!({"usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14}, "metrics": {"latencyMs": 42}, "p": p}).to_string().as_bytes()),
                ];
                return sse(frames, gap, aborted, "application/vnd.amazon.eventstream");
            }
            if !parts.uri.path().ends_with("/converse") {
                return provider_error(kind, 404, "unknown operation", None);
            }
            json_resp(
                200,
                json!({"output": {"message": {"role": "assistant", "content": [{"text": reply}]}},
                    "stopReason": "end_turn",
                    "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14},
                    "metrics": {"latencyMs": 42}}),
            )
        }
    }
}

fn sse(
    parts: Vec<Vec<u8>>,
    gap: Duration,
    aborted: Arc<AtomicU64>,
    ct: &'static str,
) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", ct)
        .body(chunked(parts, gap, aborted))
        .unwrap()
}

/// The `data:` payloads of an SSE body, in order (`[DONE]` included).
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
        })
        .collect()
}

/// The text of an OpenAI stream's content deltas, its finish reason and its usage chunk.
pub fn stream_summary(body: &str) -> (String, Option<String>, Option<Value>) {
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for d in sse_data(body) {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad chunk {d}: {e}"));
        assert!(v.get("error").is_none(), "error event in stream: {d}");
        assert_eq!(v["object"], "chat.completion.chunk", "{d}");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, finish, usage)
}

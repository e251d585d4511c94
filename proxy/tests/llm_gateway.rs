//! The AI gateway end to end: the proxy binary in front of fake OpenAI, Anthropic and Bedrock
//! servers speaking their wire formats, OpenAI-shaped clients in front of it.

#![allow(clippy::unwrap_used)]

mod common;
mod llm_fakes;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use llm_fakes::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;

/// Writes the key files into `dir` and returns the `[llm_backends]` key lines for a kind.
fn key_lines(dir: &std::path::Path, kind: Kind) -> String {
    let write = |name: &str, v: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{v}\n")).unwrap();
        p.display().to_string()
    };
    match kind {
        Kind::OpenAi => format!("api_key_file = {:?}\n", write("openai.key", OPENAI_KEY)),
        Kind::Anthropic => format!(
            "api_key_file = {:?}\n",
            write("anthropic.key", ANTHROPIC_KEY)
        ),
        Kind::Bedrock => format!(
            "region = {REGION:?}\naws_access_key_id_file = {:?}\naws_secret_access_key_file = {:?}\n",
            write("aws.id", AWS_ID),
            write("aws.secret", AWS_SECRET)
        ),
    }
}

fn provider(kind: Kind) -> &'static str {
    match kind {
        Kind::OpenAi => "openai",
        Kind::Anthropic => "anthropic",
        Kind::Bedrock => "bedrock",
    }
}

fn model(kind: Kind) -> &'static str {
    match kind {
        Kind::OpenAi => "gpt-4o-mini",
        Kind::Anthropic => "claude-sonnet-4-5",
        Kind::Bedrock => "anthropic.claude-3-5-haiku-20241022-v1:0",
    }
}

/// A backend section named `name` for a fake.
fn backend_section(dir: &std::path::Path, name: &str, kind: Kind, endpoint: &str) -> String {
    format!(
        "[llm_backends.{name}]\nprovider = {:?}\nmodel = {:?}\nendpoint = {endpoint:?}\ntimeout = \"5s\"\n{}\n",
        provider(kind),
        model(kind),
        key_lines(dir, kind)
    )
}

fn listener(port: u16) -> String {
    format!(
        "[[listeners]]\nname = \"http\"\naddress = \"127.0.0.1\"\nport = {port}\nprotocol = \"HTTP\"\n\n"
    )
}

/// A proxy with one LLM route over the given backends (`name`, kind, endpoint, weight).
async fn gateway(backends: &[(&str, Kind, String, u32)], extra: &str) -> (Proxy, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut body = listener(port);
    let mut refs = Vec::new();
    for (name, kind, endpoint, weight) in backends {
        body.push_str(&backend_section(dir.path(), name, *kind, endpoint));
        refs.push(format!("{{ backend = {name:?}, weight = {weight} }}"));
    }
    body.push_str(&format!(
        "[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\nbackends = [{}]\n{extra}\n",
        refs.join(", ")
    ));
    let proxy = Proxy::start_in(dir, &body, &[port]).await;
    (proxy, addr(port))
}

fn chat(addr_host: &str, body: Value) -> http::Request<Full<Bytes>> {
    h1_req("POST", addr_host, "/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn hello(stream: bool) -> Value {
    let mut v = json!({"model": "client-alias", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"}
    ]});
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

async fn round_trip(kind: Kind) {
    let fake = Fake::start(kind).await;
    let (proxy, at) = gateway(&[("only", kind, fake.url(), 1)], "").await;
    let reply = match kind {
        Kind::OpenAi => "Hello from OpenAI",
        Kind::Anthropic => "Hello from Claude",
        Kind::Bedrock => "Hello from Bedrock",
    };

    // Non-streaming.
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 200, "body: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], reply);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], model(kind));
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");

    // What the provider got: its own protocol, the backend's model, the gateway's key.
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    match kind {
        Kind::OpenAi => {
            assert_eq!(s.path, "/v1/chat/completions");
            assert_eq!(s.body["model"], model(kind));
            assert_eq!(s.body["messages"][0]["role"], "system");
        }
        Kind::Anthropic => {
            assert_eq!(s.path, "/v1/messages");
            assert_eq!(s.body["model"], model(kind));
            assert_eq!(s.body["system"], "Be brief.");
            assert!(s.body["max_tokens"].as_u64().is_some());
            assert!(s.headers.get("authorization").is_none());
        }
        Kind::Bedrock => {
            assert_eq!(
                s.path,
                "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
            );
            assert_eq!(s.body["system"][0]["text"], "Be brief.");
            assert!(
                s.headers["authorization"]
                    .to_str()
                    .unwrap()
                    .starts_with("AWS4-HMAC-SHA256 ")
            );
        }
    }

    // Streaming, with the usage chunk asked for.
    let r = h1_send(at, chat("gw", hello(true))).await.unwrap();
    assert_eq!(r.status, 200, "body: {}", r.text());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let body = r.text();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let (text, finish, usage) = stream_summary(&body);
    assert_eq!(
        text,
        "Hello ".to_string() + reply.trim_start_matches("Hello ")
    );
    assert_eq!(finish.as_deref(), Some("stop"));
    let usage = usage.unwrap_or_else(|| panic!("no usage chunk in {body}"));
    assert!(usage["total_tokens"].as_u64().unwrap() > 0);
    if kind == Kind::Bedrock {
        assert!(fake.seen()[1].path.ends_with("/converse-stream"));
    }

    // Metrics: two requests and their tokens.
    let labels = [
        ("consumer", ""),
        ("backend", "only"),
        ("provider", provider(kind)),
        ("code", "200"),
    ];
    assert_eq!(
        proxy.metric("citoroute_llm_requests_total", &labels).await,
        2.0
    );
    let out = proxy
        .metric(
            "citoroute_llm_tokens_total",
            &[("backend", "only"), ("type", "output")],
        )
        .await;
    assert!(out > 0.0, "no output tokens counted");
    let m = proxy.metrics().await;
    assert!(m.contains("citoroute_llm_time_to_first_token_seconds_count{backend=\"only\""));
    assert!(m.contains("citoroute_llm_request_duration_seconds_count{backend=\"only\""));
}

#[tokio::test]
async fn openai_non_streaming_and_streaming() {
    round_trip(Kind::OpenAi).await;
}

#[tokio::test]
async fn anthropic_non_streaming_and_streaming() {
    round_trip(Kind::Anthropic).await;
}

#[tokio::test]
async fn bedrock_non_streaming_and_streaming_with_sigv4() {
    round_trip(Kind::Bedrock).await;
}

#[tokio::test]
async fn bedrock_rejects_a_wrong_signature_and_the_client_sees_502() {
    let fake = Fake::start(Kind::Bedrock).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let id = dir.path().join("id");
    let secret = dir.path().join("secret");
    std::fs::write(&id, AWS_ID).unwrap();
    std::fs::write(&secret, "not-the-secret").unwrap();
    let body = format!(
        "{}[llm_backends.b]\nprovider = \"bedrock\"\nmodel = \"m\"\nendpoint = {:?}\nregion = {REGION:?}\naws_access_key_id_file = {:?}\naws_secret_access_key_file = {:?}\n\n[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\nbackends = [{{ backend = \"b\" }}]\n",
        listener(port),
        fake.url(),
        id.display().to_string(),
        secret.display().to_string()
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;
    let r = h1_send(addr(port), chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let v = r.json();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{v}"
    );
}

#[tokio::test]
async fn provider_errors_become_openai_errors() {
    let anthropic = Fake::start(Kind::Anthropic).await;
    let openai = Fake::start(Kind::OpenAi).await;
    let (_proxy, at) = gateway(&[("claude", Kind::Anthropic, anthropic.url(), 1)], "").await;
    let ask = |text: &str| json!({"model": "x", "messages": [{"role": "user", "content": text}]});
    for (prompt, want, kind) in [
        ("FAIL 400", 400, "invalid_request_error"),
        ("FAIL 429", 429, "rate_limit_error"),
        ("FAIL 529", 503, ""),
        ("FAIL 500", 502, ""),
        ("FAIL 401", 502, ""),
    ] {
        let r = h1_send(at, chat("gw", ask(prompt))).await.unwrap();
        assert_eq!(r.status, want, "{prompt}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert!(v["error"]["message"].is_string(), "{prompt}: {v}");
        if !kind.is_empty() {
            assert_eq!(v["error"]["type"], kind, "{prompt}: {v}");
        }
    }
    // A streaming request failing before its stream starts gets a JSON error too.
    let mut s = ask("FAIL 400");
    s["stream"] = json!(true);
    let r = h1_send(at, chat("gw", s)).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_object());
    // The client's own mistakes never reach the provider.
    let before = anthropic.count();
    let r = h1_send(
        at,
        h1_req("POST", "gw", "/v1/chat/completions")
            .body(Full::new(Bytes::from_static(b"{not json")))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = h1_send(at, chat("gw", json!({"model": "x", "messages": []})))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(anthropic.count(), before);
    // Only POST is routed to the AI gateway.
    let r = h1_get(at, "gw", "/v1/chat/completions").await.unwrap();
    assert_eq!(r.status, 404);
    drop(openai);
}

#[tokio::test]
async fn a_bad_gateway_key_is_not_the_clients_fault() {
    let openai = Fake::start(Kind::OpenAi).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-wrong").unwrap();
    let body = format!(
        "{}[llm_backends.o]\nprovider = \"openai\"\nmodel = \"gpt\"\nendpoint = \"{}/v1\"\napi_key_file = {:?}\n\n[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\nbackends = [{{ backend = \"o\" }}]\n",
        listener(port),
        openai.url(),
        key.display().to_string()
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;
    let r = h1_send(addr(port), chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(openai.count(), 1);
}

#[tokio::test]
async fn failover_on_503_honours_retry_after() {
    let bad = Fake::start_with(
        Kind::OpenAi,
        Fault {
            status: Some(503),
            retry_after: Some(30),
            ..Fault::default()
        },
    )
    .await;
    let good = Fake::start(Kind::Anthropic).await;
    // The failing backend carries nearly all the weight, so it is tried first.
    let (proxy, at) = gateway(
        &[
            ("bad", Kind::OpenAi, bad.url(), 1_000_000),
            ("good", Kind::Anthropic, good.url(), 1),
        ],
        "",
    )
    .await;
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from Claude"
    );
    assert_eq!(bad.count(), 1);
    assert_eq!(good.count(), 1);
    // retry-after: 30 keeps the bad backend out of the choice for now.
    for _ in 0..3 {
        let r = h1_send(at, chat("gw", hello(true))).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(stream_summary(&r.text()).0, "Hello from Claude");
    }
    assert_eq!(bad.count(), 1, "a cooling backend was tried again");
    assert_eq!(good.count(), 4);
    assert_eq!(
        proxy
            .metric(
                "citoroute_llm_requests_total",
                &[("backend", "bad"), ("code", "503")]
            )
            .await,
        1.0
    );
}

#[tokio::test]
async fn failover_on_connect_error_but_never_on_400() {
    let good = Fake::start(Kind::OpenAi).await;
    let refused = format!("http://{}", closed_addr());
    let (_proxy, at) = gateway(
        &[
            ("down", Kind::OpenAi, refused, 1_000_000),
            ("good", Kind::OpenAi, good.url(), 1),
        ],
        "",
    )
    .await;
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(good.count(), 1);

    let rejecting = Fake::start_with(
        Kind::OpenAi,
        Fault {
            status: Some(400),
            ..Fault::default()
        },
    )
    .await;
    let other = Fake::start(Kind::OpenAi).await;
    let (_proxy2, at2) = gateway(
        &[
            ("rejecting", Kind::OpenAi, rejecting.url(), 1_000_000),
            ("other", Kind::OpenAi, other.url(), 1),
        ],
        "",
    )
    .await;
    let r = h1_send(at2, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(other.count(), 0, "a 400 was failed over");

    // failover = false: the 503 goes to the client.
    let failing = Fake::start_with(
        Kind::OpenAi,
        Fault {
            status: Some(503),
            ..Fault::default()
        },
    )
    .await;
    let spare = Fake::start(Kind::OpenAi).await;
    let (_proxy3, at3) = gateway(
        &[
            ("failing", Kind::OpenAi, failing.url(), 1_000_000),
            ("spare", Kind::OpenAi, spare.url(), 1),
        ],
        "failover = false",
    )
    .await;
    let r = h1_send(at3, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(spare.count(), 0);
}

#[tokio::test]
async fn all_backends_down_gives_an_openai_shaped_502() {
    let (_proxy, at) = gateway(
        &[
            ("a", Kind::OpenAi, format!("http://{}", closed_addr()), 1),
            ("b", Kind::Anthropic, format!("http://{}", closed_addr()), 1),
        ],
        "",
    )
    .await;
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "api_error");
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let fake = Fake::start_slow(
        Kind::Anthropic,
        Fault::default(),
        Duration::from_millis(300),
    )
    .await;
    let (mut proxy, at) = gateway(&[("slow", Kind::Anthropic, fake.url(), 1)], "").await;
    let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
    let body = hello(true).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    c.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(c);
    let cancelled = eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { fake.aborted.load(std::sync::atomic::Ordering::SeqCst) > 0 },
    )
    .await;
    assert!(cancelled, "the provider stream was not cancelled");
    proxy.assert_alive();
}

#[tokio::test]
async fn large_bodies_are_refused_and_http_routes_share_the_listener() {
    let fake = Fake::start(Kind::OpenAi).await;
    let echo = Backend::start("echo", Proto::H1).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let body = format!(
        "{}[backends.echo]\nendpoints = [\"{}\"]\n\n[[http_routes]]\nname = \"web\"\nlisteners = [\"http\"]\n\n[[http_routes.rules]]\nbackends = [{{ backend = \"echo\" }}]\n\n{}[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\npath = {{ type = \"Exact\", value = \"/ai/chat\" }}\nbackends = [{{ backend = \"o\" }}]\n",
        listener(port),
        echo.addr,
        backend_section(dir.path(), "o", Kind::OpenAi, &fake.url())
    );
    let _proxy = Proxy::start_in(dir, &body, &[port]).await;
    let at = addr(port);
    let post = |path: &str, body: Vec<u8>| {
        h1_req("POST", "gw", path)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let r = h1_send(at, post("/ai/chat", hello(false).to_string().into_bytes()))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Everything else goes to the HTTP route, including the default LLM path here.
    let r = h1_send(at, post("/v1/chat/completions", b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "echo");
    let r = h1_get(at, "gw", "/ai/chat").await.unwrap();
    assert_eq!(r.backend(), "echo");
    // 9 MiB declared: refused before the body is read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
    let head = format!(
        "POST /ai/chat HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n\r\n{{\"messages\":",
        9 << 20
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("request_too_large"), "{got}");
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn h2c_clients_get_answers_and_streams() {
    let fake = Fake::start(Kind::Bedrock).await;
    let (_proxy, at) = gateway(&[("nova", Kind::Bedrock, fake.url(), 1)], "").await;
    let mut c = H2Conn::connect(at).await.unwrap();
    for stream in [false, true] {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://gw:{}/v1/chat/completions", at.port()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(hello(stream).to_string())))
            .unwrap();
        let r = c.send(req).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, http::Version::HTTP_2);
        if stream {
            assert_eq!(r.header("content-type"), Some("text/event-stream"));
            let (text, finish, usage) = stream_summary(&r.text());
            assert_eq!(text, "Hello from Bedrock");
            assert_eq!(finish.as_deref(), Some("stop"));
            assert_eq!(usage.unwrap()["total_tokens"], 14);
        } else {
            assert_eq!(
                r.json()["choices"][0]["message"]["content"],
                "Hello from Bedrock"
            );
        }
    }
}

#[tokio::test]
async fn llm_routes_hot_reload_and_a_missing_key_keeps_the_last_config() {
    let openai = Fake::start(Kind::OpenAi).await;
    let anthropic = Fake::start(Kind::Anthropic).await;
    let (mut proxy, at) = gateway(&[("one", Kind::OpenAi, openai.url(), 1)], "").await;
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from OpenAI"
    );
    let before = proxy.metric("citoroute_config_generation", &[]).await;

    // Switch the route to the Anthropic backend.
    let port = at.port();
    let body = format!(
        "{}{}[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\nbackends = [{{ backend = \"two\" }}]\n",
        listener(port),
        backend_section(proxy.dir(), "two", Kind::Anthropic, &anthropic.url())
    );
    proxy.rewrite(&body);
    let switched = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { proxy.metric("citoroute_config_generation", &[]).await > before },
    )
    .await;
    assert!(
        switched,
        "the new config was not applied; log:\n{}",
        proxy.log()
    );
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from Claude"
    );

    // A route naming a backend whose key file is missing: refused, the last config serves.
    let failures = proxy
        .metric("citoroute_config_reload_failures_total", &[])
        .await;
    let broken = format!(
        "{}[llm_backends.three]\nprovider = \"openai\"\nmodel = \"m\"\nendpoint = {:?}\napi_key_file = {:?}\n\n[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\nbackends = [{{ backend = \"three\" }}]\n",
        listener(port),
        openai.url(),
        proxy.dir().join("no-such-key").display().to_string()
    );
    proxy.rewrite(&broken);
    let refused = eventually(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            proxy
                .metric("citoroute_config_reload_failures_total", &[])
                .await
                > failures
        },
    )
    .await;
    assert!(
        refused,
        "the broken config was not refused; log:\n{}",
        proxy.log()
    );
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from Claude"
    );
    assert!(proxy.log().contains("no-such-key"), "{}", proxy.log());
}

#[tokio::test]
async fn a_stream_failing_midway_ends_with_an_error_event_and_done() {
    for kind in [Kind::Anthropic, Kind::Bedrock, Kind::OpenAi] {
        let fake = Fake::start(kind).await;
        let (_proxy, at) = gateway(&[("b", kind, fake.url(), 1)], "").await;
        let body = json!({"model": "x", "stream": true,
            "messages": [{"role": "user", "content": "STREAM_ERROR"}]});
        let r = h1_send(at, chat("gw", body)).await.unwrap();
        assert_eq!(r.status, 200, "{kind:?}: {}", r.text());
        let text = r.text();
        let data = sse_data(&text);
        assert!(
            data.iter().any(|d| d.contains("partial")),
            "{kind:?}: {text}"
        );
        let errors: Vec<Value> = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v.get("error").is_some())
            .collect();
        assert_eq!(errors.len(), 1, "{kind:?}: {text}");
        assert!(
            errors[0]["error"]["message"].is_string(),
            "{kind:?}: {text}"
        );
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{kind:?}: {text}"
        );
    }
}

#[tokio::test]
async fn a_backend_timeout_fails_over_and_alone_gives_504() {
    let stalled = Fake::start_with(
        Kind::OpenAi,
        Fault {
            stall: Some(Duration::from_secs(5)),
            ..Fault::default()
        },
    )
    .await;
    let good = Fake::start(Kind::OpenAi).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let section = |name: &str, url: &str| {
        backend_section(dir.path(), name, Kind::OpenAi, url).replace("\"5s\"", "\"300ms\"")
    };
    let body = format!(
        "{}{}{}[[llm_routes]]\nname = \"chat\"\nlisteners = [\"http\"]\nbackends = [{{ backend = \"stalled\", weight = 1000000 }}, {{ backend = \"good\" }}]\n\n[[llm_routes]]\nname = \"alone\"\nlisteners = [\"http\"]\npath = {{ type = \"Exact\", value = \"/alone\" }}\nbackends = [{{ backend = \"stalled\" }}]\n",
        listener(port),
        section("stalled", &stalled.url()),
        section("good", &good.url()),
    );
    let proxy = Proxy::start_in(dir, &body, &[port]).await;
    let at = addr(port);
    let r = h1_send(at, chat("gw", hello(false))).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(good.count(), 1);
    let r = h1_send(
        at,
        h1_req("POST", "gw", "/alone")
            .body(Full::new(Bytes::from(hello(false).to_string())))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        proxy
            .metric(
                "citoroute_llm_requests_total",
                &[("backend", "stalled"), ("code", "timeout")]
            )
            .await
            >= 2.0
    );
}

#[tokio::test]
async fn client_disconnect_before_the_answer_closes_the_upstream_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A provider that reads the request, never answers, and reports when its connection is
    // closed by the gateway.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<bool>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        // The request head and body (small: one read or a few).
        while !String::from_utf8_lossy(&seen).contains("Say hello") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        // Well before the backend's 5s timeout could close it.
        let eof = matches!(
            tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
        let _ = closed_tx.send(eof);
    });
    let (mut proxy, at) = gateway(
        &[("mute", Kind::OpenAi, format!("http://{upstream}"), 1)],
        "",
    )
    .await;
    let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
    let body = hello(false).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    let closed = tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the provider connection stayed open")
        .unwrap();
    assert!(closed, "the provider connection was not closed");
    proxy.assert_alive();
}

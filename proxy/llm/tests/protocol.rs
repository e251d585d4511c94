//! SigV4 signing/verification, event-stream framing and request building
//! details that the snapshots do not show.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use citoroute_llm::sigv4::{self, SigV4Error};
use citoroute_llm::{
    BackendTarget, BedrockEventStream, Credentials, Provider, ResponseContext, StreamTranslator,
    build_upstream_request, eventstream,
};
use http::HeaderValue;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn creds(token: Option<&str>) -> Credentials {
    Credentials::Aws {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: token.map(str::to_string),
    }
}

fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

/// The "get-vanilla" case of the AWS SigV4 test suite.
#[test]
fn sigv4_known_answer() {
    let mut p = parts(
        "GET",
        "https://example.amazonaws.com/",
        &[("host", "example.amazonaws.com")],
    );
    // 2015-08-30T12:36:00Z
    let t = sigv4::parse_amz_date("20150830T123600Z").expect("date");
    sigv4::sign(&mut p, b"", &creds(None), "us-east-1", "service", t).expect("sign");
    assert_eq!(
        p.headers["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
    assert_eq!(p.headers["x-amz-date"], "20150830T123600Z");
    sigv4::verify(&p, b"", &creds(None), "us-east-1", "service", t).expect("verify");
}

fn bedrock_target(endpoint: &str) -> BackendTarget {
    BackendTarget {
        provider: Provider::Bedrock,
        model: "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-x"
            .into(),
        endpoint: endpoint.into(),
        region: Some("us-west-2".into()),
        anthropic_version: None,
    }
}

const BODY: &[u8] = br#"{"messages":[{"role":"user","content":"hi"}],"stream":true}"#;

/// What a fake Bedrock server sees: origin-form URI, Host header, plus
/// headers added after signing by the HTTP client.
#[test]
fn sigv4_verify_as_fake_server() {
    let now = at(1_700_000_000);
    let c = creds(Some("tok"));
    let up = build_upstream_request(&bedrock_target("http://127.0.0.1:18080"), &c, BODY, now)
        .expect("request");
    assert_eq!(
        up.uri.to_string(),
        "http://127.0.0.1:18080/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-x/converse-stream"
    );
    assert_eq!(up.headers["accept"], "application/vnd.amazon.eventstream");
    let server_view = |body: &[u8]| {
        let mut p = parts("POST", up.uri.path(), &[]);
        p.headers = up.headers.clone();
        p.headers
            .insert("content-length", HeaderValue::from(body.len()));
        p.headers
            .insert("user-agent", HeaderValue::from_static("pingora"));
        p
    };
    let ok = server_view(&up.body);
    sigv4::verify(&ok, &up.body, &c, "us-west-2", "bedrock", now).expect("valid");
    // Clock of the verifier a little off: fine; far off: rejected.
    sigv4::verify(&ok, &up.body, &c, "us-west-2", "bedrock", at(1_700_000_200)).expect("skew ok");
    assert_eq!(
        sigv4::verify(&ok, &up.body, &c, "us-west-2", "bedrock", at(1_700_000_400)),
        Err(SigV4Error::Skew)
    );
    // Tampering.
    let mut body = up.body.to_vec();
    body[5] ^= 1;
    assert_eq!(
        sigv4::verify(&server_view(&body), &body, &c, "us-west-2", "bedrock", now),
        Err(SigV4Error::Mismatch)
    );
    let mut p = server_view(&up.body);
    p.headers
        .insert("accept", HeaderValue::from_static("application/json"));
    assert_eq!(
        sigv4::verify(&p, &up.body, &c, "us-west-2", "bedrock", now),
        Err(SigV4Error::Mismatch)
    );
    let mut p = server_view(&up.body);
    p.uri = "/model/other/converse-stream".parse().expect("uri");
    assert_eq!(
        sigv4::verify(&p, &up.body, &c, "us-west-2", "bedrock", now),
        Err(SigV4Error::Mismatch)
    );
    assert_eq!(
        sigv4::verify(&ok, &up.body, &c, "us-east-1", "bedrock", now),
        Err(SigV4Error::Mismatch)
    );
    let other = Credentials::Aws {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "another-secret".into(),
        session_token: Some("tok".into()),
    };
    assert_eq!(
        sigv4::verify(&ok, &up.body, &other, "us-west-2", "bedrock", now),
        Err(SigV4Error::Mismatch)
    );
    assert_eq!(
        sigv4::verify(
            &ok,
            &up.body,
            &creds(Some("other")),
            "us-west-2",
            "bedrock",
            now
        ),
        Err(SigV4Error::SessionToken)
    );
    let mut p = server_view(&up.body);
    p.headers.remove("authorization");
    assert_eq!(
        sigv4::verify(&p, &up.body, &c, "us-west-2", "bedrock", now),
        Err(SigV4Error::BadHeader("authorization"))
    );
}

#[test]
fn endpoints_and_auth() {
    let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let now = at(1_700_000_000);
    let t = |provider, endpoint: &str| BackendTarget {
        provider,
        model: "m".into(),
        endpoint: endpoint.into(),
        region: None,
        anthropic_version: Some("2023-06-01".into()),
    };
    let key = Credentials::ApiKey("k".into());
    for (provider, endpoint, expected) in [
        (
            Provider::OpenAi,
            "",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            Provider::OpenAi,
            "https://api.openai.com",
            "https://api.openai.com/v1/chat/completions",
        ),
        (
            Provider::OpenAi,
            "https://gw.example/v1/",
            "https://gw.example/v1/chat/completions",
        ),
        (
            Provider::OpenAi,
            "http://127.0.0.1:8000/openai",
            "http://127.0.0.1:8000/openai/v1/chat/completions",
        ),
        (
            Provider::Anthropic,
            "",
            "https://api.anthropic.com/v1/messages",
        ),
        (
            Provider::Anthropic,
            "http://127.0.0.1:9000/v1",
            "http://127.0.0.1:9000/v1/messages",
        ),
    ] {
        let up = build_upstream_request(&t(provider, endpoint), &key, body, now).expect("request");
        assert_eq!(up.uri.to_string(), expected);
    }
    let up = build_upstream_request(&t(Provider::OpenAi, ""), &Credentials::None, body, now)
        .expect("request");
    assert!(up.headers.get("authorization").is_none());
    assert!(up.headers["host"] == "api.openai.com");

    // Bedrock API keys are bearer tokens; Bedrock needs a region or endpoint.
    let mut b = t(Provider::Bedrock, "");
    assert_eq!(
        build_upstream_request(&b, &key, body, now)
            .map(|_| ())
            .map_err(|e| e.status),
        Err(500)
    );
    b.region = Some("eu-central-1".into());
    let up = build_upstream_request(&b, &key, body, now).expect("request");
    assert_eq!(up.headers["authorization"], "Bearer k");
    assert_eq!(
        up.uri.to_string(),
        "https://bedrock-runtime.eu-central-1.amazonaws.com/model/m/converse"
    );
    // Bad endpoint is a gateway error, not the client's.
    let e = build_upstream_request(&t(Provider::OpenAi, "not a url"), &key, body, now)
        .expect_err("bad endpoint");
    assert_eq!(e.status, 500);
    // Credentials never show in Debug output.
    assert!(!format!("{:?}", creds(Some("tok"))).contains("wJalr"));
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
}

fn ctx() -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-1".into(),
        created: 1,
        model: "m".into(),
        include_usage: false,
        injected_include_usage: false,
    }
}

#[test]
fn eventstream_crc_and_unknown_events() {
    let mut bytes = eventstream::encode_event("messageStart", br#"{"role":"assistant"}"#);
    bytes.extend(eventstream::encode_event("someFutureEvent", br#"{"x":1}"#));
    bytes.extend(eventstream::encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"ok"}}"#,
    ));
    let mut t = BedrockEventStream::new(&ctx());
    let out = String::from_utf8(t.feed(&bytes).expect("valid")).expect("utf-8");
    assert_eq!(out.matches("data: ").count(), 2);
    assert!(out.contains(r#""content":"ok""#));
    assert!(t.saw_first_token());

    // Flip one payload bit: the message CRC no longer matches.
    let mut bad = eventstream::encode_event(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"ok"}}"#,
    );
    let n = bad.len();
    bad[n - 8] ^= 0x20;
    let mut t = BedrockEventStream::new(&ctx());
    let err = t.feed(&bad).expect_err("crc");
    assert_eq!(err.status, 502);
    assert!(t.feed(b"more").expect("ignored after failure").is_empty());
    assert_eq!(
        String::from_utf8(t.finish()).expect("utf-8"),
        "data: [DONE]\n\n"
    );

    // A corrupt prelude too.
    let mut bad = eventstream::encode_event("messageStart", b"{}");
    bad[9] ^= 1;
    assert!(BedrockEventStream::new(&ctx()).feed(&bad).is_err());
}

#[test]
fn openai_passthrough_edges() {
    use citoroute_llm::OpenAiPassthrough;
    let chunk = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n";
    // Bytes pass unchanged; a missing [DONE] is added at the end.
    let mut t = OpenAiPassthrough::new(false);
    assert!(!t.saw_first_token());
    assert_eq!(t.feed(chunk).expect("feed"), chunk.to_vec());
    assert!(t.saw_first_token());
    assert_eq!(t.finish(), b"data: [DONE]\n\n".to_vec());
    // Stripping mode drops only the usage-only chunk.
    let usage = b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n";
    let mut t = OpenAiPassthrough::new(true);
    let mut out = t.feed(chunk).expect("feed");
    out.extend(t.feed(usage).expect("feed"));
    out.extend(t.finish());
    let text = String::from_utf8(out).expect("utf-8");
    assert!(!text.contains("prompt_tokens"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert_eq!(t.usage().map(|u| u.total_tokens), Some(4));
}

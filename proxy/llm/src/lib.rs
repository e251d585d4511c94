//! OpenAI chat completions ⇄ LLM provider translation for CitoRoute's AI
//! gateway.
//!
//! Clients speak OpenAI chat completions (`POST /v1/chat/completions`); the
//! gateway speaks each backend's native protocol. This crate is **pure**: no
//! sockets, no async runtime, no clock reads (time is passed in). The proxy
//! calls it from its filters:
//!
//! 1. [`build_upstream_request`] turns the client body into the request for
//!    the chosen [`BackendTarget`]: method, full URI, headers (including
//!    auth: `Authorization: Bearer` for OpenAI, `x-api-key` +
//!    `anthropic-version` for Anthropic, SigV4 for Bedrock) and body. Bad
//!    requests give an [`LlmError`] whose [`LlmError::to_openai_body`] is the
//!    400 answer.
//! 2. Non-streaming: [`translate_response`] turns the upstream status and
//!    body into the client's status and OpenAI body, plus [`Usage`].
//! 3. Streaming: [`stream_translator`] gives a [`StreamTranslator`]
//!    ([`OpenAiPassthrough`], [`AnthropicSse`], [`BedrockEventStream`]) fed
//!    with upstream body chunks; it returns OpenAI SSE bytes.
//!
//! For a streaming request whose upstream answers with a non-2xx status,
//! read the (JSON) error body and use [`translate_response`] too: providers
//! report request errors before the stream starts. A stream that fails later
//! carries the error in-band and the translators turn it into an OpenAI
//! `data: {"error":{...}}` event (followed by `data: [DONE]` at
//! [`StreamTranslator::finish`]). A corrupt Bedrock frame makes
//! [`StreamTranslator::feed`] return `Err`; emit [`error_event`] then.
//!
//! Helpers: [`sigv4`] (signing and verifying, for fake Bedrock servers),
//! [`eventstream`] (writing Bedrock event-stream frames), [`jwt`] (JWKS
//! based token validation).
//!
//! # Mapping choices
//!
//! * The upstream model always comes from the [`BackendTarget`]; the client's
//!   `model` is kept in [`UpstreamRequest::client_model`]. Responses report
//!   whatever [`ResponseContext::model`] says (by default the backend model).
//! * OpenAI upstreams get the client body unchanged except `model` (unknown
//!   fields are kept), and for streams `stream_options.include_usage: true`
//!   so usage can always be metered; the usage-only chunk is then removed
//!   again if the client did not ask for it.
//! * Anthropic: `system`/`developer` messages join into `system`; `tool`
//!   messages become `tool_result` blocks in a user turn; consecutive turns of
//!   one role are merged; `max_tokens` defaults to
//!   [`anthropic::DEFAULT_MAX_TOKENS`]; `required` tool choice is `any`;
//!   `parallel_tool_calls: false` is `disable_parallel_tool_use`; `user` is
//!   `metadata.user_id`; images are base64 or URL sources. Other
//!   OpenAI-only fields are dropped.
//! * Bedrock Converse: same message shaping with `toolUse`/`toolResult`
//!   blocks, `inferenceConfig`, `toolConfig`; images must be data URLs
//!   (sent as base64 `bytes`); `tool_choice: "none"` cannot be expressed and
//!   leaves the choice to the model. The model id is percent-encoded in the
//!   path. [`Credentials::ApiKey`] is sent as a Bedrock API key (bearer).
//! * Finish reasons: end_turn/stop_sequence → `stop`, max_tokens → `length`,
//!   tool_use → `tool_calls`, content_filtered/guardrail_intervened/refusal →
//!   `content_filter`.
//! * Upstream errors become OpenAI error bodies with the provider's error
//!   type as `code`; statuses per [`error::map_upstream_status`]: 400 stays,
//!   401/403/404 → 502 (the gateway's credentials or model are wrong, not the
//!   client's), 429 stays, 503/529 (overloaded) → 503, 408/504 → 504, other
//!   5xx → 502.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Uri};
use serde_json::Value;

pub mod anthropic;
pub mod bedrock;
pub mod error;
pub mod eventstream;
pub mod jwt;
pub mod openai;
pub mod sigv4;
pub mod sse;
pub mod stream;

pub use anthropic::AnthropicSse;
pub use bedrock::BedrockEventStream;
pub use error::LlmError;
pub use stream::{OpenAiPassthrough, StreamTranslator, error_event};

/// Backend protocol family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI or any OpenAI-compatible chat completions API.
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
    /// AWS Bedrock Runtime Converse API.
    Bedrock,
}

/// Where and how to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    pub provider: Provider,
    /// Model sent upstream (for Bedrock: model id, inference profile or ARN).
    pub model: String,
    /// Base URL, e.g. `https://api.openai.com` or `https://api.openai.com/v1`
    /// (`/v1/chat/completions` resp. `/v1/messages` is appended, without a
    /// second `/v1`). Empty means the provider's public endpoint
    /// (for Bedrock `https://bedrock-runtime.{region}.amazonaws.com`).
    pub endpoint: String,
    /// AWS region (Bedrock; required for SigV4).
    pub region: Option<String>,
    /// `anthropic-version` header; default [`anthropic::DEFAULT_VERSION`].
    pub anthropic_version: Option<String>,
}

/// Credentials for the upstream.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// OpenAI / Anthropic API key, or a Bedrock API key (bearer token).
    ApiKey(String),
    /// AWS access keys for SigV4.
    Aws {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// No authentication header.
    None,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Self::Aws { access_key_id, .. } => f
                .debug_struct("Aws")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            Self::None => f.write_str("None"),
        }
    }
}

/// The request to send upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    /// Absolute URI.
    pub uri: Uri,
    /// All headers to send, `host` and auth included.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The `model` the client sent, if any.
    pub client_model: Option<String>,
    /// The model sent upstream.
    pub upstream_model: String,
    /// Whether the client asked for a final usage chunk
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Whether the gateway added `include_usage` to an OpenAI upstream
    /// request on its own (the usage-only chunk must then be stripped).
    pub injected_include_usage: bool,
}

impl UpstreamRequest {
    /// A response context for this request, reporting the upstream model.
    pub fn response_context(&self, id: impl Into<String>, created: u64) -> ResponseContext {
        ResponseContext {
            id: id.into(),
            created,
            model: self.upstream_model.clone(),
            include_usage: self.include_usage,
            injected_include_usage: self.injected_include_usage,
        }
    }
}

/// What the response translators need to know about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseContext {
    /// `id` of the completion / of every chunk (e.g. `chatcmpl-<request id>`).
    pub id: String,
    /// `created` (Unix seconds).
    pub created: u64,
    /// `model` to report.
    pub model: String,
    /// Emit a final usage chunk (client asked for it).
    pub include_usage: bool,
    /// See [`UpstreamRequest::injected_include_usage`].
    pub injected_include_usage: bool,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Input tokens read from a prompt cache, when reported.
    pub cached_prompt_tokens: Option<u64>,
}

/// A translated non-streaming response.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedResponse {
    /// Status for the client.
    pub status: u16,
    /// OpenAI JSON body.
    pub body: Bytes,
    /// Usage, if the upstream reported it.
    pub usage: Option<Usage>,
}

impl TranslatedResponse {
    fn ok(v: Value, usage: Option<Usage>) -> Self {
        Self {
            status: 200,
            body: Bytes::from(v.to_string()),
            usage,
        }
    }

    fn error(e: &LlmError) -> Self {
        Self {
            status: e.status,
            body: e.to_openai_body(),
            usage: None,
        }
    }
}

fn base_uri(target: &BackendTarget, default: &str) -> Result<Uri, LlmError> {
    let s = if target.endpoint.is_empty() {
        default
    } else {
        target.endpoint.as_str()
    };
    let uri: Uri = s
        .parse()
        .map_err(|e| LlmError::internal(format!("backend endpoint '{s}' is not a URI: {e}")))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(LlmError::internal(format!(
            "backend endpoint '{s}' must be an absolute URL"
        )));
    }
    Ok(uri)
}

/// Joins a base URL and an API path, not doubling a trailing `/v1`.
fn join(base: &Uri, api_path: &str) -> Result<Uri, LlmError> {
    let base_path = base.path().trim_end_matches('/');
    let path = match (base_path.strip_suffix("/v1"), api_path.strip_prefix("/v1")) {
        (Some(_), Some(rest)) => format!("{base_path}{rest}"),
        _ => format!("{base_path}{api_path}"),
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        path.parse()
            .map_err(|e| LlmError::internal(format!("bad upstream path: {e}")))?,
    );
    Uri::from_parts(parts).map_err(|e| LlmError::internal(format!("bad upstream URI: {e}")))
}

fn header(v: &str) -> Result<HeaderValue, LlmError> {
    HeaderValue::from_str(v).map_err(|_| LlmError::internal("credential is not a valid header"))
}

/// Builds the upstream request for a client's chat completions body.
pub fn build_upstream_request(
    target: &BackendTarget,
    creds: &Credentials,
    client_body: &[u8],
    now: SystemTime,
) -> Result<UpstreamRequest, LlmError> {
    let req = openai::parse_request(client_body)?;
    let stream = req.stream.unwrap_or(false);
    let include_usage = req.include_usage();
    let client_model = req.model.clone();
    let mut injected_include_usage = false;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (uri, body) = match target.provider {
        Provider::OpenAi => {
            let uri = join(
                &base_uri(target, "https://api.openai.com")?,
                "/v1/chat/completions",
            )?;
            // Work on the raw JSON so that every field survives untouched.
            let mut v: Value = serde_json::from_slice(client_body)
                .map_err(|e| LlmError::invalid_request(format!("invalid request body: {e}")))?;
            if let Value::Object(o) = &mut v {
                o.insert("model".into(), Value::String(target.model.clone()));
                if stream && !include_usage {
                    injected_include_usage = true;
                    let so = o
                        .entry("stream_options")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(so) = so {
                        so.insert("include_usage".into(), Value::Bool(true));
                    } else {
                        *so = serde_json::json!({"include_usage": true});
                    }
                }
            }
            if let Credentials::ApiKey(k) = creds {
                headers.insert(http::header::AUTHORIZATION, header(&format!("Bearer {k}"))?);
            }
            (uri, v)
        }
        Provider::Anthropic => {
            let uri = join(
                &base_uri(target, "https://api.anthropic.com")?,
                "/v1/messages",
            )?;
            let body = anthropic::request_body(&req, &target.model)?;
            let version = target
                .anthropic_version
                .as_deref()
                .unwrap_or(anthropic::DEFAULT_VERSION);
            headers.insert("anthropic-version", header(version)?);
            if let Credentials::ApiKey(k) = creds {
                let mut v = header(k)?;
                v.set_sensitive(true);
                headers.insert("x-api-key", v);
            }
            (uri, body)
        }
        Provider::Bedrock => {
            let region = target.region.as_deref().unwrap_or("");
            let default = format!("https://bedrock-runtime.{region}.amazonaws.com");
            if target.endpoint.is_empty() && region.is_empty() {
                return Err(LlmError::internal("bedrock backend needs a region"));
            }
            let op = if stream {
                "converse-stream"
            } else {
                "converse"
            };
            let path = format!("/model/{}/{op}", bedrock::encode_model_id(&target.model));
            let uri = join(&base_uri(target, &default)?, &path)?;
            (uri, bedrock::request_body(&req)?)
        }
    };
    let accept = match (target.provider, stream) {
        (Provider::Bedrock, true) => "application/vnd.amazon.eventstream",
        (_, true) => "text/event-stream",
        (_, false) => "application/json",
    };
    headers.insert(http::header::ACCEPT, HeaderValue::from_static(accept));
    if let Some(a) = uri.authority() {
        headers.insert(http::header::HOST, header(a.as_str())?);
    }
    let body = Bytes::from(body.to_string());
    if target.provider == Provider::Bedrock {
        match creds {
            Credentials::Aws { .. } => {
                let region = target
                    .region
                    .as_deref()
                    .ok_or_else(|| LlmError::internal("SigV4 needs the backend's region"))?;
                let (mut parts, ()) = http::Request::builder()
                    .method(Method::POST)
                    .uri(uri.clone())
                    .body(())
                    .map_err(|e| LlmError::internal(e.to_string()))?
                    .into_parts();
                parts.headers = headers;
                sigv4::sign(&mut parts, &body, creds, region, "bedrock", now)
                    .map_err(|e| LlmError::internal(e.to_string()))?;
                headers = parts.headers;
            }
            Credentials::ApiKey(k) => {
                headers.insert(http::header::AUTHORIZATION, header(&format!("Bearer {k}"))?);
            }
            Credentials::None => {}
        }
    }
    if let Some(v) = headers.get_mut(http::header::AUTHORIZATION) {
        v.set_sensitive(true);
    }
    Ok(UpstreamRequest {
        method: Method::POST,
        uri,
        headers,
        body,
        stream,
        client_model,
        upstream_model: target.model.clone(),
        include_usage,
        injected_include_usage,
    })
}

/// Translates a non-streaming upstream response (any status) for the client.
pub fn translate_response(
    provider: Provider,
    status: u16,
    body: &[u8],
    ctx: &ResponseContext,
) -> TranslatedResponse {
    match provider {
        Provider::OpenAi => openai_response(status, body),
        Provider::Anthropic => anthropic::translate_response(status, body, ctx),
        Provider::Bedrock => bedrock::translate_response(status, body, ctx),
    }
}

fn openai_response(status: u16, body: &[u8]) -> TranslatedResponse {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return TranslatedResponse {
            status,
            body: Bytes::copy_from_slice(body),
            usage: v
                .as_ref()
                .and_then(|v| v.get("usage"))
                .and_then(openai::parse_usage),
        };
    }
    let err = v.as_ref().and_then(|v| v.get("error"));
    let fallback = format!("upstream returned HTTP {status}");
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(&fallback);
    let code = err
        .and_then(|e| {
            e.get("code")
                .filter(|c| !c.is_null())
                .or_else(|| e.get("type"))
        })
        .and_then(Value::as_str);
    let mut e = error::upstream_error(status, code, message);
    if status == 400 {
        // The upstream's own param/type are meaningful to the client.
        if let Some(p) = err.and_then(|e| e.get("param")).and_then(Value::as_str) {
            e.param = Some(p.to_string());
        }
    }
    TranslatedResponse::error(&e)
}

/// The stream translator for a provider.
pub fn stream_translator(provider: Provider, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
    match provider {
        Provider::OpenAi => Box::new(OpenAiPassthrough::new(ctx.injected_include_usage)),
        Provider::Anthropic => Box::new(AnthropicSse::new(ctx)),
        Provider::Bedrock => Box::new(BedrockEventStream::new(ctx)),
    }
}

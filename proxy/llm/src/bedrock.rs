//! AWS Bedrock Runtime Converse / ConverseStream.

use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::BytesMut;
use serde_json::{Map, Value, json};

use crate::anthropic::parse_arguments;
use crate::error::upstream_error;
use crate::openai::{
    ChatRequest, Completion, Part, ToolChoice, completion_value, content_parts, text_only,
};
use crate::stream::{ChunkWriter, StreamTranslator};
use crate::{LlmError, ResponseContext, TranslatedResponse, Usage};

/// Percent-encodes a model id (or ARN) for use as one path segment, as the
/// AWS SDKs do (`:` and `/` are encoded).
pub fn encode_model_id(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds the Converse request body (the model goes in the path).
pub fn request_body(req: &ChatRequest) -> Result<Value, LlmError> {
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match messages.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => messages.push((role.to_string(), blocks)),
        }
    };
    for m in &req.messages {
        match m.role.as_str() {
            "system" | "developer" => {
                system.push(json!({ "text": text_only(&m.content, "system")? }));
            }
            "user" => {
                let mut blocks = Vec::new();
                for p in content_parts(&m.content)? {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        p => blocks.push(part_block(p)?),
                    }
                }
                push("user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                for p in content_parts(&m.content)? {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => blocks.push(json!({ "text": t })),
                        _ => {
                            return Err(LlmError::invalid_param(
                                "messages",
                                "assistant messages may only contain text",
                            ));
                        }
                    }
                }
                for c in m.tool_calls.iter().flatten() {
                    blocks.push(json!({"toolUse": {
                        "toolUseId": c.id,
                        "name": c.function.name,
                        "input": parse_arguments(&c.function.arguments)?,
                    }}));
                }
                push("assistant", blocks);
            }
            "tool" => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    LlmError::invalid_param("messages", "tool message without tool_call_id")
                })?;
                let text = text_only(&m.content, "tool")?;
                push(
                    "user",
                    vec![json!({"toolResult": {
                        "toolUseId": id,
                        "content": [{ "text": text }],
                    }})],
                );
            }
            other => {
                return Err(LlmError::invalid_param(
                    "messages",
                    format!("unsupported message role '{other}'"),
                ));
            }
        }
    }
    if messages.is_empty() {
        return Err(LlmError::invalid_param(
            "messages",
            "at least one user or assistant message is required",
        ));
    }
    let mut body = Map::new();
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_output_tokens() {
        inference.insert("maxTokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        inference.insert("topP".into(), json!(p));
    }
    let stops = req.stop_sequences();
    if !stops.is_empty() {
        inference.insert("stopSequences".into(), json!(stops));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let choice = req.tool_choice()?;
    if let Some(tools) = &req.tools
        && !tools.is_empty()
    {
        let specs: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), json!(t.function.name));
                if let Some(d) = &t.function.description {
                    spec.insert("description".into(), json!(d));
                }
                spec.insert(
                    "inputSchema".into(),
                    json!({"json": t.function.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}}))}),
                );
                json!({ "toolSpec": spec })
            })
            .collect();
        let mut cfg = Map::new();
        cfg.insert("tools".into(), Value::Array(specs));
        // Converse has no "none": the tools stay (history may reference
        // them) and the model decides, as with "auto".
        match choice {
            Some(ToolChoice::Required) => {
                cfg.insert("toolChoice".into(), json!({"any": {}}));
            }
            Some(ToolChoice::Function(name)) => {
                cfg.insert("toolChoice".into(), json!({"tool": {"name": name}}));
            }
            Some(ToolChoice::Auto) => {
                cfg.insert("toolChoice".into(), json!({"auto": {}}));
            }
            Some(ToolChoice::None) | None => {}
        }
        body.insert("toolConfig".into(), Value::Object(cfg));
    }
    Ok(Value::Object(body))
}

fn part_block(p: Part) -> Result<Value, LlmError> {
    match p {
        Part::Text(t) => Ok(json!({ "text": t })),
        Part::ImageBase64 { media_type, data } => {
            let format = match media_type.as_str() {
                "image/png" => "png",
                "image/jpeg" | "image/jpg" => "jpeg",
                "image/gif" => "gif",
                "image/webp" => "webp",
                other => {
                    return Err(LlmError::invalid_param(
                        "messages",
                        format!("unsupported image type '{other}'"),
                    ));
                }
            };
            if aws_smithy_types::base64::decode(&data).is_err() {
                return Err(LlmError::invalid_param(
                    "messages",
                    "image data URL is not valid base64",
                ));
            }
            // Converse's JSON protocol carries blob bytes base64 encoded.
            Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
        }
        Part::ImageUrl(_) => Err(LlmError::invalid_param(
            "messages",
            "this backend only accepts images as base64 data URLs",
        )),
    }
}

/// Bedrock `stopReason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "content_filtered" | "guardrail_intervened" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Option<Usage> {
    let input = u.get("inputTokens").and_then(Value::as_u64)?;
    let output = u.get("outputTokens").and_then(Value::as_u64).unwrap_or(0);
    let cache_read = u.get("cacheReadInputTokens").and_then(Value::as_u64);
    let cache_write = u
        .get("cacheWriteInputTokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let prompt = input + cache_read.unwrap_or(0) + cache_write;
    let total = u
        .get("totalTokens")
        .and_then(Value::as_u64)
        .unwrap_or(prompt + output);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: total,
        cached_prompt_tokens: cache_read.filter(|c| *c > 0),
    })
}

/// The exception name Bedrock uses for an HTTP status, when the body does
/// not carry one (the REST protocol puts it in `x-amzn-errortype`).
fn exception_for_status(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// Upstream status an exception name stands for (for stream exceptions).
fn status_for_exception(name: &str) -> u16 {
    let lower = name.to_ascii_lowercase();
    match lower.trim_end_matches("exception") {
        "validation" => 400,
        "accessdenied" => 403,
        "resourcenotfound" => 404,
        "modeltimeout" => 408,
        "modelerror" | "modelstreamerror" => 424,
        "throttling" | "servicequotaexceeded" => 429,
        "serviceunavailable" | "modelnotready" => 503,
        _ => 500,
    }
}

/// The error a Bedrock error response means.
pub fn error_from_body(status: u16, v: Option<&Value>, exception: Option<&str>) -> LlmError {
    let fallback = format!("upstream returned HTTP {status}");
    let message = v
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str)
        .unwrap_or(&fallback);
    let kind = exception
        .map(str::to_string)
        .or_else(|| {
            v.and_then(|v| v.get("__type"))
                .and_then(Value::as_str)
                .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        })
        .unwrap_or_else(|| exception_for_status(status).to_string());
    let effective = if status >= 400 {
        status
    } else {
        status_for_exception(&kind)
    };
    upstream_error(effective, Some(&kind), message)
}

/// Translates a non-streaming Converse response.
pub fn translate_response(status: u16, body: &[u8], ctx: &ResponseContext) -> TranslatedResponse {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        return TranslatedResponse::error(&error_from_body(status, v.as_ref(), None));
    }
    let Some(v) = v else {
        return TranslatedResponse::error(&LlmError::bad_upstream("upstream response is not JSON"));
    };
    let mut c = Completion::default();
    let mut text = String::new();
    let blocks = v
        .get("output")
        .and_then(|o| o.get("message"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array);
    for b in blocks.into_iter().flatten() {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tu) = b.get("toolUse") {
            c.tool_calls.push((
                tu.get("toolUseId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                tu.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                tu.get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string),
            ));
        }
    }
    if !text.is_empty() || c.tool_calls.is_empty() {
        c.text = Some(text);
    }
    c.finish_reason = v
        .get("stopReason")
        .and_then(Value::as_str)
        .map(finish_reason);
    c.usage = v.get("usage").and_then(usage);
    TranslatedResponse::ok(completion_value(&c, ctx), c.usage)
}

/// ConverseStream `application/vnd.amazon.eventstream` → OpenAI chunks.
///
/// Frames are decoded incrementally with
/// [`aws_smithy_eventstream::frame::MessageFrameDecoder`], which checks the
/// prelude and message CRCs; a corrupt frame makes [`feed`] fail.
///
/// [`feed`]: StreamTranslator::feed
#[derive(Debug)]
pub struct BedrockEventStream {
    decoder: MessageFrameDecoder,
    buf: BytesMut,
    w: ChunkWriter,
    /// contentBlockIndex → OpenAI tool call index.
    tool_index: Vec<(u64, usize)>,
    next_tool: usize,
    failed: bool,
}

fn header_str<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl BedrockEventStream {
    /// A translator for one response.
    pub fn new(ctx: &ResponseContext) -> Self {
        Self {
            decoder: MessageFrameDecoder::new(),
            buf: BytesMut::new(),
            w: ChunkWriter::new(ctx),
            tool_index: Vec::new(),
            next_tool: 0,
            failed: false,
        }
    }

    fn message(&mut self, m: &Message, out: &mut Vec<u8>) {
        let payload: Option<Value> = serde_json::from_slice(m.payload()).ok();
        match header_str(m, ":message-type").unwrap_or("event") {
            "event" => {}
            "exception" => {
                let name = header_str(m, ":exception-type").unwrap_or("InternalServerException");
                let err = error_from_body(0, payload.as_ref(), Some(name));
                self.w.error(out, &err);
                return;
            }
            _ => {
                let code = header_str(m, ":error-code").unwrap_or("InternalServerException");
                let msg = header_str(m, ":error-message").unwrap_or("upstream error");
                let err = error_from_body(0, Some(&json!({ "message": msg })), Some(code));
                self.w.error(out, &err);
                return;
            }
        }
        let Some(v) = payload else {
            return;
        };
        let idx = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match header_str(m, ":event-type").unwrap_or("") {
            "messageStart" => self.w.role(out),
            "contentBlockStart" => {
                if let Some(tu) = v.get("start").and_then(|s| s.get("toolUse")) {
                    let k = self.next_tool;
                    self.next_tool += 1;
                    self.tool_index.push((idx, k));
                    let id = tu.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    let name = tu.get("name").and_then(Value::as_str).unwrap_or("");
                    self.w.tool_start(out, k, id, name);
                }
            }
            "contentBlockDelta" => {
                let Some(d) = v.get("delta") else {
                    return;
                };
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    self.w.text(out, t);
                } else if let Some(input) = d
                    .get("toolUse")
                    .and_then(|t| t.get("input"))
                    .and_then(Value::as_str)
                    && let Some(&(_, k)) = self.tool_index.iter().find(|(i, _)| *i == idx)
                {
                    self.w.tool_args(out, k, input);
                }
            }
            "messageStop" => {
                let r = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .map_or("stop", finish_reason);
                self.w.finish_reason(out, r);
            }
            "metadata" => {
                if let Some(u) = v.get("usage").and_then(usage) {
                    self.w.usage = Some(u);
                }
            }
            _ => {}
        }
    }
}

impl StreamTranslator for BedrockEventStream {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, LlmError> {
        if self.failed {
            return Ok(Vec::new());
        }
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            match self.decoder.decode_frame(&mut self.buf) {
                Ok(DecodedFrame::Complete(m)) => self.message(&m, &mut out),
                Ok(DecodedFrame::Incomplete) => break,
                Err(e) => {
                    self.failed = true;
                    return Err(LlmError::bad_upstream(format!(
                        "corrupt event stream from upstream: {e}"
                    )));
                }
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<u8> {
        self.w.done()
    }

    fn usage(&self) -> Option<Usage> {
        self.w.usage
    }

    fn saw_first_token(&self) -> bool {
        self.w.first_token
    }
}

//! Anthropic Messages API (`POST /v1/messages`).

use serde_json::{Map, Value, json};

use crate::error::upstream_error;
use crate::openai::{
    ChatRequest, Completion, Part, ToolChoice, completion_value, content_parts, text_only,
};
use crate::sse::SseParser;
use crate::stream::{ChunkWriter, StreamTranslator};
use crate::{LlmError, ResponseContext, TranslatedResponse, Usage};

/// `anthropic-version` sent when the target does not name one.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` sent when the client gives neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Builds the Anthropic request body.
pub fn request_body(req: &ChatRequest, model: &str) -> Result<Value, LlmError> {
    let mut system: Vec<String> = Vec::new();
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
            "system" | "developer" => system.push(text_only(&m.content, "system")?),
            "user" => {
                let blocks = content_parts(&m.content)?
                    .into_iter()
                    .filter(|p| !matches!(p, Part::Text(t) if t.is_empty()))
                    .map(part_block)
                    .collect();
                push("user", blocks);
            }
            "assistant" => {
                let mut blocks: Vec<Value> = Vec::new();
                for p in content_parts(&m.content)? {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => blocks.push(json!({"type": "text", "text": t})),
                        _ => {
                            return Err(LlmError::invalid_param(
                                "messages",
                                "assistant messages may only contain text",
                            ));
                        }
                    }
                }
                for c in m.tool_calls.iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": c.id,
                        "name": c.function.name,
                        "input": parse_arguments(&c.function.arguments)?,
                    }));
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
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
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
    body.insert("model".into(), json!(model));
    body.insert(
        "max_tokens".into(),
        json!(req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|(role, blocks)| {
            // A single text block is sent as plain string content.
            let content = match blocks.as_slice() {
                [b] if b.get("type") == Some(&json!("text")) => b["text"].clone(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    let stops = req.stop_sequences();
    if !stops.is_empty() {
        body.insert("stop_sequences".into(), json!(stops));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.extra.get("top_k") {
        body.insert("top_k".into(), k.clone());
    }
    if let Some(u) = &req.user {
        body.insert("metadata".into(), json!({ "user_id": u }));
    }
    let choice = req.tool_choice()?;
    if let Some(tools) = &req.tools
        && !tools.is_empty()
    {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut o = Map::new();
                o.insert("name".into(), json!(t.function.name));
                if let Some(d) = &t.function.description {
                    o.insert("description".into(), json!(d));
                }
                o.insert(
                    "input_schema".into(),
                    t.function
                        .parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                Value::Object(o)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let mut tc = match choice {
            None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::None) => json!({"type": "none"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
        };
        if req.parallel_tool_calls == Some(false)
            && let Value::Object(o) = &mut tc
            && o.get("type") != Some(&json!("none"))
        {
            o.insert("disable_parallel_tool_use".into(), json!(true));
        }
        if choice_is_explicit(req) || req.parallel_tool_calls == Some(false) {
            body.insert("tool_choice".into(), tc);
        }
    }
    if req.stream == Some(true) {
        body.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(body))
}

fn choice_is_explicit(req: &ChatRequest) -> bool {
    req.tool_choice.as_ref().is_some_and(|v| !v.is_null())
}

fn part_block(p: Part) -> Value {
    match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::ImageBase64 { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        Part::ImageUrl(url) => json!({
            "type": "image",
            "source": {"type": "url", "url": url},
        }),
    }
}

/// Tool call arguments (a JSON text) as a JSON object; empty means `{}`.
pub(crate) fn parse_arguments(args: &str) -> Result<Value, LlmError> {
    if args.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(args).map_err(|e| {
        LlmError::invalid_param(
            "messages",
            format!("tool call arguments are not valid JSON: {e}"),
        )
    })
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn usage(u: &Value) -> Option<Usage> {
    let input = u.get("input_tokens").and_then(Value::as_u64)?;
    let output = u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cache_read = u.get("cache_read_input_tokens").and_then(Value::as_u64);
    let cache_write = u
        .get("cache_creation_input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let prompt = input + cache_read.unwrap_or(0) + cache_write;
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: output,
        total_tokens: prompt + output,
        cached_prompt_tokens: cache_read.filter(|c| *c > 0),
    })
}

/// The error an Anthropic error body (`{"type":"error","error":{...}}`) means.
pub fn error_from_body(status: u16, v: Option<&Value>) -> LlmError {
    let err = v.and_then(|v| v.get("error"));
    let kind = err.and_then(|e| e.get("type")).and_then(Value::as_str);
    let fallback = format!("upstream returned HTTP {status}");
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(&fallback);
    // The error type is more precise than the status in streams (status 200).
    let effective = match kind {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("api_error") => 500,
        Some("overloaded_error") => 529,
        _ if status >= 400 => status,
        _ => 500,
    };
    upstream_error(effective, kind, message)
}

/// Translates a non-streaming response.
pub fn translate_response(status: u16, body: &[u8], ctx: &ResponseContext) -> TranslatedResponse {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status)
        || v.as_ref().and_then(|v| v.get("type")) == Some(&json!("error"))
    {
        return TranslatedResponse::error(&error_from_body(status, v.as_ref()));
    }
    let Some(v) = v else {
        return TranslatedResponse::error(&LlmError::bad_upstream("upstream response is not JSON"));
    };
    let mut c = Completion::default();
    let mut text = String::new();
    for b in v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => c.tool_calls.push((
                str_field(b, "id"),
                str_field(b, "name"),
                b.get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string),
            )),
            _ => {}
        }
    }
    if !text.is_empty() || c.tool_calls.is_empty() {
        c.text = Some(text);
    }
    c.finish_reason = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(finish_reason);
    c.usage = v.get("usage").and_then(usage);
    TranslatedResponse::ok(completion_value(&c, ctx), c.usage)
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Anthropic SSE stream → OpenAI chunks.
#[derive(Debug)]
pub struct AnthropicSse {
    parser: SseParser,
    w: ChunkWriter,
    /// Anthropic content block index → OpenAI tool call index.
    tool_index: Vec<(u64, usize)>,
    next_tool: usize,
    stop_reason: Option<String>,
    input_usage: Option<Value>,
}

impl AnthropicSse {
    /// A translator for one response.
    pub fn new(ctx: &ResponseContext) -> Self {
        Self {
            parser: SseParser::new(),
            w: ChunkWriter::new(ctx),
            tool_index: Vec::new(),
            next_tool: 0,
            stop_reason: None,
            input_usage: None,
        }
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match v.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                self.input_usage = v.get("message").and_then(|m| m.get("usage")).cloned();
                if let Some(u) = self.input_usage.as_ref().and_then(usage) {
                    self.w.usage = Some(u);
                }
                self.w.role(out);
            }
            "content_block_start" => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(b) = v.get("content_block") else {
                    return;
                };
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                        self.w.text(out, t);
                    }
                    Some("tool_use") => {
                        let k = self.next_tool;
                        self.next_tool += 1;
                        self.tool_index.push((idx, k));
                        self.w
                            .tool_start(out, k, &str_field(b, "id"), &str_field(b, "name"));
                        if let Some(input) = b.get("input")
                            && input.as_object().is_some_and(|o| !o.is_empty())
                        {
                            self.w.tool_args(out, k, &input.to_string());
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(d) = v.get("delta") else {
                    return;
                };
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.w
                            .text(out, d.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some("input_json_delta") => {
                        if let Some(&(_, k)) = self.tool_index.iter().find(|(i, _)| *i == idx) {
                            let p = d.get("partial_json").and_then(Value::as_str).unwrap_or("");
                            self.w.tool_args(out, k, p);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(r.to_string());
                }
                if let Some(u) = v.get("usage") {
                    // message_delta usage is cumulative; input counts may be
                    // absent there, so merge with message_start's.
                    let mut merged = self
                        .input_usage
                        .clone()
                        .and_then(|v| v.as_object().cloned())
                        .unwrap_or_default();
                    for (k, val) in u.as_object().into_iter().flatten() {
                        if !val.is_null() {
                            merged.insert(k.clone(), val.clone());
                        }
                    }
                    if let Some(u) = usage(&Value::Object(merged)) {
                        self.w.usage = Some(u);
                    }
                }
            }
            "message_stop" => {
                let r = self.stop_reason.as_deref().map_or("stop", finish_reason);
                self.w.finish_reason(out, r);
            }
            "error" => {
                let err = error_from_body(200, Some(&v));
                self.w.error(out, &err);
            }
            _ => {}
        }
    }
}

impl StreamTranslator for AnthropicSse {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, LlmError> {
        let mut out = Vec::new();
        for e in self.parser.feed(chunk) {
            self.event(&e.data, &mut out);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.parser.finish() {
            self.event(&e.data, &mut out);
        }
        out.extend(self.w.done());
        out
    }

    fn usage(&self) -> Option<Usage> {
        self.w.usage
    }

    fn saw_first_token(&self) -> bool {
        self.w.first_token
    }
}

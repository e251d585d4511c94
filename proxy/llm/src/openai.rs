//! The OpenAI chat completions wire types the gateway reads, plus helpers to
//! write its responses and stream chunks.
//!
//! Every struct keeps fields it does not know in `extra`, so a request can be
//! forwarded to an OpenAI-compatible upstream without losing anything.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{LlmError, Usage};

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// `max_completion_tokens` wins over the deprecated `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Stop sequences as a list.
    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// Whether the client asked for a final usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream.unwrap_or(false)
            && self
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false)
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message of the conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Message content: a plain string or a list of typed parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One content part (`text`, `image_url`, or something we reject).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `image_url` part payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An assistant tool call in the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCall,
}

/// The function part of a tool call; `arguments` is a JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// A function definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `tool_choice` asks for, provider-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

impl ChatRequest {
    /// Parses `tool_choice`.
    pub fn tool_choice(&self) -> Result<Option<ToolChoice>, LlmError> {
        let Some(v) = &self.tool_choice else {
            return Ok(None);
        };
        let bad = || LlmError::invalid_param("tool_choice", "unsupported tool_choice value");
        match v {
            Value::Null => Ok(None),
            Value::String(s) => match s.as_str() {
                "auto" => Ok(Some(ToolChoice::Auto)),
                "none" => Ok(Some(ToolChoice::None)),
                "required" => Ok(Some(ToolChoice::Required)),
                _ => Err(bad()),
            },
            Value::Object(o) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(|n| Some(ToolChoice::Function(n.to_string())))
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// Parses and validates a client request body.
pub fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    let req: ChatRequest = serde_json::from_slice(body)
        .map_err(|e| LlmError::invalid_request(format!("invalid request body: {e}")))?;
    if req.messages.is_empty() {
        return Err(LlmError::invalid_param(
            "messages",
            "messages must contain at least one message",
        ));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(LlmError::invalid_param("n", "only n=1 is supported"));
    }
    if let Some(tools) = &req.tools {
        for t in tools {
            if t.kind != "function" {
                return Err(LlmError::invalid_param(
                    "tools",
                    format!("unsupported tool type '{}'", t.kind),
                ));
            }
        }
    }
    Ok(req)
}

/// A content part after validation, provider-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An inline image from a `data:` URL: media type and base64 data.
    ImageBase64 {
        media_type: String,
        data: String,
    },
    /// An image by URL (only some providers can fetch it).
    ImageUrl(String),
}

/// Flattens message content into validated parts.
pub fn content_parts(content: &Option<MessageContent>) -> Result<Vec<Part>, LlmError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(s)) => Ok(vec![Part::Text(s.clone())]),
        Some(MessageContent::Parts(parts)) => parts.iter().map(part).collect(),
    }
}

fn part(p: &ContentPart) -> Result<Part, LlmError> {
    match p.kind.as_str() {
        "text" => Ok(Part::Text(p.text.clone().unwrap_or_default())),
        "image_url" => {
            let url = p
                .image_url
                .as_ref()
                .map(|u| u.url.as_str())
                .ok_or_else(|| LlmError::invalid_param("messages", "image_url part without url"))?;
            if let Some(rest) = url.strip_prefix("data:") {
                let (meta, data) = rest.split_once(',').ok_or_else(|| {
                    LlmError::invalid_param("messages", "malformed data URL in image_url")
                })?;
                let media_type = meta.strip_suffix(";base64").ok_or_else(|| {
                    LlmError::invalid_param("messages", "image data URLs must be base64 encoded")
                })?;
                Ok(Part::ImageBase64 {
                    media_type: media_type.to_ascii_lowercase(),
                    data: data.to_string(),
                })
            } else if url.starts_with("https://") || url.starts_with("http://") {
                Ok(Part::ImageUrl(url.to_string()))
            } else {
                Err(LlmError::invalid_param(
                    "messages",
                    "image_url must be an http(s) or data URL",
                ))
            }
        }
        other => Err(LlmError::invalid_param(
            "messages",
            format!("unsupported content part type '{other}'"),
        )),
    }
}

/// Text of a message whose content must be text only (system, tool).
pub fn text_only(content: &Option<MessageContent>, what: &str) -> Result<String, LlmError> {
    let mut out = String::new();
    for p in content_parts(content)? {
        match p {
            Part::Text(t) => {
                if !out.is_empty() && !t.is_empty() {
                    out.push('\n');
                }
                out.push_str(&t);
            }
            _ => {
                return Err(LlmError::invalid_param(
                    "messages",
                    format!("{what} messages may only contain text"),
                ));
            }
        }
    }
    Ok(out)
}

/// Usage as the OpenAI `usage` object.
pub fn usage_value(u: &Usage) -> Value {
    let mut v = json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    });
    if let (Some(cached), Value::Object(o)) = (u.cached_prompt_tokens, &mut v) {
        o.insert(
            "prompt_tokens_details".into(),
            json!({ "cached_tokens": cached }),
        );
    }
    v
}

/// Reads an OpenAI `usage` object.
pub fn parse_usage(v: &Value) -> Option<Usage> {
    let prompt = v.get("prompt_tokens")?.as_u64()?;
    let completion = v
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let total = v
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(prompt + completion);
    let cached = v
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64);
    Some(Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: total,
        cached_prompt_tokens: cached,
    })
}

/// An assistant reply, provider-neutral, for building `chat.completion`.
#[derive(Debug, Default)]
pub struct Completion {
    pub text: Option<String>,
    /// (id, name, arguments JSON text)
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: Option<&'static str>,
    pub usage: Option<Usage>,
}

/// Builds a `chat.completion` object.
pub fn completion_value(c: &Completion, ctx: &crate::ResponseContext) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": c.text,
    });
    if !c.tool_calls.is_empty()
        && let Value::Object(m) = &mut message
    {
        let calls: Vec<Value> = c
            .tool_calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
            })
            .collect();
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    let mut out = json!({
        "id": ctx.id,
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": c.finish_reason,
        }],
    });
    if let (Some(u), Value::Object(o)) = (&c.usage, &mut out) {
        o.insert("usage".into(), usage_value(u));
    }
    out
}

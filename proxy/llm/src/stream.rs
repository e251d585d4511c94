//! Streaming translation: provider stream bytes in, OpenAI SSE bytes out.

use serde_json::{Value, json};

use crate::openai::{parse_usage, usage_value};
use crate::sse::{SseParser, data_event};
use crate::{LlmError, ResponseContext, Usage};

/// Turns a provider's streaming response body into OpenAI
/// `chat.completion.chunk` server-sent events.
///
/// Call [`feed`](StreamTranslator::feed) with each body chunk as it arrives
/// (any split is fine) and write what it returns to the client; at the end
/// of the upstream body call [`finish`](StreamTranslator::finish) once and
/// write that too.
pub trait StreamTranslator: Send {
    /// Consumes upstream bytes; returns the OpenAI SSE bytes to emit now.
    ///
    /// An `Err` means the upstream stream is corrupt (e.g. a bad event-stream
    /// CRC); the proxy should then emit [`LlmError::to_openai_body`] as a
    /// final `data:` event (see [`error_event`]) and end the stream.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, LlmError>;
    /// Ends the stream: the usage chunk if the client asked for one, then
    /// `data: [DONE]`.
    fn finish(&mut self) -> Vec<u8>;
    /// Token usage, once the provider has reported it.
    fn usage(&self) -> Option<Usage>;
    /// Whether any content (text or tool call) has been emitted yet; the
    /// proxy uses the first time this turns true for time-to-first-token.
    fn saw_first_token(&self) -> bool;
}

/// The SSE bytes of an error event in the OpenAI shape.
pub fn error_event(err: &LlmError) -> Vec<u8> {
    let mut out = Vec::new();
    data_event(&mut out, &err.to_openai_value().to_string());
    out
}

/// Writes `chat.completion.chunk` events with a stable id/created/model.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    ctx: ResponseContext,
    sent_role: bool,
    pub(crate) first_token: bool,
    finished: bool,
    pub(crate) usage: Option<Usage>,
    done: bool,
}

impl ChunkWriter {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        Self {
            ctx: ctx.clone(),
            sent_role: false,
            first_token: false,
            finished: false,
            usage: None,
            done: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish_reason: Option<&str>) {
        let mut v = json!({
            "id": self.ctx.id,
            "object": "chat.completion.chunk",
            "created": self.ctx.created,
            "model": self.ctx.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        });
        if self.ctx.include_usage
            && let Value::Object(o) = &mut v
        {
            o.insert("usage".into(), Value::Null);
        }
        data_event(out, &v.to_string());
    }

    /// The opening chunk: `{"role":"assistant","content":""}`.
    pub(crate) fn role(&mut self, out: &mut Vec<u8>) {
        if !self.sent_role {
            self.sent_role = true;
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
    }

    pub(crate) fn text(&mut self, out: &mut Vec<u8>, text: &str) {
        if text.is_empty() {
            return;
        }
        self.role(out);
        self.first_token = true;
        self.chunk(out, json!({ "content": text }), None);
    }

    pub(crate) fn tool_start(&mut self, out: &mut Vec<u8>, index: usize, id: &str, name: &str) {
        self.role(out);
        self.first_token = true;
        self.chunk(
            out,
            json!({"tool_calls": [{
                "index": index,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]}),
            None,
        );
    }

    pub(crate) fn tool_args(&mut self, out: &mut Vec<u8>, index: usize, args: &str) {
        if args.is_empty() {
            return;
        }
        self.role(out);
        self.chunk(
            out,
            json!({"tool_calls": [{"index": index, "function": {"arguments": args}}]}),
            None,
        );
    }

    pub(crate) fn finish_reason(&mut self, out: &mut Vec<u8>, reason: &str) {
        if self.finished {
            return;
        }
        self.role(out);
        self.finished = true;
        self.chunk(out, json!({}), Some(reason));
    }

    pub(crate) fn error(&mut self, out: &mut Vec<u8>, err: &LlmError) {
        out.extend_from_slice(&error_event(err));
    }

    pub(crate) fn done(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        if self.ctx.include_usage
            && let Some(u) = &self.usage
        {
            let v = json!({
                "id": self.ctx.id,
                "object": "chat.completion.chunk",
                "created": self.ctx.created,
                "model": self.ctx.model,
                "choices": [],
                "usage": usage_value(u),
            });
            data_event(&mut out, &v.to_string());
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }
}

/// OpenAI upstream: bytes pass through unchanged; the SSE is parsed on the
/// side only to read usage and notice the first token.
///
/// Exception: when the client did *not* ask for usage but the gateway asked
/// the upstream for it (see [`crate::build_upstream_request`], it always sets
/// `stream_options.include_usage` on streaming OpenAI requests so that usage
/// can be metered), the usage-only chunk must not reach the client. In that
/// mode events are re-emitted one by one as `data: ...\n\n`, minus that chunk.
#[derive(Debug)]
pub struct OpenAiPassthrough {
    parser: SseParser,
    usage: Option<Usage>,
    first_token: bool,
    saw_done: bool,
    strip_usage_chunk: bool,
}

impl OpenAiPassthrough {
    /// `strip_usage_chunk`: drop upstream chunks with empty `choices` that
    /// carry `usage` (true when the gateway injected `include_usage`).
    pub fn new(strip_usage_chunk: bool) -> Self {
        Self {
            parser: SseParser::new(),
            usage: None,
            first_token: false,
            saw_done: false,
            strip_usage_chunk,
        }
    }

    /// Looks at one event; returns whether it should reach the client.
    fn observe(&mut self, data: &str) -> bool {
        if data.trim() == "[DONE]" {
            self.saw_done = true;
            return true;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return true;
        };
        if let Some(u) = v.get("usage").and_then(parse_usage) {
            self.usage = Some(u);
        }
        let choices = v.get("choices").and_then(Value::as_array);
        if let Some(choices) = choices {
            for c in choices {
                let d = c.get("delta");
                let has_content = d
                    .and_then(|d| d.get("content"))
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty());
                let has_tools = d.and_then(|d| d.get("tool_calls")).is_some();
                if has_content || has_tools {
                    self.first_token = true;
                }
            }
        }
        let usage_only = choices.is_some_and(|c| c.is_empty()) && v.get("usage").is_some();
        !(self.strip_usage_chunk && usage_only)
    }
}

impl StreamTranslator for OpenAiPassthrough {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, LlmError> {
        let events = self.parser.feed(chunk);
        if !self.strip_usage_chunk {
            for e in &events {
                self.observe(&e.data);
            }
            return Ok(chunk.to_vec());
        }
        let mut out = Vec::new();
        for e in events {
            if self.observe(&e.data) {
                data_event(&mut out, &e.data);
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for e in self.parser.finish() {
            if self.observe(&e.data) && self.strip_usage_chunk {
                data_event(&mut out, &e.data);
            }
        }
        if !self.saw_done {
            self.saw_done = true;
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        out
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn saw_first_token(&self) -> bool {
        self.first_token
    }
}

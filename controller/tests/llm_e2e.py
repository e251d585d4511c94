#!/usr/bin/env python3
"""The AI gateway end to end on the local cluster (run by controller/tests/e2e.sh).

    llm_e2e.py serve HOST PORT LOG   a fake OpenAI chat completions server on the node
    llm_e2e.py client BASE_URL LOG   the official OpenAI SDK through the gateway; checks what
                                     the fake saw (key injected, model set by the LLMBackend)

The fake speaks the documented wire format: `chat.completion` JSON, or with `stream: true`
`chat.completion.chunk` server-sent events ending in `data: [DONE]` (a usage chunk only when
`stream_options.include_usage` asks for it); OpenAI-shaped errors. It answers only requests
carrying `Authorization: Bearer sk-e2e`, and appends what it saw to LOG, one JSON per line.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-e2e"
TEXT = ["Hello", " from", " the", " cluster"]
USAGE = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}


def serve(host: str, port: int, log: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def send_json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            try:
                req = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                req = None
            with open(log, "a") as f:
                f.write(json.dumps({
                    "path": self.path,
                    "authorization": self.headers.get("authorization"),
                    "model": (req or {}).get("model"),
                    "stream": bool((req or {}).get("stream")),
                }) + "\n")
            if self.path != "/v1/chat/completions":
                return self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error", "param": None, "code": None}})
            if self.headers.get("authorization") != f"Bearer {KEY}":
                return self.send_json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
            if not isinstance(req, dict) or not req.get("messages"):
                return self.send_json(400, {"error": {"message": "messages is required", "type": "invalid_request_error", "param": "messages", "code": None}})
            created = int(time.time())
            base = {"id": "chatcmpl-e2e", "created": created, "model": req.get("model"), "system_fingerprint": None}
            if not req.get("stream"):
                return self.send_json(200, {
                    **base, "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(TEXT), "refusal": None},
                                 "logprobs": None, "finish_reason": "stop"}],
                    "usage": USAGE,
                })
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()

            def event(obj) -> None:
                data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            chunk = {**base, "object": "chat.completion.chunk"}
            event({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]})
            for piece in TEXT:
                event({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]})
            event({**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
            if (req.get("stream_options") or {}).get("include_usage"):
                event({**chunk, "choices": [], "usage": USAGE})
            event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    ThreadingHTTPServer((host, port), Handler).serve_forever()


def client(base: str, log: str) -> None:
    from openai import OpenAI

    c = OpenAI(base_url=base.rstrip("/") + "/v1", api_key="client-side-key-is-not-forwarded",
               max_retries=0, timeout=20.0)
    msgs = [{"role": "user", "content": "Say hello"}]
    r = c.chat.completions.create(model="whatever-the-client-asks", messages=msgs)
    assert r.choices[0].message.content == "Hello from the cluster", r
    assert r.choices[0].finish_reason == "stop", r
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (7, 4), r.usage
    text, usage = "", None
    for chunk in c.chat.completions.create(model="x", messages=msgs, stream=True,
                                           stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
    assert text == "Hello from the cluster", text
    assert usage is not None and usage.total_tokens == 11, usage
    seen = [json.loads(line) for line in open(log)]
    assert len(seen) >= 2, seen
    for s in seen[-2:]:
        assert s["authorization"] == f"Bearer {KEY}", s
        assert s["model"] == "gpt-e2e", s
    assert [s["stream"] for s in seen[-2:]] == [False, True], seen
    print("llm e2e ok")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 4 and sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

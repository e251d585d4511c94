"""The official OpenAI Python SDK as a client of CitoRoute's AI gateway.

Run by proxy/tests/llm_sdk.rs with the gateway's base URL (the proxy in front of a fake
Anthropic server answering "Hello from Claude" with 12 input and 5 output tokens):

    python3 proxy/tests/sdk/openai_sdk.py http://127.0.0.1:PORT

Exits non-zero (with a traceback) on the first failed check; prints "sdk ok" at the end.
"""

import sys

import openai
from openai import OpenAI


def main() -> None:
    base = sys.argv[1].rstrip("/")
    client = OpenAI(base_url=base + "/v1", api_key="unused-by-open-routes", max_retries=0, timeout=20.0)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]

    # Non-streaming.
    r = client.chat.completions.create(model="client-alias", messages=messages, max_tokens=64)
    assert r.object == "chat.completion", r
    assert r.choices[0].message.role == "assistant", r
    assert r.choices[0].message.content == "Hello from Claude", r
    assert r.choices[0].finish_reason == "stop", r
    assert r.usage is not None, r
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (12, 5, 17), r.usage

    # Streaming, with the final usage chunk.
    stream = client.chat.completions.create(
        model="client-alias",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                finish = choice.finish_reason
    assert chunks >= 3, chunks
    assert text == "Hello from Claude", text
    assert finish == "stop", finish
    assert usage is not None, "no usage chunk"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 5, 17), usage

    # Streaming without asking for usage: no usage chunk.
    stream = client.chat.completions.create(model="client-alias", messages=messages, stream=True)
    assert all(c.usage is None for c in stream)

    # A provider error arrives as the SDK's typed error.
    try:
        client.chat.completions.create(model="client-alias", messages=[{"role": "user", "content": "FAIL 400"}])
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
    else:
        raise AssertionError("FAIL 400 did not raise BadRequestError")
    try:
        client.chat.completions.create(model="client-alias", messages=[{"role": "user", "content": "FAIL 429"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429, e
    else:
        raise AssertionError("FAIL 429 did not raise RateLimitError")

    print("sdk ok")


if __name__ == "__main__":
    main()

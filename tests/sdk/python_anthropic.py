"""End-to-end check of llmtape with the official `anthropic` Python SDK.

Run by tests/it/anthropic.rs against an in-process llmtape in front of the
Anthropic-like mock in tests/it/support. ANTHROPIC_BASE_URL points at the
proxy (the SDK reads it, and ANTHROPIC_API_KEY, from the environment).
Usage: python_anthropic.py. Prints exactly one JSON object on stdout: each
call made twice (plain, streamed, tools, thinking), and a replay miss.
"""

import json
import sys

import anthropic

MODEL = "claude-sonnet-4-5"
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def plain(c):
    kw = dict(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Say hi"}])
    first = c.messages.create(**kw)
    raw = c.messages.with_raw_response.create(**kw)
    return {
        "first": first.model_dump(),
        "second": raw.parse().model_dump(),
        "caches": [None, raw.headers.get("x-llmtape-cache")],
    }


def streamed(c):
    kw = dict(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
    )
    once = lambda: [event.model_dump() for event in c.messages.create(**kw)]
    return {"first": once(), "second": once()}


def tools(c):
    kw = dict(
        model=MODEL,
        max_tokens=256,
        tools=TOOLS,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    return {"first": c.messages.create(**kw).model_dump(), "second": c.messages.create(**kw).model_dump()}


def thinking(c):
    kw = dict(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        tools=TOOLS,
        messages=[{"role": "user", "content": "Think, then check the weather."}],
    )

    def once():
        with c.messages.stream(**kw) as stream:
            for _ in stream:
                pass
            return stream.get_final_message().model_dump()

    return {"first": once(), "second": once()}


def replay_miss(c):
    try:
        c.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": "never recorded"}],
            extra_headers={"x-llmtape-mode": "replay"},
        )
    except anthropic.NotFoundError as e:
        return {"raised": type(e).__name__, "status": e.status_code, "message": str(e), "body": e.body}
    return {"raised": None}


def main():
    c = anthropic.Anthropic(max_retries=0, timeout=15.0)
    out = {
        "plain": plain(c),
        "stream": streamed(c),
        "tools": tools(c),
        "thinking": thinking(c),
        "replay_miss": replay_miss(c),
    }
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()

"""End-to-end check of llmtape with the official `openai` Python SDK.

Run by tests/sdk.rs against an in-process llmtape in front of a mock
upstream. Usage: python_core.py SCENARIO, with OPENAI_BASE_URL pointing at
the proxy's /v1. Prints exactly one JSON object on stdout.
"""

import json
import os
import sys

import openai
from openai import OpenAI

CHAT = dict(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Say hi"}],
    seed=42,
    temperature=0,
)


def client() -> OpenAI:
    return OpenAI(
        base_url=os.environ["OPENAI_BASE_URL"],
        api_key="sk-test-dummy",
        max_retries=0,
        timeout=15.0,
    )


def chat_twice(c: OpenAI) -> dict:
    first = c.chat.completions.create(**CHAT)
    second = c.chat.completions.create(**CHAT)
    raw = c.chat.completions.with_raw_response.create(**CHAT)
    third = raw.parse()
    return {
        "first": first.model_dump(),
        "second": second.model_dump(),
        "third": third.model_dump(),
        "third_cache": raw.headers.get("x-llmtape-cache"),
    }


def embeddings_twice(c: OpenAI) -> dict:
    first = c.embeddings.create(model="text-embedding-3-small", input="hello")
    second = c.embeddings.create(model="text-embedding-3-small", input="hello")
    return {"first": first.model_dump(), "second": second.model_dump()}


def chat_stream_twice(c: OpenAI) -> dict:
    def once() -> list:
        stream = c.chat.completions.create(
            **CHAT, stream=True, stream_options={"include_usage": True}
        )
        return [chunk.model_dump() for chunk in stream]

    return {"first": once(), "second": once()}


def replay_miss(c: OpenAI) -> dict:
    try:
        c.chat.completions.create(**CHAT)
    except openai.APIStatusError as e:
        return {
            "raised": type(e).__name__,
            "message": str(e),
            "status": e.status_code,
        }
    except openai.APIError as e:
        return {"raised": type(e).__name__, "message": str(e), "status": None}
    return {"raised": None}


SCENARIOS = {
    "chat_twice": chat_twice,
    "embeddings_twice": embeddings_twice,
    "chat_stream_twice": chat_stream_twice,
    "replay_miss": replay_miss,
}


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        print(f"usage: {sys.argv[0]} {'|'.join(SCENARIOS)}", file=sys.stderr)
        return 2
    result = SCENARIOS[sys.argv[1]](client())
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

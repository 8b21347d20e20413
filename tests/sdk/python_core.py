"""End-to-end check of llmtape with the official `openai` Python SDK.

Run by tests/it/sdk.rs against an in-process llmtape in front of a mock
upstream, or (scenario `fixtures`) serving the committed fixtures/ folder
in replay mode with no upstream at all. Usage: python_core.py SCENARIO, with OPENAI_BASE_URL pointing at
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


# The question scripts/make-example-fixtures.py asks in `exchange()`; the
# requests below must stay byte-for-byte equal in meaning to those, or their
# keys no longer match the committed recordings.
QUESTION = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]


def fixtures(c: OpenAI) -> dict:
    """The 4 requests of `exchange()` in scripts/make-example-fixtures.py,
    replayed from fixtures/, plus one request the fixtures do not hold."""
    chat = c.chat.completions.create(
        model="gpt-4o-mini", messages=QUESTION, seed=42, temperature=0
    )

    stream_text = ""
    stream_chunks = 0
    stream_total_tokens = None
    for chunk in c.chat.completions.create(
        model="gpt-4o-mini",
        messages=QUESTION,
        seed=42,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        stream_chunks += 1
        for choice in chunk.choices:
            stream_text += choice.delta.content or ""
        if chunk.usage is not None:
            stream_total_tokens = chunk.usage.total_tokens

    embedding = c.embeddings.create(
        model="text-embedding-3-small",
        input="llmtape records and replays",
        dimensions=8,
    )

    response_text = ""
    last_event = None
    for event in c.responses.create(
        model="gpt-4.1-mini", input="Write a haiku about tape recorders.", stream=True
    ):
        if event.type == "response.output_text.delta":
            response_text += event.delta
        last_event = event.type

    try:
        c.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                QUESTION[0],
                {"role": "user", "content": "What is the capital of Italy? Answer in one word."},
            ],
            seed=42,
            temperature=0,
        )
        miss = {"raised": None}
    except openai.APIStatusError as e:
        miss = {"raised": type(e).__name__, "status": e.status_code, "message": str(e)}

    return {
        "chat": {
            "content": chat.choices[0].message.content,
            "model": chat.model,
            "system_fingerprint": chat.system_fingerprint,
        },
        "stream": {
            "content": stream_text,
            "chunks": stream_chunks,
            "total_tokens": stream_total_tokens,
        },
        "embedding": list(embedding.data[0].embedding),
        "responses": {"text": response_text, "last_event": last_event},
        "miss": miss,
    }


def audio_and_images_twice(c: OpenAI) -> dict:
    """Each audio and image call twice. The SDK picks a new multipart
    boundary for every form it sends, so the second transcription hits only
    if the form is keyed by its parts."""
    audio = b"RIFF\x24\x00\x00\x00WAVEfmt \r\n--\r\n" + bytes(range(256))

    def twice(call) -> dict:
        raws = [call(), call()]
        return {
            "caches": [r.headers.get("x-llmtape-cache") for r in raws],
            "keys": [r.headers.get("x-llmtape-key") for r in raws],
            "types": [r.headers.get("content-type") for r in raws],
            "bodies_hex": [r.content.hex() for r in raws],
        }

    return {
        "transcription": twice(
            lambda: c.audio.transcriptions.with_raw_response.create(
                model="whisper-1", file=("a.wav", audio, "audio/wav")
            )
        ),
        "speech": twice(
            lambda: c.audio.speech.with_raw_response.create(
                model="tts-1", voice="alloy", input="Say hi"
            )
        ),
        "image": twice(
            lambda: c.images.with_raw_response.generate(
                model="dall-e-3", prompt="a lighthouse", response_format="b64_json"
            )
        ),
    }


SCENARIOS = {
    "chat_twice": chat_twice,
    "embeddings_twice": embeddings_twice,
    "chat_stream_twice": chat_stream_twice,
    "replay_miss": replay_miss,
    "fixtures": fixtures,
    "audio_and_images_twice": audio_and_images_twice,
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

#!/usr/bin/env python3
"""Re-creates the example recordings in fixtures/.

The committed fixtures were made by this script: it starts a stand-in
upstream on 127.0.0.1 that answers like the OpenAI API (same shapes,
pretty-printed JSON bodies, compact SSE chunks with realistic pacing),
runs `llmtape serve --fixtures fixtures --mode auto` in front of it and
drives it with the official `openai` SDK. Against the real API you would
run the same requests with `--upstream https://api.openai.com` and a real
OPENAI_API_KEY instead of the stand-in.

Usage: .venv/bin/python scripts/make-example-fixtures.py  (after scripts/test
has created .venv); it rewrites fixtures/ in place.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINGERPRINT = "fp_0aa8d3e20b"
CREATED = 1763780000


def chat_body(model):
    return {
        "id": "chatcmpl-Cf1xq2RvZbYJ8mDk3oQ0aXsTnW9pL",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Paris.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 27,
            "completion_tokens": 2,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def chat_chunks(model, usage):
    base = {
        "id": "chatcmpl-Cf1xr7KpQ2mVb4NnE0sY6uHcJ1dTg",
        "object": "chat.completion.chunk",
        "created": CREATED + 1,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    deltas = [
        ({"role": "assistant", "content": "", "refusal": None}, None),
        ({"content": "Paris"}, None),
        ({"content": "."}, None),
        ({}, "stop"),
    ]
    for delta, finish in deltas:
        chunk = dict(base)
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if usage:
            chunk["usage"] = None
        yield None, chunk
    if usage:
        chunk = dict(base)
        chunk["choices"] = []
        chunk["usage"] = {
            "prompt_tokens": 27,
            "completion_tokens": 2,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        yield None, chunk


def embedding_body(model, dims):
    values = [0.0123, -0.0456, 0.0789, -0.0112, 0.0334, -0.0556, 0.0778, -0.0991][:dims]
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": values}],
        "model": model,
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }


HAIKU = ["Reels", " turn", " in", " the", " dark", ",\n", "every", " word", " kept", " twice", ",\n", "play", " it", " back", " again", "."]


def response_events(model):
    rid = "resp_68b2f0c1d4e85a9c0123456789abcdef"
    mid = "msg_68b2f0c2a1b34c5d6e7f8091a2b3c4d5"
    text = "".join(HAIKU)
    resp = {
        "id": rid,
        "object": "response",
        "created_at": CREATED + 2,
        "status": "in_progress",
        "model": model,
        "output": [],
        "temperature": 1.0,
        "top_p": 1.0,
        "usage": None,
    }
    seq = 0

    def ev(kind, **fields):
        nonlocal seq
        body = {"type": kind, "sequence_number": seq}
        body.update(fields)
        seq += 1
        return kind, body

    yield ev("response.created", response=resp)
    yield ev("response.in_progress", response=resp)
    item = {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    yield ev("response.output_item.added", output_index=0, item=item)
    part = {"type": "output_text", "annotations": [], "text": ""}
    yield ev("response.content_part.added", item_id=mid, output_index=0, content_index=0, part=part)
    for token in HAIKU:
        yield ev("response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=token)
    yield ev("response.output_text.done", item_id=mid, output_index=0, content_index=0, text=text)
    done_part = {"type": "output_text", "annotations": [], "text": text}
    yield ev("response.content_part.done", item_id=mid, output_index=0, content_index=0, part=done_part)
    done_item = {"id": mid, "type": "message", "status": "completed", "content": [done_part], "role": "assistant"}
    yield ev("response.output_item.done", output_index=0, item=done_item)
    final = dict(resp)
    final["status"] = "completed"
    final["output"] = [done_item]
    final["usage"] = {"input_tokens": 14, "output_tokens": 17, "total_tokens": 31}
    yield ev("response.completed", response=final)


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def version_string(self):
        return "cloudflare"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        request = json.loads(self.rfile.read(length) or b"{}")
        model = request.get("model", "gpt-4o-mini")
        if self.path.endswith("/chat/completions") and request.get("stream"):
            usage = bool(request.get("stream_options", {}).get("include_usage"))
            full = "gpt-4o-mini-2024-07-18" if model == "gpt-4o-mini" else model
            self.stream([(name, c) for name, c in chat_chunks(full, usage)], done=True)
        elif self.path.endswith("/chat/completions"):
            full = "gpt-4o-mini-2024-07-18" if model == "gpt-4o-mini" else model
            self.json(chat_body(full))
        elif self.path.endswith("/embeddings"):
            self.json(embedding_body(model, request.get("dimensions", 8)), pretty=False)
        elif self.path.endswith("/responses") and request.get("stream"):
            full = "gpt-4.1-mini-2025-04-14" if model == "gpt-4.1-mini" else model
            self.stream(list(response_events(full)), done=False)
        else:
            self.send_error(404)

    def json(self, body, pretty=True):
        text = (json.dumps(body, indent=2) + "\n") if pretty else json.dumps(body, separators=(",", ":"))
        data = text.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("openai-processing-ms", "312")
        self.send_header("x-request-id", "req_4f7c2a9e1b3d5f7a9c1e3b5d7f9a1c3e")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, events, done):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("openai-processing-ms", "187")
        self.send_header("x-request-id", "req_8e1d3c5b7a9f2e4d6c8b0a1f3e5d7c9b")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        frames = []
        for name, body in events:
            prefix = f"event: {name}\n" if name else ""
            frames.append(f"{prefix}data: {json.dumps(body, separators=(',', ':'))}\n\n")
        if done:
            frames.append("data: [DONE]\n\n")
        for frame in frames:
            data = frame.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(0.03)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    from openai import OpenAI

    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"

    fixtures = os.path.join(ROOT, "fixtures")
    for entry in os.listdir(fixtures):
        path = os.path.join(fixtures, entry)
        if os.path.isdir(path):
            shutil.rmtree(path)
    subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    proxy = subprocess.Popen(
        [os.path.join(ROOT, "target", "debug", "llmtape"), "serve", "--listen", "127.0.0.1:0",
         "--upstream", upstream, "--fixtures", fixtures, "--mode", "auto"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        ready = proxy.stdout.readline()
        address = ready.split("http://", 1)[1].split(" ", 1)[0]
        client = OpenAI(base_url=f"http://{address}/v1", api_key="sk-test-dummy", max_retries=0)
        exchange(client)
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        server.shutdown()
    print("fixtures written:", sum(len(f) for _, _, f in os.walk(fixtures)))


def exchange(client):
    """The requests the example fixtures hold; tests/sdk replays them."""
    question = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one word."},
    ]
    client.chat.completions.create(model="gpt-4o-mini", messages=question, seed=42, temperature=0)
    for _ in client.chat.completions.create(
        model="gpt-4o-mini", messages=question, seed=42, temperature=0,
        stream=True, stream_options={"include_usage": True},
    ):
        pass
    client.embeddings.create(model="text-embedding-3-small", input="llmtape records and replays", dimensions=8)
    for _ in client.responses.create(model="gpt-4.1-mini", input="Write a haiku about tape recorders.", stream=True):
        pass


if __name__ == "__main__":
    sys.exit(main())

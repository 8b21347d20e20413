"""A tiny OpenAI-shaped upstream on 127.0.0.1:0 for recording without a key
or a network: chat completions (JSON or a stream), the Responses API (JSON:
what pydantic-ai and the OpenAI Agents SDK call by default) and embeddings. Every
answer carries a call counter, so a replay that came from a fixture is told
apart from a new upstream call.

    python mock_upstream.py      # prints http://127.0.0.1:PORT, serves until killed
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    calls = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        with Handler.lock:
            Handler.calls += 1
            n = Handler.calls
        if self.path.endswith("/chat/completions"):
            last = (body.get("messages") or [{}])[-1].get("content", "")
            text = f"mock answer {n} to: {last}"
            if body.get("stream"):
                return self.stream(body, text, n)
            return self.json({
                "id": f"chatcmpl-mock-{n}", "object": "chat.completion", "created": 1700000000,
                "model": body.get("model", "gpt-4o-mini"), "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            })
        if self.path.endswith("/responses"):
            return self.json(self.response(body, n))
        if self.path.endswith("/embeddings"):
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            return self.json({
                "object": "list", "model": body.get("model", "text-embedding-3-small"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.1 * n, 0.2, 0.3]}
                         for i, _ in enumerate(inputs)],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            })
        self.json({"error": {"message": f"mock upstream: no route {self.path}", "type": "invalid_request_error"}}, 404)

    @staticmethod
    def response(body, n):
        items = body.get("input")
        if isinstance(items, list):
            # The last user message: its content is text or input_text parts.
            last = next((i for i in reversed(items) if i.get("role") == "user"), {}).get("content", "")
            if isinstance(last, list):
                last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        else:
            last = items or ""
        return {
            "id": f"resp_mock_{n}", "object": "response", "created_at": 1700000000, "status": "completed",
            "model": body.get("model", "gpt-4o-mini"), "parallel_tool_calls": True, "tool_choice": "auto",
            "tools": [], "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
            "output": [{"type": "message", "id": f"msg_mock_{n}", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": f"mock answer {n} to: {last}",
                                     "annotations": []}]}],
            "usage": {"input_tokens": 5, "output_tokens": 5, "total_tokens": 10,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }

    def json(self, value, status=200):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, body, text, n):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": f"chatcmpl-mock-{n}", "object": "chat.completion.chunk", "created": 1700000000,
                "model": body.get("model", "gpt-4o-mini"), "system_fingerprint": "fp_mock"}
        for i, word in enumerate(text.split(" ")):
            delta = {"content": (" " if i else "") + word}
            chunk = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}])
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


def serve():
    """Starts the mock in a thread; returns (server, url)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


if __name__ == "__main__":
    server, url = serve()
    print(url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass

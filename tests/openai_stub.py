"""A minimal OpenAI-compatible chat server, run as a real second process by tests.

It stands for a deployment's other servers: a member whose reply the output rails check, or a
guard model an external topic source asks. ``python tests/openai_stub.py PORT`` serves
``POST /v1/chat/completions`` (streamed or not) on 127.0.0.1:PORT. Environment:

- ``STUB_REPLY``: the reply text (default ``"Hello there."``);
- ``STUB_GUARD=1``: reply ``unsafe`` when the last user message contains a word of
  ``STUB_UNSAFE`` (comma-separated, default ``bomb,poison``), else ``safe`` (a guard model);
- ``STUB_DELAY``: seconds to wait before answering (for timeouts).
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _reply(body: dict[str, Any]) -> str:
    if os.environ.get("STUB_GUARD") == "1":
        words = os.environ.get("STUB_UNSAFE", "bomb,poison").split(",")
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        text = str(users[-1].get("content", "")).lower() if users else ""
        return "unsafe" if any(w in text for w in words) else "safe"
    return os.environ.get("STUB_REPLY", "Hello there.")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, {"ok": True})

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length", 0))
        body = json.loads(self.rfile.read(n) or b"{}")
        time.sleep(float(os.environ.get("STUB_DELAY", "0")))
        text = _reply(body)
        base = {"id": "stub-1", "created": int(time.time()), "model": body.get("model", "stub")}
        if not body.get("stream"):
            self._send(
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
                },
            )
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        # Four characters per chunk, so phrases are split across chunks.
        for i in range(0, len(text), 4):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": text[i : i + 4]}}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        end = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()

"""A stub OpenAI-compatible completions server, for testing the server engines without vLLM,
and for trying them as a hostile server would: `python -m tuner.testing --port N --mode M`.

Modes (`--mode`):

- `ok`: every completion streams `max_tokens` one-token events and its usage;
- `500`: every completion is answered HTTP 500;
- `hang`: one token, then the stream stays open and silent;
- `null`, `array`, `garbage`: the events are `data: null`, `data: [1, 2, 3]` or not JSON;
- `empty`: the stream ends at once with no token;
- `exit`: the process exits on its first completion request, mid-answer.

`--fail-every n` answers every n-th completion 500 (in `ok` mode); `--delay-s` waits that long
before each token (a slow server, for trials that last); `--child` starts a sleeping child
process first, as engines do (vLLM's engine core), so that tests can check that a
server's whole tree goes; `--ignore-sigterm` makes the stub stop only for SIGKILL.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

MODES = ("ok", "500", "hang", "null", "array", "garbage", "empty", "exit")


def _events(mode: str, tokens: int) -> list[str]:
    """The `data:` payloads of one streamed completion."""
    if mode == "null":
        return ["null"]
    if mode == "array":
        return ["[1, 2, 3]"]
    if mode == "garbage":
        return ["{not json"]
    if mode == "empty":
        return [json.dumps({"choices": [], "usage": {"completion_tokens": 0}}), "[DONE]"]
    texts = [json.dumps({"choices": [{"text": "x"}]}) for _ in range(tokens)]
    usage = json.dumps({"choices": [], "usage": {"completion_tokens": tokens}})
    return [*texts, usage, "[DONE]"]


class _StubHandler(BaseHTTPRequestHandler):
    """The stub's routes; `serve_stub` sets its mode on a subclass."""

    protocol_version = "HTTP/1.1"
    mode = "ok"
    fail_every = 0
    delay_s = 0.0
    served: Iterator[int] = itertools.count(1)
    lock = threading.Lock()
    #: Whether it answers /metrics, and its prefix cache: prompts seen, [queries, hits, done].
    metrics = False
    prompts: ClassVar[list[list[Any]]] = []
    cache: ClassVar[list[int]] = [0, 0, 0]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, b"{}")
        elif self.path == "/metrics" and self.metrics:
            self._send(200, self._metrics_text(), "text/plain; version=0.0.4")
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": "stub"}]}).encode())
        else:
            self._send(404, b'{"error": "not found"}')

    def _metrics_text(self) -> bytes:
        """vLLM's counters as Prometheus text: prefix-cache queries and hits (each prompt's
        longest prefix shared with an earlier prompt, in tokens or characters), preemptions
        (none) and queue time (none)."""
        from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

        registry = CollectorRegistry()
        with self.lock:
            queries, hits, done = self.cache[0], self.cache[1], self.cache[2]
        Counter("vllm:prefix_cache_queries", "", registry=registry).inc(queries)
        Counter("vllm:prefix_cache_hits", "", registry=registry).inc(hits)
        Counter("vllm:num_preemptions", "", registry=registry)
        waited = Histogram("vllm:request_queue_time_seconds", "", registry=registry)
        for _ in range(done):
            waited.observe(0.0)
        return generate_latest(registry)

    def _cached(self, prompt: Any, salt: Any) -> None:
        """The prefix cache's count of one prompt (see `_metrics_text`); as vLLM's, it shares
        blocks only between prompts of the same `cache_salt`."""
        tokens = list(prompt) if isinstance(prompt, list | str) else []
        with self.lock:
            shared = max(
                (_common(tokens, seen) for said, seen in self.prompts if said == salt), default=0
            )
            self.prompts.append([salt, tokens])
            self.cache[0] += len(tokens)
            self.cache[1] += shared
            self.cache[2] += 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.metrics:
            self._cached(body.get("prompt"), body.get("cache_salt"))
        with self.lock:
            number = next(self.served)
        if self.mode == "500" or (self.fail_every and number % self.fail_every == 0):
            self._send(500, f"stub: request {number} refused".encode(), "text/plain")
            return
        if self.mode == "exit":
            os._exit(3)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.mode == "hang":
            self._chunk(f"data: {json.dumps({'choices': [{'text': 'x'}]})}\n\n")
            while True:
                time.sleep(3600)
        for event in _events(self.mode, int(body.get("max_tokens", 16))):
            if self.delay_s and '"text"' in event:
                time.sleep(self.delay_s)
            self._chunk(f"data: {event}\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _common(a: list[Any], b: list[Any]) -> int:
    """The length of the longest common prefix of two prompts."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def serve_stub(
    port: int,
    fail_every: int = 0,
    host: str = "127.0.0.1",
    mode: str = "ok",
    delay_s: float = 0.0,
    metrics: bool = False,
) -> None:
    """Serves `/health`, `/v1/models` and streamed `/v1/completions` until killed, as `mode`
    says (see the module's help); with `fail_every` n > 0, every n-th completion (the n-th,
    the 2n-th, ...) is answered 500 instead; with `metrics`, also vLLM's prefix-cache,
    preemption and queue counters at `/metrics`."""
    handler = type(
        "Handler",
        (_StubHandler,),
        {
            "mode": mode,
            "fail_every": fail_every,
            "delay_s": delay_s,
            "served": itertools.count(1),
            "lock": threading.Lock(),
            "metrics": metrics,
            "prompts": [],
            "cache": [0, 0, 0],
        },
    )
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((host, port), handler).serve_forever()


def main(argv: list[str] | None = None) -> None:
    """`python -m tuner.testing`: the stub server."""
    parser = argparse.ArgumentParser(description="A stub OpenAI-compatible server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--delay-s", type=float, default=0.0, help="wait before each token")
    parser.add_argument("--child", action="store_true", help="start a sleeping child first")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--metrics", action="store_true", help="answer /metrics as vLLM does")
    args = parser.parse_args(argv)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.child:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(86400)"])
    serve_stub(
        args.port, args.fail_every, mode=args.mode, delay_s=args.delay_s, metrics=args.metrics
    )


if __name__ == "__main__":
    main()

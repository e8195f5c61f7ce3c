"""The `vllm-server` engine: an OpenAI-compatible server under streaming request load.

A load starts the server (`vllm serve`'s entry point by default, or any command given as
`server_cmd`, so SGLang or TGI can be tuned the same way) on a free loopback port in a process
group of its own, with its log in the worker's folder, and waits until `/health` answers. A run
drives the workload through `/v1/completions` with streaming, at a set concurrency or request
rate, and measures throughput and per-request latency (time to first token, inter-token,
end to end). Closing stops the whole process group, killing it if it does not stop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines.base import EngineFailed, EngineOutOfMemory, EngineTimeout, RunOutput
from tuner.engines.vllm import VllmAdapter, failure, root_cause
from tuner.errors import TunerError
from tuner.knobs import Value
from tuner.workloads import Request

DEFAULT_SERVER_CMD = (
    "{python} -m vllm.entrypoints.openai.api_server --model {model} --host {host} "
    "--port {port} --seed 0 {args}"
)
HOST = "127.0.0.1"
OPTIONS = {
    "server_cmd": "command template: {model} {port} {host} {args} {python} are filled in",
    "port": "port to serve on (default: a free one)",
    "concurrency": "requests in flight at most (default: no limit)",
    "request_rate": "requests per second, Poisson arrivals (default: all at once)",
    "ready_timeout_s": "seconds to wait for the server to answer /health (default 600)",
}


def cli_args(knobs: Mapping[str, Value]) -> list[str]:
    """EngineArgs knobs as `vllm serve` flags (`--no-<flag>` for false)."""
    args: list[str] = []
    for name, value in knobs.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class _Result:
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0


class ServerEngine(VllmAdapter):
    """A served engine measured through its OpenAI-compatible completions API."""

    name: ClassVar[str] = "vllm-server"
    fresh_process_per_load: ClassVar[bool] = False  # the server is a process of its own

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Fails with one line on an unknown or malformed option."""
        for key, value in options.items():
            if key not in OPTIONS:
                raise TunerError(
                    f"{cls.name} has no option {key!r}; its options: {', '.join(OPTIONS)}"
                )
            if key == "server_cmd" and "{port}" not in str(value) and "port" not in options:
                raise TunerError("--server-cmd needs {port} in it, or a fixed --port")
        for key in ("concurrency", "request_rate"):
            if options.get(key) is not None and float(options[key]) <= 0:
                raise TunerError(f"{key} must be positive")

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        options = dict(options or {})
        self.knobs = dict(knobs)
        self.concurrency = options.get("concurrency")
        self.request_rate = options.get("request_rate")
        port = int(options.get("port") or free_port())
        self.base_url = f"http://{HOST}:{port}"
        template = options.get("server_cmd") or DEFAULT_SERVER_CMD
        command = template.format(
            python=shlex.quote(sys.executable),
            model=shlex.quote(str(model_dir)),
            host=HOST,
            port=port,
            args=" ".join(shlex.quote(a) for a in cli_args(knobs)),
        )
        log_dir = Path(options["log_file"]).parent if options.get("log_file") else Path.cwd()
        self.log_path = log_dir / f"server-{os.getpid()}-{port}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in close())
        self._log.write(f"$ {command}\n")
        self._log.flush()
        try:
            self.proc = subprocess.Popen(
                shlex.split(command),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            raise EngineFailed(f"cannot start the server ({command}): {exc}") from None
        try:
            self._wait_ready(float(options.get("ready_timeout_s") or 600))
            self.model_name = self._served_model(str(model_dir))
        except BaseException:
            self.close()
            raise

    # -- the server process ----------------------------------------------------------------------

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self._log.flush()
                text = self.log_path.read_text(errors="replace")
                lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
                cause = root_cause(text) or (lines[-1] if lines else "no output")
                message = f"server exited before it was ready (code {code}): {cause}"
                if isinstance(failure(RuntimeError(cause), None, 0), EngineOutOfMemory):
                    raise EngineOutOfMemory(message)
                raise EngineFailed(message)
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise EngineTimeout(
            f"server did not answer /health within {timeout_s:.0f} s (log: {self.log_path})"
        )

    def _served_model(self, fallback: str) -> str:
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=10) as reply:
                models = json.load(reply).get("data", [])
        except (urllib.error.URLError, OSError, ValueError):
            return fallback
        return models[0]["id"] if models else fallback

    def close(self) -> None:
        """Stops the server's process group: SIGTERM, then SIGKILL after 30 s."""
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()

    # -- load ------------------------------------------------------------------------------------

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        bodies = [
            {
                "model": self.model_name,
                "prompt": list(r.prompt_token_ids),
                "max_tokens": r.output_tokens,
                "min_tokens": r.output_tokens,
                "ignore_eos": True,
                "temperature": 1.0,
                "top_p": 1.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            for r in requests
        ]
        rng = random.Random(0)
        gaps = [
            rng.expovariate(float(self.request_rate)) if self.request_rate else 0.0
            for _ in requests
        ]
        return bodies, gaps, [len(r.prompt_token_ids) for r in requests]

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        return asyncio.run(self._drive(*prepared, deadline=deadline))

    async def _drive(
        self, bodies: list[dict[str, Any]], gaps: list[float], prompts: list[int], deadline: float
    ) -> RunOutput:
        import httpx

        limit = int(self.concurrency) if self.concurrency else len(bodies)
        gate = asyncio.Semaphore(limit)
        done: list[_Result] = []
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=None, limits=limits) as http:

            async def one(body: dict[str, Any], prompt_tokens: int) -> None:
                async with gate:
                    result = await self._stream(http, body)
                    result.prompt_tokens = prompt_tokens
                    done.append(result)

            tasks = []
            for body, gap, prompt_tokens in zip(bodies, gaps, prompts, strict=True):
                if gap:
                    await asyncio.sleep(gap)
                if time.perf_counter() >= deadline:
                    break
                tasks.append(asyncio.create_task(one(body, prompt_tokens)))
            remaining = deadline - time.perf_counter()
            if tasks and remaining > 0:
                await asyncio.wait(tasks, timeout=remaining)
            for task in tasks:
                task.cancel()  # closing the stream makes the server abort the request
            await asyncio.gather(*tasks, return_exceptions=True)
        return RunOutput(
            requests=len(done),
            input_tokens=sum(r.prompt_tokens for r in done),
            output_tokens=sum(r.tokens for r in done),
            ttft_s=tuple(r.ttft_s for r in done if r.ttft_s is not None),
            itl_s=tuple(gap for r in done for gap in r.itl_s),
            e2e_s=tuple(r.e2e_s for r in done if r.e2e_s is not None),
        )

    async def _stream(self, http: Any, body: dict[str, Any]) -> _Result:
        result = _Result()
        start = last = time.perf_counter()
        chunks = 0
        async with http.stream("POST", "/v1/completions", json=body) as reply:
            if reply.status_code != 200:
                text = (await reply.aread()).decode(errors="replace")[:300]
                raise EngineFailed(f"server answered {reply.status_code}: {text}")
            async for line in reply.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                now = time.perf_counter()
                if event.get("choices") and event["choices"][0].get("text"):
                    chunks += 1
                    if result.ttft_s is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
                usage = event.get("usage")
                if usage:
                    result.tokens = int(usage.get("completion_tokens") or 0)
        result.e2e_s = time.perf_counter() - start
        if not result.tokens:
            result.tokens = chunks
        return result

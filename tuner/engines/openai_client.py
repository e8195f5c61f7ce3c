"""The load client of every OpenAI-compatible server: streamed `/v1/completions`, measured.

It sends the workload at a set concurrency or request rate (Poisson arrivals), streams each
completion, and measures throughput and per-request latency: time to first token, inter-token
latency and end to end. A request the server refuses (an HTTP error, a broken stream) is counted
as failed with the server's answer, never dropped silently; so is a request that came back with
another number of tokens than asked, where the server promised exact lengths.

Servers differ in what a request may say (`Dialect`): vLLM and SGLang take prompts as token ids
and fix the output length with `ignore_eos` and `min_tokens`; `transformers serve` takes string
prompts only and refuses those fields.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.engines.base import KEPT_FAILURES, RequestTiming, RunOutput
from tuner.specs.workloads import Request


@dataclass(frozen=True)
class Dialect:
    """What a server accepts in a completions request."""

    name: str
    token_prompts: bool
    fixed_length: bool  # ignore_eos and min_tokens: every request yields exactly max_tokens
    #: A request that comes back with another token count than asked is failed (where the
    #: server fixes lengths, or where a tuner engine promises exact counts).
    checks_length: bool = False
    #: It takes a `cache_salt` (vLLM): prefix-cache blocks are shared only between requests of
    #: the same salt.
    salts_cache: bool = False


VLLM = Dialect("vllm", token_prompts=True, fixed_length=True, checks_length=True, salts_cache=True)
OPENAI = Dialect("openai", token_prompts=False, fixed_length=False)
#: `transformers serve`: string prompts, no ignore_eos or min_tokens (it refuses them), so a
#: request that stops at an end-of-sequence token comes back short and counts as failed.
TRANSFORMERS = Dialect("transformers", token_prompts=False, fixed_length=False, checks_length=True)
DIALECTS = {d.name: d for d in (VLLM, OPENAI, TRANSFORMERS)}


@dataclass
class _Result:
    asked: int
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0
    failure: str | None = None


@dataclass(frozen=True)
class Prepared:
    """Request bodies, arrival gaps and prompt lengths, made before the timed region."""

    bodies: list[dict[str, Any]]
    gaps: list[float]
    prompt_tokens: list[int]
    concurrency: int | None = None  # requests in flight at most; None: every one at once


class LoadClient:
    """Drives one server: `prepare` the workload once, `run` it until done or the deadline."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        dialect: Dialect,
        *,
        request_rate: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.model_name = model_name
        self.dialect = dialect
        self.request_rate = request_rate
        self.runs = 0

    def prepare(
        self,
        requests: Sequence[Request],
        concurrency: int | None = None,
        request_rate: float | None = None,
    ) -> Prepared:
        """Request bodies and arrival gaps. A trace is sent at its recorded arrivals, scaled to
        a mean of `request_rate` requests/s where one is given (it replaces the client's own for
        this workload), so its bursts stay; other requests arrive as a Poisson process at that
        rate, or all at once without one. A rate of `math.inf` sends every request at once."""
        bodies = []
        for r in requests:
            body: dict[str, Any] = {
                "model": self.model_name,
                "prompt": list(r.prompt_token_ids) if self.dialect.token_prompts else r.prompt,
                "max_tokens": r.output_tokens,
                "temperature": 1.0,
                "top_p": 1.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            if self.dialect.fixed_length:
                body.update(min_tokens=r.output_tokens, ignore_eos=True)
            bodies.append(body)
        prompt_tokens = [len(r.prompt_token_ids) for r in requests]
        return Prepared(
            bodies,
            arrival_gaps(requests, request_rate or self.request_rate),
            prompt_tokens,
            concurrency,
        )

    def run(self, prepared: Prepared, deadline: float) -> RunOutput:
        """One run of the prepared load. Where the server salts its prefix cache, each run has
        a salt of its own: the requests of a run share what their prompts share, and no run
        finds the prompts of the run before it (the same workload) cached."""
        self.runs += 1
        if self.dialect.salts_cache:
            salt = f"tuner-run-{self.runs}"
            bodies = [{**body, "cache_salt": salt} for body in prepared.bodies]
            prepared = dataclasses.replace(prepared, bodies=bodies)
        return asyncio.run(self._drive(prepared, deadline))

    async def _drive(self, prepared: Prepared, deadline: float) -> RunOutput:
        import httpx

        limit = prepared.concurrency or len(prepared.bodies)
        gate = asyncio.Semaphore(limit)
        done: list[_Result] = []
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=None, limits=limits) as http:

            async def one(body: dict[str, Any], prompt_tokens: int) -> None:
                async with gate:
                    result = _Result(asked=int(body["max_tokens"]), prompt_tokens=prompt_tokens)
                    try:
                        await self._stream(http, body, result)
                    except Exception as exc:
                        result.failure = f"{type(exc).__name__}: {exc}"[:300]
                    done.append(result)

            tasks = []
            for body, gap, prompt_tokens in zip(
                prepared.bodies, prepared.gaps, prepared.prompt_tokens, strict=True
            ):
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
        # A request cut at the deadline is not a completed one: neither done nor failed.
        return self._output(done, cut=len(tasks) - len(done))

    def _output(self, done: list[_Result], cut: int = 0) -> RunOutput:
        for r in done:
            if r.failure is None and r.asked > 0 and r.tokens == 0:
                r.failure = "the answer held no token"
            elif r.failure is None and self.dialect.checks_length and r.tokens != r.asked:
                r.failure = f"asked for {r.asked} tokens, got {r.tokens}"
        ok = [r for r in done if r.failure is None]
        failures = list(dict.fromkeys(r.failure for r in done if r.failure is not None))
        return RunOutput(
            requests=len(ok),
            input_tokens=sum(r.prompt_tokens for r in ok),
            output_tokens=sum(r.tokens for r in ok),
            ttft_s=tuple(r.ttft_s for r in ok if r.ttft_s is not None),
            itl_s=tuple(gap for r in ok for gap in r.itl_s),
            e2e_s=tuple(r.e2e_s for r in ok if r.e2e_s is not None),
            timings=tuple(
                RequestTiming(r.ttft_s, r.e2e_s, r.tokens)
                for r in ok
                if r.ttft_s is not None and r.e2e_s is not None
            ),
            failed=len(done) - len(ok),
            failures=tuple(failures[:KEPT_FAILURES]),
            cut=cut,
        )

    async def _stream(self, http: Any, body: dict[str, Any], result: _Result) -> None:
        start = last = time.perf_counter()
        chunks = 0
        async with http.stream("POST", "/v1/completions", json=body) as reply:
            if reply.status_code != 200:
                text = (await reply.aread()).decode(errors="replace").strip()[:300]
                result.failure = f"server answered {reply.status_code}: {text}"
                return
            async for line in reply.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = _event(data)
                if "error" in event:
                    result.failure = f"server error in stream: {json.dumps(event['error'])[:300]}"
                    return
                now = time.perf_counter()
                if _text(event):
                    chunks += 1
                    if result.ttft_s is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
                usage = event.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    result.tokens = _count(usage["completion_tokens"])
        result.e2e_s = time.perf_counter() - start
        if not result.tokens:
            result.tokens = chunks


def arrival_gaps(requests: Sequence[Request], rate: float | None) -> list[float]:
    """Seconds to wait before sending each request (see `LoadClient.prepare`)."""
    if rate == math.inf:
        return [0.0] * len(requests)
    times = [r.arrival_s for r in requests]
    if times and all(t is not None for t in times):
        stamps = [float(t or 0.0) for t in times]
        span = stamps[-1] - stamps[0]
        # The trace's mean rate is (n - 1) / span; scaled, it is `rate`.
        scale = (len(stamps) - 1) / (span * rate) if rate and span > 0 else 1.0
        return [max(0.0, b - a) * scale for a, b in zip([stamps[0], *stamps], stamps, strict=False)]
    rng = random.Random(0)
    return [rng.expovariate(float(rate)) if rate else 0.0 for _ in requests]


def _event(data: str) -> dict[str, Any]:
    """One streamed event, which must be a JSON object; `ValueError` otherwise."""
    event = json.loads(data)
    if not isinstance(event, dict):
        raise ValueError(f"stream event is not a JSON object: {data[:100]}")
    return event


def _text(event: dict[str, Any]) -> str:
    """The text of an event's first choice ('' for none); `ValueError` for a malformed one."""
    choices = event.get("choices")
    if not choices:
        return ""
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ValueError(f"stream event has malformed choices: {json.dumps(choices)[:100]}")
    text = choices[0].get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"stream event's text is not a string: {json.dumps(text)[:100]}")
    return text or ""


def _count(value: Any) -> int:
    """A token count from the server's usage; `ValueError` unless a whole number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"usage.completion_tokens is not a count: {json.dumps(value)[:100]}")
    return value

"""Test doubles that ship with tuner, so that users can test their own adapters and studies.

- `FakeEngine`: an engine with a known throughput surface over four knobs, a peak, and an
  out-of-memory region. It spends real time (a precise busy wait) so that the real measurement
  code measures it.
- `FakeServer`: the fake engine with per-request latency (TTFT, time per token, end to end),
  for goodput and latency limits.
- `CrashingEngine` and `HangingEngine`: the fake, except that large batches kill the worker
  process or hang it.
- `ScriptedEngine` and `FakeClock`: run durations chosen by the test, for measurement arithmetic.
- `fake_model_dir`: a model folder with a tokenizer and a config but no weights, enough for
  workloads to be tokenized for fake engines.
- `serve_stub` (`tuner.testing.stub`): an OpenAI-compatible completions server that streams
  fixed text, refuses every n-th request with HTTP 500 when asked to (`python -m tuner.testing
  --port N --fail-every 2`), or misbehaves as a hostile server would (`--mode hang`, `null`,
  `500`, `exit`, ...), for testing the server engines without vLLM.
- `check_engine_contract`: the engine contract, checked on one adapter
  (tests/test_engine_contract.py runs it on every adapter tuner ships; run it on yours).
- `fake_machines`: a Dask worker plugin that tells each worker of a cluster it has another GPU
  model than it has (`tuner.execution.fleet.worker_machine` reports it), for testing mixed fleets
  without GPUs; `SurfaceOnWorker`: the fake surface answered after a sleep, killing its own
  Dask worker (kill -9) at a chosen trial, for testing a worker lost mid-trial.
- `FakeGpu`: a GPU whose NVML readings follow scripts (an energy counter built on
  `itertools.count`, one that goes backwards, a device that disappears, unsupported calls), for
  testing telemetry without a GPU.

Use them with `--engine tuner.testing:FakeEngine` or `engine="tuner.testing:FakeEngine"`.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines.base import EngineBase, EngineOutOfMemory, RequestTiming, RunOutput
from tuner.errors import GpuLost, NvmlNotSupported
from tuner.hardware.machine import Hardware
from tuner.hardware.nvml import GpuInfo
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.workloads import Request
from tuner.testing.stub import serve_stub as serve_stub

FAKE_CATALOGUE = {
    "engine": "fake",
    "summary": "a known throughput surface with an out-of-memory region",
    "knobs": {
        "batch_size": {
            "type": "int",
            "stage": "run",
            "range": [1, 256],
            "log": True,
            "default": 1,
            "help": "requests per step",
        },
        "kernel": {
            "type": "choice",
            "stage": "load",
            "choices": ["basic", "fused", "tiled"],
            "default": "basic",
            "help": "kernel family",
        },
        "cache": {
            "type": "choice",
            "stage": "run",
            "choices": ["dynamic", "static"],
            "default": "dynamic",
            "help": "cache layout",
        },
        "compile": {
            "type": "bool",
            "stage": "load",
            "when": {"cache": "static"},
            "default": False,
            "help": "compiled decode step",
        },
    },
}

PEAK_BATCH = 48
KERNEL_FACTOR = {"basic": 1.0, "fused": 1.3, "tiled": 1.15}
#: Tokens per second at the surface's top scale; chosen so fake runs last milliseconds.
SCALE_TOKENS_PER_S = 40_000.0


def surface(knobs: Mapping[str, Value]) -> float | None:
    """Output tok/s of the fake engine for `knobs`, or None where it runs out of memory.

    A smooth peak in log2(batch_size) at 48, times factors for the kernel, a static cache and
    compilation. Memory runs out when batch_size x (2 for a static cache) exceeds 128.
    """
    batch = int(knobs["batch_size"])
    static = knobs.get("cache") == "static"
    if batch * (2 if static else 1) > 128:
        return None
    shape = math.exp(-((math.log2(batch) - math.log2(PEAK_BATCH)) ** 2) / (2 * 1.5**2))
    factor = KERNEL_FACTOR[str(knobs["kernel"])]
    if static:
        factor *= 1.1 * (1.2 if knobs.get("compile") else 1.0)
    return SCALE_TOKENS_PER_S * (0.05 + 0.95 * shape) * factor


def peak() -> tuple[dict[str, Value], float]:
    """The best configuration of the fake surface and its tok/s (by exhaustive search)."""
    best: tuple[dict[str, Value], float] = ({}, 0.0)
    for batch in range(1, 257):
        for kernel in KERNEL_FACTOR:
            for cache, compile_ in (("dynamic", None), ("static", False), ("static", True)):
                knobs: dict[str, Value] = {"batch_size": batch, "kernel": kernel, "cache": cache}
                if compile_ is not None:
                    knobs["compile"] = compile_
                value = surface(knobs)
                if value is not None and value > best[1]:
                    best = (knobs, value)
    return best


def spin(seconds: float) -> None:
    """Busy-waits: precise to microseconds, unlike sleep."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class FakeEngine(EngineBase):
    """An engine whose throughput is `surface(knobs)`, spent as real time."""

    name: ClassVar[str] = "fake"
    load_s: ClassVar[float] = 0.005

    @classmethod
    def catalogue(cls) -> Catalogue:
        return Catalogue.model_validate(FAKE_CATALOGUE)

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"fake": "1.0"}

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        self.load_knobs = dict(knobs)
        spin(self.load_s)

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        merged = {**self.load_knobs, **knobs}
        batch = int(knobs["batch_size"])
        chunks = [requests[i : i + batch] for i in range(0, len(requests), batch)]
        return merged, chunks

    def misbehave(self, knobs: Mapping[str, Value]) -> None:
        """Hook for the crashing and hanging fakes."""

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        knobs, chunks = prepared
        self.misbehave(knobs)
        rate = surface(knobs)
        if rate is None:
            raise EngineOutOfMemory(f"fake engine: batch_size={knobs['batch_size']} does not fit")
        done = inputs = outputs = 0
        timings: list[RequestTiming] = []
        itl: list[float] = []
        start = time.perf_counter()
        for chunk in chunks:
            began = time.perf_counter()
            if began >= deadline:
                break
            tokens = sum(r.output_tokens for r in chunk)
            spin(tokens / rate)
            took = time.perf_counter() - began
            done += len(chunk)
            inputs += sum(len(r.prompt_token_ids) for r in chunk)
            outputs += tokens
            # Every request of a chunk advances one token per step: its time per token grows
            # with the batch, and later chunks wait for earlier ones (time to first token).
            steps = max(r.output_tokens for r in chunk)
            for r in chunk:
                step = took / steps
                timings.append(
                    RequestTiming(began - start + step, began - start + took, r.output_tokens)
                )
                itl += [step] * (r.output_tokens - 1)
        if not self.reports_latency:
            return RunOutput(requests=done, input_tokens=inputs, output_tokens=outputs)
        return RunOutput(
            requests=done,
            input_tokens=inputs,
            output_tokens=outputs,
            ttft_s=tuple(t.ttft_s for t in timings),
            itl_s=tuple(itl),
            e2e_s=tuple(t.e2e_s for t in timings),
            timings=tuple(timings),
        )

    def close(self) -> None:
        pass


class FakeServer(FakeEngine):
    """The fake engine, reporting each request's latency as a server does: a request's time
    per token is its batch's step (it grows with the batch, while throughput peaks at 48), and
    its time to first token includes the wait for the batches before it."""

    name: ClassVar[str] = "fake-server"
    reports_latency: ClassVar[bool] = True


class CrashingEngine(FakeEngine):
    """The fake engine, except that a batch_size of 64 or more kills its process (SIGKILL)."""

    def misbehave(self, knobs: Mapping[str, Value]) -> None:
        if int(knobs["batch_size"]) >= 64:
            os.kill(os.getpid(), signal.SIGKILL)


class HangingEngine(FakeEngine):
    """The fake engine, except that a batch_size of 64 or more never returns."""

    def misbehave(self, knobs: Mapping[str, Value]) -> None:
        if int(knobs["batch_size"]) >= 64:
            while True:
                time.sleep(1)


class FakeClock:
    """A clock that advances only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedEngine(EngineBase):
    """Each run takes the next duration from a script on a `FakeClock` and completes
    `tokens_per_request` tokens for each request."""

    def __init__(self, clock: FakeClock, durations_s: Sequence[float], tokens_per_request: int):
        self.clock = clock
        self.durations: Iterator[float] = iter(durations_s)
        self.tokens = tokens_per_request

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        return list(requests)

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        self.clock.advance(next(self.durations))
        inputs = sum(len(r.prompt_token_ids) for r in prepared)
        return RunOutput(len(prepared), inputs, self.tokens * len(prepared))

    def close(self) -> None:
        pass


def fake_model_dir(path: Path) -> Path:
    """Writes a weightless model folder (config.json and a small trained tokenizer.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|eos|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["def add(a, b):\n    return a + b\n"] * 4, trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "config.json").write_text(json.dumps({"model_type": "fake", "vocab_size": 300}))
    return path


def surface_result(number: int, origin: str, knobs: dict[str, Value]) -> Any:
    """A trial result read off `surface` with no time spent: for benchmarking the search itself
    (`Study.run(evaluate=surface_result)`)."""
    from datetime import UTC, datetime

    from tuner.measure.measurement import Measurement, Run
    from tuner.measure.trial import TrialResult

    rate = surface(knobs)
    common = {
        "number": number,
        "origin": origin,
        "knobs": knobs,
        "wall_s": 0.0,
        "started_at": datetime.now(UTC),
    }
    if rate is None:
        return TrialResult(status="oom", reason="fake engine: does not fit", **common)
    run = Run(
        elapsed_s=1000 / rate, requests=1, input_tokens=0, output_tokens=1000, truncated=False
    )
    return TrialResult(status="ok", measurement=Measurement.from_runs(run, [run] * 3), **common)


class FakeGpu:
    """A GPU whose readings come from scripts: each call of a reading takes its next value.

    `energy_j=None` means the board has no energy counter. After `lost_after` readings of any
    kind, every call fails as if the GPU fell off the bus. Readings named in `unsupported` fail
    as NVML's NOT_SUPPORTED.
    """

    #: Each reading's value where its script is not given.
    STEADY: ClassVar[dict[str, float]] = {
        "power_w": 300.0,
        "memory_used_mib": 20_000.0,
        "sm_clock_mhz": 1980.0,
        "temperature_c": 60.0,
        "utilization_pct": 95.0,
        "clock_event_reasons": 0,
    }

    def __init__(
        self,
        index: int = 0,
        *,
        energy_j: Iterable[float] | None = None,
        lost_after: int | None = None,
        unsupported: Iterable[str] = (),
        **readings: Iterable[float],
    ) -> None:
        """`readings`: a script per reading named in `STEADY` (power_w=[...], ...)."""
        unknown = set(readings) - set(self.STEADY)
        assert not unknown, f"FakeGpu has no reading {unknown}"
        self.index = index
        self.uuid = f"GPU-fake-{index}"
        self._scripts: dict[str, Iterator[float]] = {
            name: iter(readings.get(name) or itertools.repeat(steady))
            for name, steady in self.STEADY.items()
        }
        self._unsupported = set(unsupported)
        if energy_j is None:
            self._unsupported.add("energy_j")
        else:
            self._scripts["energy_j"] = iter(energy_j)
        self._lost_after = lost_after
        self.reads = 0
        self.closed = False

    def _next(self, name: str) -> float:
        self.reads += 1
        if self._lost_after is not None and self.reads > self._lost_after:
            raise GpuLost("NVML error 15: GPU is lost")
        if name in self._unsupported:
            raise NvmlNotSupported("NVML error 3: Not Supported")
        return next(self._scripts[name])

    def power_w(self) -> float:
        return self._next("power_w")

    def energy_j(self) -> float:
        return self._next("energy_j")

    def memory_used_mib(self) -> float:
        return self._next("memory_used_mib")

    def sm_clock_mhz(self) -> float:
        return self._next("sm_clock_mhz")

    def temperature_c(self) -> float:
        return self._next("temperature_c")

    def utilization_pct(self) -> float:
        return self._next("utilization_pct")

    def clock_event_reasons(self) -> int:
        return int(self._next("clock_event_reasons"))

    def close(self) -> None:
        self.closed = True


def fake_hardware(
    name: str | None = "NVIDIA H100 80GB HBM3",
    memory_mib: int = 81_559,
    compute_capability: str = "9.0",
    count: int = 1,
) -> Hardware:
    """A machine with `count` GPUs of one model (name None: a machine without a GPU)."""
    gpus = tuple(
        GpuInfo(i, name, f"GPU-fake-{i}", memory_mib, compute_capability, 700.0)
        for i in range(count if name else 0)
    )
    return Hardware(
        gpus=gpus,
        driver_version="580.0" if gpus else None,
        cuda_version="13.0" if gpus else None,
        no_gpu_reason=None if gpus else "no GPU (fake)",
        cpu_model="fake CPU",
        cpu_cores=2,
        memory_mib=24_000,
    )


def check_engine_contract(
    engine: str,
    model: str,
    *,
    requests: int = 8,
    output_tokens: int = 4,
    options: Mapping[str, Any] | None = None,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Checks the engine contract (`tuner.engines.base`) on one adapter, loading it with its
    default knobs on `model` and a synthetic workload; raises AssertionError naming the clause
    broken, else returns what it saw. Run it in a process of its own for engines that start
    processes (vLLM)."""
    import tempfile

    from tuner.engines import engine_class
    from tuner.specs.workloads import load_workload
    from tuner.study.prepare import prepare

    workload = load_workload("synthetic", requests=requests, output_tokens=output_tokens)
    setup = prepare(engine, model, workload, options=dict(options or {}))
    cls = engine_class(engine)
    versions = _check_class(cls)
    load, run = setup.space.split(setup.space.default_knobs())
    log_file = Path(log_dir or tempfile.mkdtemp(prefix="tuner-contract-")) / "engine.log"
    loaded = cls(setup.model.path, load, {**setup.options, "log_file": str(log_file)})
    try:
        prepared = loaded.prepare(setup.requests, run)
        out = loaded.run(prepared, time.perf_counter() + 600)
        asked = sum(r.output_tokens for r in setup.requests)
        assert out.requests == len(setup.requests), f"{out.requests} of {requests} requests done"
        assert out.output_tokens == asked, f"{out.output_tokens} tokens out, {asked} asked"
        assert out.failed == 0, f"{out.failed} requests failed: {out.failures}"
        late = loaded.run(prepared, time.perf_counter() - 1)
        assert late.requests < len(setup.requests), "a run past its deadline did all the work"
        gpus = loaded.gpu_indices()
        assert isinstance(gpus, list) and all(isinstance(g, int) for g in gpus), gpus
        effective = loaded.effective_knobs()
        assert isinstance(effective, dict), effective
    finally:
        loaded.close()
    return {
        "versions": versions,
        "requests": out.requests,
        "output_tokens": out.output_tokens,
        "late_requests": late.requests,
        "gpu_indices": gpus,
        "effective_knobs": effective,
    }


def _check_class(cls: Any) -> dict[str, str]:
    """The contract's clauses on the adapter class itself; its versions."""
    from tuner.errors import TunerError

    for attr in ("name", "fresh_process_per_load", "options"):
        assert hasattr(cls, attr), f"the adapter class declares no {attr}"
    assert isinstance(cls.catalogue(), Catalogue), "catalogue() returns no Catalogue"
    versions = cls.versions()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in versions.items()), versions
    try:
        cls.check_options({"no-such-option": 1})
    except TunerError:
        pass
    else:
        raise AssertionError("check_options() took an option it does not declare")
    assert cls.is_oom(MemoryError()) and not cls.is_oom(ValueError("bad value")), "is_oom()"
    return versions


def fake_machines(gpu_models: Mapping[str, str]) -> Any:
    """A Dask worker plugin: the worker named `n` reports a machine with one GPU of model
    `gpu_models[n]` (`fake_hardware`) as the one it runs on
    (`tuner.execution.fleet.worker_machine`); workers not named report their own.
    `client.register_plugin(fake_machines({...}))`."""
    from distributed import WorkerPlugin

    from tuner.execution.fleet import WorkerMachine, tell_machine
    from tuner.hardware.machine import Platform

    class FakeMachines(WorkerPlugin):
        name = "tuner-fake-machines"

        def setup(self, worker: Any) -> None:
            model = gpu_models.get(str(worker.name))
            if model is not None:
                platform = Platform("cuda", 1, frozenset({"cuda", "bf16", "fp16"}))
                tell_machine(worker, WorkerMachine(fake_hardware(model), platform, ("0",), "fake"))

    return FakeMachines()


class SurfaceOnWorker:
    """`evaluate(number, origin, knobs)`: `surface_result` after `delay_s` of sleep, except
    that trial `kill_at` kills the process it runs in (a Dask worker) with SIGKILL, each time
    it runs. For testing trials side by side and a worker lost mid-trial."""

    def __init__(self, delay_s: float = 0.0, kill_at: int | None = None) -> None:
        self.delay_s = delay_s
        self.kill_at = kill_at

    def __call__(self, number: int, origin: str, knobs: dict[str, Value]) -> Any:
        if number == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay_s)
        return surface_result(number, origin, knobs)


class FakePrior:
    """A prior over the fake surface's knobs that predicts `surface` (out of memory where it
    has no figure), its batch sizes off by `error` (a fraction), or says nothing of knobs
    in `unknown`."""

    label = "fake prior"
    covers = frozenset({"batch_size", "kernel"})

    def __init__(self, error: float = 0.0, unknown: Sequence[Mapping[str, Value]] = ()) -> None:
        self.error, self.unknown, self.asked = error, list(unknown), 0

    def predict(self, knobs: Mapping[str, Value]) -> Any:
        from tuner.measure.measurement import Measurement
        from tuner.measure.trial import Prediction

        self.asked += 1
        if any(all(knobs.get(k) == v for k, v in u.items()) for u in self.unknown):
            return None
        rate = surface(knobs)
        if rate is None:
            return Prediction(by=self.label, status="oom", reason="predicted out of memory")
        run = _run(rate * (1 + self.error))
        return Prediction(by=self.label, status="ok", measurement=Measurement.from_runs(run, [run]))


def _run(output_tokens_per_s: float) -> Any:
    from tuner.measure.measurement import Run

    return Run(
        elapsed_s=1.0,
        requests=8,
        input_tokens=64,
        output_tokens=max(1, round(output_tokens_per_s)),
        truncated=False,
    )

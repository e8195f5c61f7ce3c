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
  (tests/e2e/test_engine_contract.py runs it on every adapter tuner ships; run it on yours).
- `fake_machines`: a Dask worker plugin that tells each worker of a cluster it has another GPU
  model than it has (`tuner.execution.fleet.worker_machine` reports it), for testing mixed fleets
  without GPUs; `SurfaceOnWorker`: the fake surface answered after a sleep, killing its own
  Dask worker (kill -9) at a chosen trial, for testing a worker lost mid-trial.
- `FakeGpu`: a GPU whose NVML readings follow scripts (an energy counter built on
  `itertools.count`, one that goes backwards, a device that disappears, unsupported calls), for
  testing telemetry without a GPU.

One module per kind of double: `engines` (the fake engines, their surface, `FakeClock`),
`models`, `gpu`, `fleet` (Dask), `prior`, `contract` and `stub`; this package re-exports them all.
Use them with `--engine tuner.testing:FakeEngine` or `engine="tuner.testing:FakeEngine"`.
"""

from tuner.testing.contract import check_engine_contract
from tuner.testing.engines import (
    FAKE_CATALOGUE,
    KERNEL_FACTOR,
    PEAK_BATCH,
    SCALE_TOKENS_PER_S,
    CrashingEngine,
    FakeClock,
    FakeEngine,
    FakeServer,
    HangingEngine,
    ScriptedEngine,
    peak,
    spin,
    surface,
    surface_result,
)
from tuner.testing.fleet import SurfaceOnWorker, fake_machines
from tuner.testing.gpu import FakeGpu, fake_hardware
from tuner.testing.models import fake_model_dir
from tuner.testing.prior import BiasedPrior, FakePrior
from tuner.testing.stub import serve_stub

__all__ = [
    "FAKE_CATALOGUE",
    "KERNEL_FACTOR",
    "PEAK_BATCH",
    "SCALE_TOKENS_PER_S",
    "BiasedPrior",
    "CrashingEngine",
    "FakeClock",
    "FakeEngine",
    "FakeGpu",
    "FakePrior",
    "FakeServer",
    "HangingEngine",
    "ScriptedEngine",
    "SurfaceOnWorker",
    "check_engine_contract",
    "fake_hardware",
    "fake_machines",
    "fake_model_dir",
    "peak",
    "serve_stub",
    "spin",
    "surface",
    "surface_result",
]

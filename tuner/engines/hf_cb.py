"""The `hf-cb` engine: transformers continuous batching over a paged KV cache.

The model is loaded with the trial's dtype and attention; each prepared load of the run knobs
(a `ContinuousBatchingConfig`, fields by their own names) gets one continuous batching manager,
kept between timed runs as a server keeps it (`persistent_manager`), and every request is added
to it with its own token count and end-of-sequence disabled, so that each generates exactly what
it asks for. Each request's per-token timestamps give its TTFT and end-to-end latency (all
requests arrive at the start). A request that finishes short of its count (it cannot stop at an
end-of-sequence token here, but a manager may drop a request it cannot schedule) is not counted
as completed: the run says how many failed and why.

The catalogue (`engines/hf-cb.yaml`) is checked against the installed transformers at start-up:
a run knob that is no `ContinuousBatchingConfig` field is unavailable with that reason, and
scheduler and attention choices it does not offer are left out.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines import load_catalogue
from tuner.engines.base import EngineOutOfMemory, RequestTiming, RunOutput
from tuner.engines.hf import TransformersEngine, load_causal_lm
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.workloads import Request

#: Load-stage knobs: from_pretrained arguments; every run knob is a ContinuousBatchingConfig field.
LOAD_KNOBS = ("dtype", "attn_implementation", "num_gpus")


def library_offers() -> tuple[str, set[str], set[str], set[str]]:
    """The installed transformers' version, ContinuousBatchingConfig fields, scheduler types
    and attention implementations."""
    import transformers
    from transformers import AttentionInterface, ContinuousBatchingConfig
    from transformers.generation.continuous_batching.scheduler import SCHEDULER_MAPPING

    fields = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    attention = {*AttentionInterface._global_mapping, "eager"}
    return transformers.__version__, fields, set(SCHEDULER_MAPPING), attention


def check_catalogue(
    catalogue: Catalogue, version: str, fields: set[str], schedulers: set[str], attention: set[str]
) -> Catalogue:
    """The catalogue as the installed transformers can run it."""
    knobs = {}
    for name, spec in catalogue.knobs.items():
        if spec.stage == "run" and name not in fields:
            spec = spec.model_copy(
                update={
                    "unavailable": f"transformers {version} has no ContinuousBatchingConfig.{name}"
                }
            )
        offered = {"scheduler_type": schedulers, "attn_implementation": attention}.get(name)
        if offered is not None and spec.type == "choice":
            kept = [c for c in spec.choice_specs() if str(c.value) in offered]
            if kept:
                spec = spec.model_copy(update={"choices": kept})
            else:
                spec = spec.model_copy(
                    update={"unavailable": f"transformers {version} offers none of its choices"}
                )
        knobs[name] = spec
    return catalogue.model_copy(update={"knobs": knobs})


class ContinuousBatchingEngine(TransformersEngine):
    """transformers' continuous batching manager, fed every request at once."""

    name: ClassVar[str] = "hf-cb"
    reports_latency: ClassVar[bool] = True

    @classmethod
    def catalogue(cls) -> Catalogue:
        return check_catalogue(load_catalogue(cls.name), *library_offers())

    @classmethod
    def shipped_catalogue(cls) -> Catalogue:
        """`engines/hf-cb.yaml` unchecked against the installed transformers."""
        return load_catalogue(cls.name)

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        import torch

        self._torch = torch
        self.model = load_causal_lm(model_dir, knobs)
        self.config: dict[str, Value] = {}

    def torch_model(self) -> Any:
        return self.model

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        from transformers import ContinuousBatchingConfig, GenerationConfig

        config = {n: v for n, v in knobs.items() if n not in LOAD_KNOBS}
        if config != self.config:
            # A new configuration: a new manager (the cached one was sized for the old one).
            self.model.destroy_cached_continuous_batching_manager()
            self.config = config
        cb = ContinuousBatchingConfig(**config)  # type: ignore[arg-type]
        longest = max(r.output_tokens for r in requests)
        generation = GenerationConfig(
            max_new_tokens=longest, do_sample=False, eos_token_id=-1, pad_token_id=0
        )
        return list(requests), cb, generation

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        from transformers.generation.continuous_batching.utils import WorkloadHints

        requests, cb, generation = prepared
        hints = WorkloadHints(
            max_prompt_length=max(len(r.prompt_token_ids) for r in requests),
            max_generated_length=generation.max_new_tokens,
            num_requests=len(requests),
        )
        wanted: dict[str, Request] = {}
        results: dict[str, Any] = {}
        start = 0.0
        try:
            with self.model.continuous_batching_context_manager(
                generation_config=generation,
                continuous_batching_config=cb,
                block=True,
                timeout=5,
                persistent_manager=True,
                workload_hints=hints,
            ) as manager:
                start = time.perf_counter()
                for i, request in enumerate(requests):
                    rid = manager.add_request(
                        list(request.prompt_token_ids),
                        request_id=f"r{i}",
                        max_new_tokens=request.output_tokens,
                        record_timestamps=True,
                        eos_token_id=-1,
                    )
                    if rid is not None:
                        wanted[rid] = request
                while len(results) < len(wanted) and time.perf_counter() < deadline:
                    result = manager.get_result(timeout=0.1)
                    if result is not None and result.is_finished():
                        results[result.request_id] = result
                    elif result is None and not manager.is_running():
                        break
        except self._torch.OutOfMemoryError as exc:
            raise EngineOutOfMemory(str(exc).splitlines()[0]) from exc
        if len(results) < len(wanted):
            # Cut at the deadline, or the manager stopped: its leftovers must not reach the
            # next run.
            self.model.destroy_cached_continuous_batching_manager()
        return _output(requests, wanted, results, start)

    def close(self) -> None:
        self.model.destroy_cached_continuous_batching_manager()
        del self.model
        self._release()


def _output(
    requests: Sequence[Request], wanted: dict[str, Request], results: dict[str, Any], start: float
) -> RunOutput:
    """Counts of what the manager returned: a request is complete when it generated its count.
    Latencies come from each token's timestamp (inter-token gaps for ITL)."""
    timings, itl, short = [], [], []
    input_tokens = output_tokens = 0
    for rid, result in results.items():
        request = wanted[rid]
        generated = min(len(result.generated_tokens), request.output_tokens)
        if result.error or generated < request.output_tokens:
            short.append(result.error or f"{generated} of {request.output_tokens} tokens")
            continue
        stamps = list(result.timestamps or [])
        if stamps:
            timings.append(RequestTiming(stamps[0] - start, stamps[-1] - start, generated))
            itl += [b - a for a, b in itertools.pairwise(stamps)]
        input_tokens += len(request.prompt_token_ids)
        output_tokens += generated
    dropped = len(requests) - len(wanted)
    failures = short + ([f"the manager refused {dropped} requests"] if dropped else [])
    return RunOutput(
        requests=len(results) - len(short),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        ttft_s=tuple(t.ttft_s for t in timings),
        itl_s=tuple(itl),
        e2e_s=tuple(t.e2e_s for t in timings),
        timings=tuple(timings),
        failed=len(short) + dropped,
        failures=tuple(dict.fromkeys(failures))[:3],
    )

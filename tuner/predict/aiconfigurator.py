"""NVIDIA AIConfigurator's performance model as a prior: the one module that imports it.

AIConfigurator (`aiconfigurator` + `aiconfigurator-core` 0.12.0, Apache-2.0; the `plan`
extra) predicts a vLLM configuration's TTFT and TPOT from per-GPU kernel measurements, with no
GPU and no network, and says when the model does not fit. Its programmatic entry point,
`aiconfigurator.cli.api.cli_estimate`, lives in a CLI distribution that says it is deprecated
in favour of `aisimulate` (which does not install offline); `estimate` below is the only call
into it, so that it can be replaced.

How tuner's knobs map onto its arguments (vLLM engines, `vllm` and `vllm-server`, and the
imported silicon tables):

- `tensor_parallel_size` -> `tp_size`, `pipeline_parallel_size` -> `pp_size`,
  `data_parallel_size` -> `attention_dp_size`; for a mixture-of-experts model,
  `enable_expert_parallel` -> `moe_ep_size` = tp x dp (else `moe_tp_size` = tp);
- the requests in flight -> `batch_size`: the server load's `concurrency` (every request at
  once where unset) or the offline engine's whole workload, at most `max_num_seqs`;
- `max_num_batched_tokens` -> `ctx_tokens`; `gpu_memory_utilization` ->
  `free_gpu_memory_fraction`; `kv_cache_dtype` fp8 -> `kvcache_quant_mode` fp8;
- the weights' precision (`precision` of a silicon table, `--precision` of `tuner plan`) ->
  `gemm_quant_mode` (fp8 -> fp8, fp4 -> nvfp4; the model's own where unset);
- the workload's mean prompt and output tokens -> `isl`, `osl`.

Every other knob (block size, prefix caching, eager mode, ...) is outside the model: its
prediction is the same whatever they are. The predicted run is built as the silicon tables'
runs are (`tuner.measure.measurement.alike_run`): each request takes TTFT + (OSL - 1) x TPOT,
in waves of `batch_size`. Models are the ones it ships configs for
(`aiconfigurator_core/model_configs`), or a local folder with a `config.json`: nothing is
downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.fmt import fmt_knobs
from tuner.measure.measurement import Measurement, Run, alike_run
from tuner.measure.trial import Prediction
from tuner.specs.knobs import Value, gpus_of

INSTALL = 'pip install -e ".[plan]"'
#: What tuner calls a GPU model -> AIConfigurator's system, the NVML name, tuner's slug.
SYSTEMS: dict[str, tuple[str, str, str]] = {
    "h100": ("h100_sxm", "NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
    "h200": ("h200_sxm", "NVIDIA H200", "nvidia-h200"),
    "b200": ("b200_sxm", "NVIDIA B200", "nvidia-b200"),
    "a100": ("a100_sxm", "NVIDIA A100-SXM4-80GB", "nvidia-a100-sxm4-80gb"),
    "l40s": ("l40s", "NVIDIA L40S", "nvidia-l40s"),
}
#: Hugging Face names that moved, as tables and users give them -> the name AIConfigurator
#: ships a config under.
MODEL_ALIASES = {
    "meta-llama/Llama-3.1-8B": "meta-llama/Meta-Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B": "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama/Llama-3.1-405B": "meta-llama/Meta-Llama-3.1-405B",
}
PRECISIONS = {"fp8": "fp8", "fp4": "nvfp4", "bf16": "bfloat16", "bfloat16": "bfloat16"}
#: The knobs the model reads (see the module's docstring).
COVERS = frozenset(
    {
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "enable_expert_parallel",
        "concurrency",
        "max_num_seqs",
        "max_num_batched_tokens",
        "gpu_memory_utilization",
        "kv_cache_dtype",
    }
)
VLLM_ENGINES = ("vllm", "vllm-server")
VLLM_MAX_NUM_SEQS = 256


def _api() -> Any:
    try:
        from aiconfigurator.cli import api
    except ImportError:
        raise TunerError(f"--prior aiconfigurator needs AIConfigurator: {INSTALL}") from None
    for name in ("aiconfigurator", "aiconfigurator_core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return api


def version() -> str:
    from importlib.metadata import version as installed

    return installed("aiconfigurator-core")


def system_for(gpu: str) -> str | None:
    """AIConfigurator's system for a GPU as tuner names it (`h100`, a profile's slug such as
    `nvidia-h100-80gb-hbm3`, an NVML name) or as it names it (`h100_sxm`); None if none."""
    text = gpu.lower().replace(" ", "-")
    for short, (system, name, slug) in SYSTEMS.items():
        if text in (short, system, slug, name.lower().replace(" ", "-")):
            return system
    for short, (system, _, _) in SYSTEMS.items():
        if short in text and not any(x in text for x in ("pcie", "nvl")):
            return system
    return None


def covered_gpus() -> str:
    return ", ".join(f"{s} ({n})" for s, (_, n, _) in SYSTEMS.items())


@lru_cache(maxsize=1)
def shipped_models() -> frozenset[str]:
    """The models AIConfigurator ships a config for and reads offline: its `DefaultHFModels`
    (it downloads the config of any other Hub name, even one whose file it ships, such as
    Mixtral-8x7B's; tuner downloads nothing)."""
    from importlib.resources import files

    from aiconfigurator_core.sdk.common import DefaultHFModels

    folder = files("aiconfigurator_core") / "model_configs"
    names = (p.name for p in folder.iterdir() if p.name.endswith("_config.json"))
    return frozenset(
        model
        for n in names
        if not n.endswith("_hf_quant_config.json")
        and (model := n.removesuffix("_config.json").replace("--", "/", 1)) in DefaultHFModels
    )


def model_for(ref: str, path: Path | None = None) -> str | None:
    """AIConfigurator's name for a model (a shipped config, through `MODEL_ALIASES`), or a
    local folder holding its `config.json`; None where it has none."""
    name = MODEL_ALIASES.get(ref, ref)
    by_lower = {m.lower(): m for m in shipped_models()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    for folder in (path, Path(ref)):
        if folder is not None and (folder / "config.json").is_file():
            return str(folder)
    return None


def _is_moe(model: str) -> bool:
    from importlib.resources import files

    local = Path(model) / "config.json"
    if local.is_file():
        text = local.read_text()
    else:
        shipped = files("aiconfigurator_core") / "model_configs"
        text = (shipped / (model.replace("/", "--", 1) + "_config.json")).read_text()
    config = json.loads(text)
    config = config.get("text_config", config)
    return any(k in config for k in ("num_local_experts", "n_routed_experts", "num_experts"))


@dataclass(frozen=True)
class Workload:
    """What the model needs of a workload: requests, mean prompt and output tokens."""

    requests: int
    isl: int
    osl: int


class AIConfiguratorPrior:
    """Predictions of AIConfigurator's vLLM model for one model on one GPU system."""

    covers = COVERS

    def __init__(
        self,
        model: str,
        system: str,
        engine: str,
        workload: Workload,
        *,
        precision: str | None = None,
        fixed: Mapping[str, Value] | None = None,
    ) -> None:
        self.model, self.system, self.engine, self.workload = model, system, engine, workload
        self.gemm = PRECISIONS.get(precision or "")
        self.fixed = dict(fixed or {})
        self.moe = _is_moe(model)
        self.api = _api()
        self.label = f"AIConfigurator {version()} (vLLM on {system}, {model})"
        self._seen: dict[str, Prediction | None] = {}
        #: The configurations the model refused to predict, and why (`_estimate`).
        self.refused: dict[str, str] = {}

    def arguments(self, knobs: Mapping[str, Value]) -> dict[str, Any]:
        """`cli_estimate`'s arguments for a configuration (see the module's docstring)."""
        k = {**self.fixed, **knobs}
        tp, dp = int(k.get("tensor_parallel_size", 1)), int(k.get("data_parallel_size", 1))
        in_flight = int(k.get("concurrency") or self.workload.requests)
        if self.engine == "vllm":
            in_flight = self.workload.requests
        if k.get("max_num_seqs") is not None or self.engine == "vllm":
            in_flight = min(in_flight, int(k.get("max_num_seqs") or VLLM_MAX_NUM_SEQS))
        args: dict[str, Any] = {
            "model_path": self.model,
            "system_name": self.system,
            "backend_name": "vllm",
            "isl": self.workload.isl,
            "osl": self.workload.osl,
            "batch_size": max(1, in_flight),
            "tp_size": tp,
            "pp_size": int(k.get("pipeline_parallel_size", 1)),
            "attention_dp_size": dp,
        }
        if k.get("max_num_batched_tokens"):
            args["ctx_tokens"] = int(k["max_num_batched_tokens"])  # type: ignore[arg-type]
        if k.get("gpu_memory_utilization"):
            args["free_gpu_memory_fraction"] = float(k["gpu_memory_utilization"])  # type: ignore[arg-type]
        if str(k.get("kv_cache_dtype", "auto")).startswith("fp8"):
            args["kvcache_quant_mode"] = "fp8"
        if self.gemm:
            args["gemm_quant_mode"] = self.gemm
        if self.moe:
            key = "moe_ep_size" if k.get("enable_expert_parallel") else "moe_tp_size"
            args[key] = tp * dp if key == "moe_ep_size" else tp
        return args

    def predict(self, knobs: Mapping[str, Value]) -> Prediction | None:
        args = self.arguments(knobs)
        key = json.dumps(args, sort_keys=True)
        if key not in self._seen:
            self._seen[key] = self._estimate(args, knobs)
        return self._seen[key]

    def _estimate(self, args: dict[str, Any], knobs: Mapping[str, Value]) -> Prediction | None:
        """The estimate for `args`; None where the model refuses the combination (a quantized
        MoE layer that does not split over this many GPUs, say), kept in `refused`."""
        try:
            result = estimate(self.api, args)
        except RuntimeError as exc:
            if str(exc).startswith("OOM"):
                return Prediction(by=self.label, status="oom", reason=str(exc).splitlines()[0])
            # Its kernel database lacks this combination (an MoE shape at this split, say).
            self.refused[fmt_knobs(dict(knobs))] = str(exc).strip()
            return None
        except (ValueError, KeyError) as exc:
            self.refused[fmt_knobs(dict(knobs))] = str(exc).strip()
            return None
        run = self._run(result, args, knobs)
        return Prediction(by=self.label, status="ok", measurement=Measurement.from_runs(run, [run]))

    def _run(self, result: Any, args: Mapping[str, Any], knobs: Mapping[str, Value]) -> Run:
        """An estimate's TTFT and TPOT as the run of the workload they amount to."""
        return alike_run(
            float(result.ttft),
            float(result.tpot),
            requests=self.workload.requests,
            isl=self.workload.isl,
            osl=self.workload.osl,
            concurrency=args["batch_size"],
            gpus=gpus_of({**self.fixed, **knobs}),
        )

    def with_speed_of_light(self, knobs: Mapping[str, Value], found: Prediction) -> Prediction:
        """`found` with the output tok/s of the same configuration at the speed of light
        (AIConfigurator's SOL database mode: every kernel at the hardware's peak)."""
        if found.status != "ok":
            return found
        args = {**self.arguments(knobs), "database_mode": "SOL"}
        try:
            bound = estimate(self.api, args)
        except (RuntimeError, ValueError, KeyError):
            return found
        sol = self._run(bound, args, knobs).output_tokens_per_s
        return found.model_copy(update={"speed_of_light_tokens_per_s": round(sol, 3)})


def estimate(api: Any, args: Mapping[str, Any]) -> Any:
    """One call of AIConfigurator's estimate, its chatter to stdout and stderr kept out."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return api.cli_estimate(**args)


def check_covered(engine: str, gpu: str) -> str:
    """AIConfigurator's system for `gpu`; one line when the engine or the GPU is not covered."""
    if engine not in VLLM_ENGINES:
        raise TunerError(
            f"AIConfigurator models vLLM ({', '.join(VLLM_ENGINES)}), not the {engine} engine"
        )
    system = system_for(gpu)
    if system is None:
        raise TunerError(
            f"AIConfigurator has no vLLM data for GPU {gpu!r}; it covers {covered_gpus()}"
        )
    return system


def prior_for(
    engine: str,
    model_ref: str,
    gpu: str,
    workload: Workload,
    *,
    model_path: Path | None = None,
    precision: str | None = None,
    fixed: Mapping[str, Value] | None = None,
) -> AIConfiguratorPrior:
    """The prior for a study or plan; one line naming what is covered when the engine, GPU or
    model is not."""
    system = check_covered(engine, gpu)
    _api()
    model = model_for(model_ref, model_path)
    if model is None:
        known = ", ".join(sorted(m for m in shipped_models() if "llama" in m.lower())[:6])
        raise TunerError(
            f"AIConfigurator has no config for model {model_ref!r} that it reads offline (and "
            f"it is no local folder with a config.json); it reads {len(shipped_models())}, e.g. "
            f"{known}"
        )
    return AIConfiguratorPrior(model, system, engine, workload, precision=precision, fixed=fixed)

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

Speed: `cli_estimate` resolves the latest database version on every call by parsing hundreds
of YAML files (about 1 s on 2 cores); `Estimator` resolves it once per system and passes it as
`backend_version`, so that a call takes about 10 ms once the database is loaded (AIConfigurator
keeps loaded databases). Its core is Python that holds the GIL: 30 estimates took 0.29 s one
after another and 0.36 s on 2 threads (2 cores), and its chatter is kept out by swapping the
process's stdout, which threads would interleave; so there are none.
Every answer (a figure pair, out of memory, or a refusal) is kept on disk under
`$TUNER_CACHE/aiconfigurator/` in a file per AIConfigurator version, database version and
system, keyed by the call's arguments: a plan asked again answers from the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.files import cache_root
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


#: config.json fields that set a model's compute and memory shape: a model whose fields agree
#: with a shipped config's on every one of them is predicted as that config (a renamed or
#: re-released checkpoint: Meta-Llama-3-8B as Meta-Llama-3.1-8B, whose only differences are
#: the context length and the RoPE scaling).
SHAPE_FIELDS = (
    "architectures",
    "model_type",
    "torch_dtype",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
    "num_local_experts",
    "num_experts",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "moe_intermediate_size",
    "quantization_config",
)


@dataclass(frozen=True)
class ModelMatch:
    """The model AIConfigurator is asked about, and how it was found for the given one."""

    name: str
    how: str | None = None  # None: the given model is itself shipped


def model_for(ref: str, path: Path | None = None) -> ModelMatch | None:
    """AIConfigurator's model for `ref`: a shipped config of that name (or of the name it
    moved to, `MODEL_ALIASES`); else, where the model's config.json can be read offline (`path`,
    a local folder, or the local Hugging Face cache), the shipped config with every
    `SHAPE_FIELDS` field identical, or that folder itself; None where there is no config."""
    name = MODEL_ALIASES.get(ref, ref)
    by_lower = {m.lower(): m for m in shipped_models()}
    if name.lower() in by_lower:
        return ModelMatch(by_lower[name.lower()])
    folder = next(
        (
            f
            for f in (path, Path(ref), _cached(ref))
            if f is not None and (f / "config.json").is_file()
        ),
        None,
    )
    if folder is None:
        return None
    shape = _shape(json.loads((folder / "config.json").read_text()))
    for shipped in sorted(shipped_models()):
        if _shape(_shipped_config(shipped)) == shape:
            return ModelMatch(
                shipped, f"{ref} as {shipped}: every shape field of its config is identical"
            )
    return ModelMatch(str(folder), f"{ref} from its config.json at {folder}")


def _shape(config: Mapping[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config", config)
    return {f: inner.get(f, config.get(f)) for f in SHAPE_FIELDS}


def _shipped_config(model: str) -> dict[str, Any]:
    from importlib.resources import files

    folder = files("aiconfigurator_core") / "model_configs"
    return json.loads((folder / (model.replace("/", "--", 1) + "_config.json")).read_text())


def _cached(ref: str) -> Path | None:
    """The local Hugging Face cache's copy of a Hub id, if there is one (nothing is fetched)."""
    if ref.count("/") != 1 or Path(ref).exists():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(ref, "config.json", cache_dir=os.environ.get("HF_HUB_CACHE"))
    return Path(found).parent if isinstance(found, str) else None


def _is_moe(model: str) -> bool:
    local = Path(model) / "config.json"
    config = json.loads(local.read_text()) if local.is_file() else _shipped_config(model)
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
        found: str | None = None,
    ) -> None:
        self.model, self.system, self.engine, self.workload = model, system, engine, workload
        self.gemm = PRECISIONS.get(precision or "")
        self.fixed = dict(fixed or {})
        self.moe = _is_moe(model)
        self.estimator = estimator(system)
        self.label = f"AIConfigurator {version()} (vLLM on {system}, {found or model})"
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
        found = self.estimator(args)
        if found.failure == "oom":
            return Prediction(by=self.label, status="oom", reason=found.reason)
        if found.failure is not None:
            # Its kernel database lacks this combination (an MoE shape at this split, say).
            self.refused[fmt_knobs(dict(knobs))] = found.reason
            return None
        run = self._run(found, args, knobs)
        return Prediction(by=self.label, status="ok", measurement=Measurement.from_runs(run, [run]))

    def _run(self, result: Estimate, args: Mapping[str, Any], knobs: Mapping[str, Value]) -> Run:
        """An estimate's TTFT and TPOT as the run of the workload they amount to."""
        return alike_run(
            result.ttft,
            result.tpot,
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
        bound = self.estimator(args)
        if bound.failure is not None:
            return found
        sol = self._run(bound, args, knobs).output_tokens_per_s
        return found.model_copy(update={"speed_of_light_tokens_per_s": round(sol, 3)})


@dataclass(frozen=True)
class Estimate:
    """One answer of the model: TTFT and TPOT in ms, or why there is none (`oom`: does not
    fit; `refused`: its database lacks the combination)."""

    ttft: float = 0.0
    tpot: float = 0.0
    failure: str | None = None
    reason: str = ""


@cache
def database_version(system: str) -> str:
    """The newest vLLM database AIConfigurator has for `system` (what `cli_estimate` resolves
    on each call when not told)."""
    from aiconfigurator_core.sdk.perf_database import get_latest_database_version

    found = get_latest_database_version(system=system, backend="vllm")
    if found is None:
        raise TunerError(f"AIConfigurator has no vLLM database for system {system}")
    return str(found)


class Estimator:
    """AIConfigurator's estimates for one system, kept in memory and on disk (see the module's
    docstring); `calls` counts those that reached the model."""

    def __init__(self, system: str, cache: Path | None = None) -> None:
        self.api = _api()
        self.system = system
        self.version = database_version(system)
        self.path = cache or (
            cache_root() / "aiconfigurator" / f"{version()}-vllm{self.version}-{system}.jsonl"
        )
        self.calls = 0
        self._known: dict[str, Estimate] = {}
        self._torn = False
        self._read()

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        self._torn = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:  # a torn last line (a process stopped mid-write) is skipped
                entry = json.loads(line)
                self._known[entry["key"]] = Estimate(**entry["estimate"])
            except (ValueError, KeyError, TypeError):
                continue

    def _keep(self, key: str, found: Estimate) -> None:
        self._known[key] = found
        line = json.dumps({"key": key, "estimate": found.__dict__}, sort_keys=True) + "\n"
        if self._torn:  # the torn line ends here, and the new one starts afresh
            line, self._torn = "\n" + line, False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError:
            pass  # a cache that cannot be written costs time, not answers

    def __call__(self, args: Mapping[str, Any]) -> Estimate:
        key = _cache_key(args)
        if key not in self._known:
            self._keep(key, self._ask(args))
        return self._known[key]

    def _ask(self, args: Mapping[str, Any]) -> Estimate:
        self.calls += 1
        try:
            result = estimate(self.api, {**args, "backend_version": self.version})
        except RuntimeError as exc:
            first = str(exc).strip()
            if first.startswith("OOM"):
                return Estimate(failure="oom", reason=first.splitlines()[0])
            return Estimate(failure="refused", reason=first)
        except (ValueError, KeyError) as exc:
            return Estimate(failure="refused", reason=str(exc).strip())
        return Estimate(ttft=float(result.ttft), tpot=float(result.tpot))


def _cache_key(args: Mapping[str, Any]) -> str:
    """The arguments as a key; a local model folder adds its config's digest (the folder's
    name says nothing of what is in it)."""
    keyed = dict(args)
    config = Path(str(args.get("model_path", ""))) / "config.json"
    if os.sep in str(args.get("model_path", "")) and config.is_file():
        keyed["model_config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest()
    return json.dumps(keyed, sort_keys=True, default=str)


@cache
def estimator(system: str) -> Estimator:
    """The process's estimator for `system` (its database is loaded once)."""
    return Estimator(system)


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
            f"AIConfigurator has no config for model {model_ref!r} that it reads offline, and "
            "its config.json is in no local folder and not in the local Hugging Face cache; it "
            f"reads {len(shipped_models())}, e.g. {known}"
        )
    return AIConfiguratorPrior(
        model.name, system, engine, workload, precision=precision, fixed=fixed, found=model.how
    )

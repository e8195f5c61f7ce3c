"""The `hf` engine: transformers `model.generate` on left-padded batches."""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines import load_catalogue
from tuner.engines.base import EngineBase, EngineOutOfMemory, RunOutput
from tuner.errors import TunerError
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.workloads import Request


def transformers_versions() -> dict[str, str]:
    """Versions of the libraries the transformers engines run on."""
    import accelerate
    import torch
    import transformers

    versions = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
    }
    if torch.version.cuda:
        versions["torch_cuda"] = torch.version.cuda
    return versions


def device_map(knobs: Mapping[str, Value]) -> dict[str, Any]:
    """from_pretrained arguments placing the model on the GPUs the knobs ask for, or the CPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    gpus = int(knobs.get("num_gpus", 1))
    if gpus <= 1:
        return {"device_map": {"": 0}}
    total = {i: torch.cuda.get_device_properties(i).total_memory for i in range(gpus)}
    return {"device_map": "balanced", "max_memory": total}


def check_architecture(config: Mapping[str, Any]) -> None:
    """One line when transformers does not ship the `model_type` of a model's config (it would
    need the folder's own code, which tuner never runs)."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise TunerError(
            f"transformers {transformers.__version__} has no model type {model_type!r}; tuner "
            "does not run a model folder's own code"
        )


def load_causal_lm(model_dir: Path, knobs: Mapping[str, Value]) -> Any:
    """`AutoModelForCausalLM.from_pretrained` with the knobs' dtype, attention and placement,
    in eval mode; running out of memory is `EngineOutOfMemory`."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            trust_remote_code=False,  # a model folder's own code never runs
            dtype=getattr(torch, str(knobs.get("dtype", "float32"))),
            attn_implementation=str(knobs.get("attn_implementation", "sdpa")),
            **device_map(knobs),
        )
    except torch.OutOfMemoryError as exc:
        raise EngineOutOfMemory(str(exc)) from exc
    return model.eval()


@dataclass(frozen=True)
class _Batch:
    input_ids: Any
    attention_mask: Any
    new_tokens: int
    wanted: Any
    input_tokens: int


class TransformersEngine(EngineBase):
    """What the transformers adapters share: catalogue file, versions, releasing memory. A
    `torch.OutOfMemoryError` is out-of-memory by `EngineBase.is_oom`."""

    name: ClassVar[str]
    _torch: Any

    @classmethod
    def catalogue(cls) -> Catalogue:
        return load_catalogue(cls.name)

    @classmethod
    def versions(cls) -> dict[str, str]:
        return transformers_versions()

    @classmethod
    def check_model(cls, config: Mapping[str, Any]) -> None:
        """One line unless transformers itself knows the model's architecture."""
        check_architecture(config)

    def torch_model(self) -> Any:
        raise NotImplementedError

    def gpu_indices(self) -> list[int]:
        """CUDA ordinals holding the model's weights."""
        devices = {p.device for p in self.torch_model().parameters()}
        return sorted(d.index or 0 for d in devices if d.type == "cuda")

    def _release(self) -> None:
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


class GenerateEngine(TransformersEngine):
    """transformers `AutoModelForCausalLM.generate` with fixed output lengths."""

    name: ClassVar[str] = "hf"

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        import torch

        self._torch = torch
        self.model = load_causal_lm(model_dir, knobs)
        config = self.model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else []
        self.eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], dtype=torch.long)
        pad = config.pad_token_id
        if pad is None:
            pad = self.model.config.pad_token_id
        if pad is None:
            pad = int(self.eos_ids[0]) if len(self.eos_ids) else 0
        self.pad_id = int(pad)
        self.compile = bool(knobs.get("torch_compile", False))

    def torch_model(self) -> Any:
        return self.model

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        torch = self._torch
        batch_size = int(knobs["batch_size"])
        cache = str(knobs.get("cache_implementation", "dynamic"))
        batches = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            width = max(len(r.prompt_token_ids) for r in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, req in enumerate(chunk):
                n = len(req.prompt_token_ids)
                ids[row, width - n :] = torch.tensor(req.prompt_token_ids, dtype=torch.long)
                mask[row, width - n :] = 1
            batches.append(
                _Batch(
                    input_ids=ids.to(self.model.device),
                    attention_mask=mask.to(self.model.device),
                    new_tokens=max(r.output_tokens for r in chunk),
                    wanted=torch.tensor([r.output_tokens for r in chunk]),
                    input_tokens=sum(len(r.prompt_token_ids) for r in chunk),
                )
            )
        kwargs: dict[str, Any] = {
            "do_sample": False,
            "cache_implementation": cache,
            "pad_token_id": self.pad_id,
        }
        if self.compile:
            from transformers import CompileConfig

            kwargs["compile_config"] = CompileConfig()
        else:
            kwargs["disable_compile"] = True
        return batches, kwargs

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        torch = self._torch
        batches, kwargs = prepared
        requests = input_tokens = output_tokens = 0
        with torch.inference_mode():
            for batch in batches:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    out = self.model.generate(
                        input_ids=batch.input_ids,
                        attention_mask=batch.attention_mask,
                        max_new_tokens=batch.new_tokens,
                        min_new_tokens=batch.new_tokens,
                        max_time=remaining,
                        **kwargs,
                    )
                except torch.OutOfMemoryError as exc:
                    raise EngineOutOfMemory(str(exc).splitlines()[0]) from exc
                counts = count_new_tokens(out[:, batch.input_ids.shape[1] :].cpu(), self.eos_ids)
                counts = torch.minimum(counts, batch.wanted)
                requests += int((counts >= batch.wanted).sum())
                output_tokens += int(counts.sum())
                input_tokens += batch.input_tokens
        return RunOutput(requests=requests, input_tokens=input_tokens, output_tokens=output_tokens)

    def close(self) -> None:
        del self.model
        self._release()


def count_new_tokens(new: Any, eos_ids: Any) -> Any:
    """Per row, the generated tokens up to and including the first end-of-sequence token."""
    import torch

    length = new.shape[1]
    if length == 0 or len(eos_ids) == 0:
        return torch.full((new.shape[0],), length, dtype=torch.long)
    is_eos = torch.isin(new, eos_ids)
    first = is_eos.int().argmax(dim=1) + 1
    return torch.where(is_eos.any(dim=1), first, torch.full_like(first, length))

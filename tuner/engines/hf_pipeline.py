"""The `hf-pipeline` engine: transformers `pipeline("text-generation")` with its batch_size."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines.base import EngineOutOfMemory, RunOutput
from tuner.engines.hf import TransformersEngine, count_new_tokens
from tuner.specs.knobs import Value
from tuner.specs.workloads import Request


class PipelineEngine(TransformersEngine):
    """The text-generation pipeline, fed prompt text in chunks of its batch size."""

    name: ClassVar[str] = "hf-pipeline"

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        import torch
        from transformers import pipeline

        self._torch = torch
        try:
            self.pipe = pipeline(
                "text-generation",
                model=str(model_dir),
                trust_remote_code=False,
                dtype=getattr(torch, str(knobs.get("dtype", "float32"))),
                device="cuda:0" if torch.cuda.is_available() else "cpu",
            )
        except torch.OutOfMemoryError as exc:
            raise EngineOutOfMemory(str(exc)) from exc
        tokenizer = self.pipe.tokenizer
        assert tokenizer is not None  # a text-generation pipeline has one
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = self.pipe.model.generation_config.eos_token_id
        eos = [] if eos is None else eos
        self.eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], dtype=torch.long)

    def torch_model(self) -> Any:
        return self.pipe.model

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        batch_size = int(knobs["batch_size"])
        chunks = []
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            # The pipeline tokenizes again; its own preprocessing gives the lengths it pads to.
            lengths = [self.pipe.preprocess(r.prompt)["input_ids"].shape[-1] for r in chunk]
            chunks.append(
                (
                    [r.prompt for r in chunk],
                    max(lengths),
                    sum(lengths),
                    [r.output_tokens for r in chunk],
                )
            )
        return batch_size, chunks

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        torch = self._torch
        batch_size, chunks = prepared
        requests = input_tokens = output_tokens = 0
        for texts, width, chunk_input_tokens, wanted in chunks:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            new_tokens = max(wanted)
            try:
                outs = self.pipe(
                    texts,
                    batch_size=batch_size,
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    max_time=remaining,
                    return_tensors=True,
                )
            except torch.OutOfMemoryError as exc:
                raise EngineOutOfMemory(str(exc).splitlines()[0]) from exc
            for out, want in zip(outs, wanted, strict=True):
                sequence = torch.tensor(out[0]["generated_token_ids"], dtype=torch.long)
                count = min(int(count_new_tokens(sequence[None, width:], self.eos_ids)[0]), want)
                requests += count >= want
                output_tokens += count
            input_tokens += chunk_input_tokens
        return RunOutput(requests=requests, input_tokens=input_tokens, output_tokens=output_tokens)

    def close(self) -> None:
        del self.pipe
        self._release()

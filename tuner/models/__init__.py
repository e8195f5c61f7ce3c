"""Where a model comes from: a local folder, the local Hugging Face cache, or `synthetic:<name>`.

tuner never downloads a model. A Hub id is looked up in the local cache only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tuner.errors import TunerError
from tuner.hardware.machine import slugify

SYNTHETIC_PREFIX = "synthetic:"
#: The model of the embedded default job, where no model is given.
DEFAULT_MODEL = f"{SYNTHETIC_PREFIX}tiny-llama"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelRef:
    """A model resolved to a folder that transformers (and vLLM) can load."""

    ref: str
    path: Path
    slug: str
    source: Literal["synthetic", "local", "hf-cache", "replay"]


def resolve_model(ref: str, *, build: bool = True) -> ModelRef:
    """Finds the model named by `ref`, building a synthetic one on first use.

    Raises:
        TunerError: the model is not there; the message says where tuner looked.
    """
    ref = ref.strip()
    if ref.startswith(SYNTHETIC_PREFIX):
        from tuner.models import synthetic

        name = ref.removeprefix(SYNTHETIC_PREFIX)
        path = synthetic.ensure(name) if build else synthetic.path_for(name)
        return ModelRef(ref, path, slugify(f"synthetic-{name}"), "synthetic")
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TunerError(f"{path} is not a Hugging Face model folder: it has no config.json")
        read_config(path)
        return ModelRef(ref, path.resolve(), slugify(path.resolve().name), "local")
    if _HUB_ID.match(ref):
        org, name = ref.split("/")
        cached = _from_hf_cache(ref)
        read_config(cached)
        return ModelRef(ref, cached, f"{slugify(org)}--{slugify(name)}", "hf-cache")
    raise TunerError(
        f"model {ref!r} not found: no such folder, and not a Hub id (org/name) or synthetic:<name>"
    )


def _from_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise TunerError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({HF_HUB_CACHE}); "
            f"tuner does not download models: fetch it first (hf download {repo_id}) "
            f"or pass a local folder"
        ) from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise TunerError(f"the cached copy of {repo_id!r} at {path} has no config.json")
    return path


#: config.json fields tuner reads, or that engines size buffers by: positive integers where given.
_COUNTS = (
    "max_position_embeddings",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "hidden_size",
    "vocab_size",
)


def _json_object(file: Path) -> dict[str, Any]:
    """A JSON object from a file; one line when it is not one (unreadable, not UTF-8, ...)."""
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise TunerError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TunerError(f"{file} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise TunerError(f"{file}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise TunerError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def read_config(path: Path) -> dict[str, Any]:
    """A model folder's `config.json`, checked: a JSON object naming its `model_type`, its sizes
    positive integers, and no code of its own to run (an `auto_map` in it or in
    `tokenizer_config.json`: tuner never runs a model folder's code). One line otherwise."""
    file = path / "config.json"
    config = _json_object(file)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise TunerError(f"{file} names no model_type, so no engine knows how to load it")
    text = config.get("text_config") or {}
    if not isinstance(text, dict):
        raise TunerError(f"{file}: text_config is not a JSON object")
    for scope in (config, text):
        for key in _COUNTS:
            value = scope.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise TunerError(f"{file}: {key} is {json.dumps(value)}, not a positive integer")
    for name in ("config.json", "tokenizer_config.json"):
        data = config if name == "config.json" else _optional_json(path / name)
        if isinstance(data.get("auto_map"), dict) and data["auto_map"]:
            files = sorted({str(v).split(".")[0] + ".py" for v in _flat(data["auto_map"])})
            raise TunerError(
                f"{path} needs code of its own ({name} maps classes to {', '.join(files)}); "
                "tuner never runs a model folder's code (trust_remote_code stays off)"
            )
    return config


def _optional_json(file: Path) -> dict[str, Any]:
    return _json_object(file) if file.is_file() else {}


def _flat(mapping: dict[str, Any]) -> list[str]:
    """The class paths of an `auto_map` (a value may be a list: a tokenizer's slow and fast)."""
    found: list[str] = []
    for value in mapping.values():
        values = value if isinstance(value, list) else [value]
        found += [v.split("--")[-1] for v in values if isinstance(v, str)]
    return found


def model_facts(path: Path) -> dict[str, float]:
    """Numbers from a model's config.json that knob bounds and rules may name:
    `model_max_len`, `num_attention_heads`, `num_key_value_heads`, `num_hidden_layers`."""
    config = read_config(path)
    config = config.get("text_config") or config
    facts: dict[str, float] = {}
    for fact, key in (
        ("model_max_len", "max_position_embeddings"),
        ("num_attention_heads", "num_attention_heads"),
        ("num_key_value_heads", "num_key_value_heads"),
        ("num_hidden_layers", "num_hidden_layers"),
    ):
        if isinstance(config.get(key), int):
            facts[fact] = config[key]
    return facts

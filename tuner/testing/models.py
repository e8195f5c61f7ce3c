"""A model folder with a tokenizer and a config but no weights."""

from __future__ import annotations

import json
from pathlib import Path

#: A chat template of the ChatML form (Qwen's and many others'), for chat workloads.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def fake_model_dir(path: Path, chat_template: str | None = None) -> Path:
    """Writes a weightless model folder (config.json and a small trained tokenizer.json; with
    `chat_template`, a tokenizer_config.json that holds it)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|eos|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(["def add(a, b):\n    return a + b\n"] * 4, trainer)
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "config.json").write_text(json.dumps({"model_type": "fake", "vocab_size": 300}))
    if chat_template is not None:
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": chat_template}
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path

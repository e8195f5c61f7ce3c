from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.specs.workloads import Tokenizer, build_requests, load_workload, summarize


@pytest.fixture(scope="module")
def tokenizer(fake_model: Path) -> Tokenizer:
    return Tokenizer(fake_model)


def test_humaneval_is_the_164_shipped_prompts(tokenizer: Tokenizer) -> None:
    spec = load_workload("humaneval")
    requests = build_requests(spec, tokenizer)
    assert len(requests) == 164
    assert all(r.output_tokens == 128 for r in requests)
    assert requests[0].prompt.startswith("from typing import List")
    assert requests[0].prompt_token_ids == tuple(tokenizer.encode(requests[0].prompt))
    first = build_requests(load_workload("humaneval", requests=5, output_tokens=16), tokenizer)
    assert [r.prompt for r in first] == [r.prompt for r in requests[:5]]
    assert {r.output_tokens for r in first} == {16}


def test_synthetic_lengths_and_seed(tokenizer: Tokenizer, tmp_path: Path) -> None:
    spec = load_workload("synthetic", requests=10, output_tokens=7)
    a, b = build_requests(spec, tokenizer), build_requests(spec, tokenizer)
    assert a == b
    assert all(len(r.prompt_token_ids) == 128 and r.output_tokens == 7 for r in a)
    assert not set().union(*(r.prompt_token_ids for r in a)) & tokenizer.special_ids
    custom = tmp_path / "mine.yaml"
    custom.write_text(
        "name: mine\nsource: synthetic\nrequests: 200\nseed: 3\n"
        "input_tokens: {distribution: uniform, min: 10, max: 20}\n"
        "output_tokens: {distribution: normal, mean: 50, std: 10, min: 40, max: 60}\n"
    )
    requests = build_requests(load_workload(str(custom)), tokenizer)
    lengths = [len(r.prompt_token_ids) for r in requests]
    outs = [r.output_tokens for r in requests]
    assert min(lengths) == 10 and max(lengths) == 20
    assert min(outs) >= 40 and max(outs) <= 60 and len(set(outs)) > 5
    stats = summarize(requests)
    assert stats["requests"] == 200 and stats["input_tokens"] == sum(lengths)


def test_jsonl_prompts(tokenizer: Tokenizer, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"prompt": "def f():"})
        + "\n\n"
        + json.dumps({"prompt": "x = 1", "output_tokens": 5})
        + "\n"
    )
    requests = build_requests(load_workload(f"jsonl:{path}", output_tokens=9), tokenizer)
    assert [(r.prompt, r.output_tokens) for r in requests] == [("def f():", 9), ("x = 1", 5)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n{"prompt": \n', r"p.jsonl line 2: not valid JSON"),
        ('["a"]\n', r'p.jsonl line 1: expected an object with a "prompt" string'),
        ('{"prompt": "a", "max_tokens": 3}\n', r"line 1: unknown field 'max_tokens'"),
        (
            '{"prompt": "a", "output_tokens": 0}\n',
            r"line 1: output_tokens must be an integer from 1 to",
        ),
        ("\n", r"holds no prompts"),
    ],
)
def test_malformed_jsonl(tokenizer: Tokenizer, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(TunerError, match=message):
        build_requests(load_workload(f"jsonl:{path}"), tokenizer)


def test_bad_workload_references(tokenizer: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="unknown workload 'nope'; known: humaneval, synthetic"):
        load_workload("nope")
    with pytest.raises(TunerError, match="does not exist"):
        load_workload(f"jsonl:{tmp_path / 'missing.jsonl'}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: synthetic\nrequests: 3\n")
    with pytest.raises(TunerError, match="needs requests and input_tokens"):
        load_workload(str(bad))
    bad.write_text("name: x\nsource: humaneval\nprompts: 3\n")
    with pytest.raises(TunerError, match="prompts: Extra inputs are not permitted"):
        load_workload(str(bad))
    with pytest.raises(TunerError, match="has 164 prompts; cannot take 500"):
        build_requests(load_workload("humaneval", requests=500), tokenizer)

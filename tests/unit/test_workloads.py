from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.specs.workloads import (
    Tokenizer,
    build_requests,
    load_workload,
    request_count,
    summarize,
)
from tuner.testing.models import CHATML_TEMPLATE, fake_model_dir


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
    with pytest.raises(TunerError, match=message):
        build_from(tokenizer, tmp_path / "p.jsonl", "jsonl", content)


def build_from(tokenizer: Tokenizer, path: Path, source: str, content: str) -> None:
    """A workload file of `content`, read as `source:path` and built."""
    path.write_text(content)
    build_requests(load_workload(f"{source}:{path}"), tokenizer)


def test_bad_workload_references(tokenizer: Tokenizer, tmp_path: Path) -> None:
    with pytest.raises(
        TunerError, match="unknown workload 'nope'; known: humaneval, shared-prefix, synthetic"
    ):
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


def test_a_shared_prefix_workload_starts_each_request_with_one_of_its_prefixes(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    spec = load_workload("shared-prefix", requests=12)
    requests = build_requests(spec, tokenizer)
    assert build_requests(spec, tokenizer) == requests  # seeded
    assert all(len(r.prompt_token_ids) == 512 + 64 and r.output_tokens == 64 for r in requests)
    prefixes = [r.prompt_token_ids[:512] for r in requests]
    assert len(set(prefixes)) == 4
    assert all(prefixes[i] == prefixes[i % 4] for i in range(12))  # in turn
    assert len({r.prompt_token_ids[512:] for r in requests}) == 12  # each its own suffix
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: synthetic\nrequests: 3\ninput_tokens: 4\nprefixes: 2\n")
    with pytest.raises(TunerError, match="prefixes and prefix_tokens go together"):
        load_workload(str(bad))
    bad.write_text("name: x\nsource: humaneval\nprefixes: 2\nprefix_tokens: 8\n")
    with pytest.raises(TunerError, match="shared prefixes are for synthetic workloads"):
        load_workload(str(bad))


def sharegpt(*entries: object) -> str:
    return json.dumps(list(entries))


def turn(who: str, text: str) -> dict[str, str]:
    return {"from": who, "value": text}


def test_sharegpt_conversations_give_the_prompt_and_the_replys_length(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    path = tmp_path / "chats.json"
    path.write_text(
        sharegpt(
            {"id": "a", "conversations": [turn("human", "hello there"), turn("gpt", "hi " * 9)]},
            {"id": "b", "conversations": [turn("human", "only one turn")]},  # skipped, as vLLM
            {
                "id": "c",
                "conversations": [turn("human", "x = 1"), turn("gpt", "ok"), turn("human", "more")],
            },
        )
    )
    spec = load_workload(f"sharegpt:{path}")
    assert spec.source == "sharegpt" and spec.name == "chats"
    requests = build_requests(spec, tokenizer)
    assert [r.prompt for r in requests] == ["hello there", "x = 1"]
    assert requests[0].output_tokens == len(tokenizer.encode("hi " * 9))
    assert requests[1].output_tokens == max(1, len(tokenizer.encode("ok")))
    assert build_requests(load_workload(f"sharegpt:{path}", requests=1), tokenizer) == requests[:1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{]", r"chats.json: not valid JSON"),
        ('{"conversations": []}', r"expected a JSON list of conversations"),
        (
            '[{"conversations": []}, {"turns": []}]',
            r"chats.json entry 2: expected an object with a \"conversations\" list",
        ),
        (
            '[{"conversations": [{"from": "human", "value": 3}, {"value": "b"}]}]',
            r"entry 1, turn 1: expected an object with a \"value\" string",
        ),
        (
            '[{"conversations": [{"from": "human", "value": "a"}]}]',
            r"holds no conversation of two turns or more",
        ),
    ],
)
def test_malformed_sharegpt(
    tokenizer: Tokenizer, tmp_path: Path, content: str, message: str
) -> None:
    with pytest.raises(TunerError, match=message):
        build_from(tokenizer, tmp_path / "chats.json", "sharegpt", content)


def test_chat_requests_are_rendered_with_the_models_chat_template(tmp_path: Path) -> None:
    chat = Tokenizer(fake_model_dir(tmp_path / "model", chat_template=CHATML_TEMPLATE))
    path = tmp_path / "requests.jsonl"
    system = {"role": "system", "content": "Be brief."}
    path.write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"messages": [system, {"role": "user", "content": "2 + 2?"}], "max_tokens": 7},
                {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
                {  # the OpenAI Batch API's form: the request in "body"
                    "custom_id": "c",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "m",
                        "messages": [{"role": "user", "content": "x"}],
                        "max_completion_tokens": 3,
                    },
                },
            )
        )
    )
    spec = load_workload(f"chat:{path}", output_tokens=16)
    assert spec.source == "chat" and spec.name == "requests"
    requests = build_requests(spec, chat)
    assert requests[0].prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert requests[1].prompt.startswith("<|im_start|>user\nhi<|im_end|>")
    assert [r.output_tokens for r in requests] == [7, 16, 3]
    # The template's text, tokenized without the tokenizer's own special tokens.
    assert list(requests[0].prompt_token_ids) == chat.encode(requests[0].prompt, special=False)
    assert request_count(spec) == 3


def test_a_chat_workload_on_a_model_without_a_chat_template_is_one_line(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    with pytest.raises(TunerError, match=r"has no chat template .*: a chat workload needs one"):
        build_from(
            tokenizer,
            tmp_path / "c.jsonl",
            "chat",
            '{"messages": [{"role": "user", "content": "a"}]}',
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", r"c.jsonl line 1: not valid JSON"),
        ('{"messages": []}\n', r"c.jsonl line 1: expected a \"messages\" list"),
        ("\n[1]", r"c.jsonl line 2: expected a JSON object"),
        ('{"messages": [{"role": "user"}]}', r"line 1: message 1: expected a \"role\" and a"),
        (
            '{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
            r"line 1: message 1: content parts must be text parts",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}], "max_tokens": 0}',
            r"line 1: max_tokens must be an integer from 1",
        ),
        ("\n\n", r"c.jsonl holds no chat requests"),
    ],
)
def test_malformed_chat_requests(tmp_path: Path, content: str, message: str) -> None:
    chat = Tokenizer(fake_model_dir(tmp_path / "model", chat_template=CHATML_TEMPLATE))
    with pytest.raises(TunerError, match=message):
        build_from(chat, tmp_path / "c.jsonl", "chat", content)


AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:47.1805900,879,2
"""
BURSTGPT = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
118,GPT-4,417,276,693,Conversation log
"""
MOONCAKE = "\n".join(
    json.dumps(r)
    for r in (
        {"timestamp": 0, "input_length": 1100, "output_length": 12, "hash_ids": [0, 1, 2]},
        {"timestamp": 1500, "input_length": 1200, "output_length": 30, "hash_ids": [0, 1, 7]},
    )
)


@pytest.mark.parametrize(
    ("name", "content", "arrivals", "lengths"),
    [
        ("azure.csv", AZURE, [0.0, 0.5, 4.3145790], [(374, 44), (879, 2), (396, 109)]),
        ("burstgpt.csv", BURSTGPT, [0.0, 113.0], [(472, 18), (417, 276)]),  # no reply: skipped
        ("mooncake.jsonl", MOONCAKE, [0.0, 1.5], [(1100, 12), (1200, 30)]),
    ],
)
def test_a_trace_gives_each_request_its_lengths_and_arrival(
    tokenizer: Tokenizer,
    tmp_path: Path,
    name: str,
    content: str,
    arrivals: list[float],
    lengths: list[tuple[int, int]],
) -> None:
    path = tmp_path / name
    path.write_text(content)
    spec = load_workload(f"trace:{path}")
    assert spec.source == "trace" and request_count(spec) == len(lengths)
    requests = build_requests(spec, tokenizer)
    assert [(len(r.prompt_token_ids), r.output_tokens) for r in requests] == lengths
    assert [r.arrival_s for r in requests] == pytest.approx(arrivals)
    assert build_requests(spec, tokenizer) == requests  # seeded


def test_a_traces_block_hashes_are_shared_prefixes_and_its_time_scales(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    trace = tmp_path / "mooncake.jsonl"
    trace.write_text(MOONCAKE)
    first, second = build_requests(load_workload(f"trace:{trace}"), tokenizer)
    assert first.prompt_token_ids[:1024] == second.prompt_token_ids[:1024]  # blocks 0 and 1
    assert first.prompt_token_ids[1024:1100] != second.prompt_token_ids[1024:1100]
    faster = tmp_path / "faster.yaml"
    faster.write_text(f"name: faster\nsource: trace\npath: {trace}\ntime_scale: 0.5\n")
    assert [r.arrival_s for r in build_requests(load_workload(str(faster)), tokenizer)] == [
        0.0,
        pytest.approx(0.75),
    ]
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: w\nsource: synthetic\nrequests: 2\ninput_tokens: 4\ntime_scale: 2\n")
    with pytest.raises(TunerError, match="time_scale is for traces"):
        load_workload(str(wrong))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.csv", "when,in,out\n1,2,3\n", r"t.csv: a trace needs an arrival time \(TIMESTAMP"),
        (
            "t.csv",
            "Timestamp,Request tokens,Response tokens\n1,2,3\nx,2,3\n",
            r"t.csv row 3: Timestamp 'x' is not a number",
        ),
        (
            "t.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,2,3\n",
            r"row 2: TIMESTAMP 'yesterday' is not a date and time",
        ),
        (
            "t.csv",
            "Timestamp,Request tokens,Response tokens\n1,0,3\n",
            r"row 2: Request tokens 0 is outside 1 to",
        ),
        (
            "t.jsonl",
            '{"arrival_s": 0, "input_tokens": 4, "output_tokens": 2}\n\n{"arrival_s": 1,',
            r"t.jsonl row 3: not valid JSON",
        ),
        (
            "t.jsonl",
            '{"arrival_s": 0, "input_tokens": 4.5, "output_tokens": 2}\n',
            r"row 1: input_tokens 4.5 is not a whole number of tokens",
        ),
        (
            "t.jsonl",
            '{"timestamp": 0, "input_length": 4, "output_length": 2, "hash_ids": "x"}\n',
            r"row 1: hash_ids is not a list of block hashes",
        ),
        (
            "t.csv",
            "Timestamp,Request tokens,Response tokens\n1,5,0\n",
            r"holds no request that generated a token",
        ),
    ],
)
def test_malformed_traces_are_one_line_naming_the_row(
    tokenizer: Tokenizer, tmp_path: Path, name: str, content: str, message: str
) -> None:
    with pytest.raises(TunerError, match=message):
        build_from(tokenizer, tmp_path / name, "trace", content)


def test_the_load_client_sends_a_trace_at_its_arrivals_scaled_to_a_rate_it_is_given(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    from tuner.engines.openai_client import LoadClient
    from tuner.engines.server import DIALECTS

    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "\n".join(
            json.dumps({"arrival_s": t, "input_tokens": 4, "output_tokens": 2})
            for t in (10.0, 10.5, 12.0)
        )
    )
    requests = build_requests(load_workload(f"trace:{trace}"), tokenizer)
    client = LoadClient("http://127.0.0.1:1", "m", next(iter(DIALECTS.values())))
    assert client.prepare(requests).gaps == pytest.approx([0.0, 0.5, 1.5])
    # 2 gaps in 2 s: a mean of 1 request/s; at 100 requests/s the same bursts, 100x faster.
    assert client.prepare(requests, request_rate=100.0).gaps == pytest.approx([0, 0.005, 0.015])
    assert client.prepare(requests, request_rate=math.inf).gaps == [0.0] * 3
    synthetic = build_requests(load_workload("synthetic", requests=3), tokenizer)
    assert client.prepare(synthetic).gaps == [0.0] * 3
    poisson = client.prepare(synthetic, request_rate=100.0).gaps
    assert len(set(poisson)) == 3 and all(g > 0 for g in poisson)


def test_time_scale_from_the_command_line(tokenizer: Tokenizer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tuner.cli.app import app

    trace = tmp_path / "mooncake.jsonl"
    trace.write_text(MOONCAKE)
    slower = build_requests(load_workload(f"trace:{trace}", time_scale=2.0), tokenizer)
    assert [r.arrival_s for r in slower] == [0.0, pytest.approx(3.0)]
    args = ["bench", "--engine", "hf", "--model", "synthetic:tiny-llama", "--time-scale", "2"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "time_scale is for traces" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_traffic_gives_lengths_prefix_sharing_and_arrivals(
    tokenizer: Tokenizer, tmp_path: Path
) -> None:
    from tuner.specs.workloads import traffic

    shared = build_requests(load_workload("shared-prefix", requests=8), tokenizer)
    found = traffic(shared)
    # 8 requests over 4 prefixes of 512 tokens, 64 of their own: the last 4 find theirs.
    assert found["shared_prefix_share"] == pytest.approx(4 * 512 / (8 * 576), abs=0.001)
    assert found["input_tokens"] == {"p10": 576, "p50": 576, "p90": 576, "max": 576}
    assert found["arrivals"] == {"kind": "at once", "rate_per_s": None, "gap_cv": None}
    plain = traffic(build_requests(load_workload("synthetic", requests=8), tokenizer), 4.0)
    assert plain["shared_prefix_share"] == 0
    assert plain["arrivals"] == {"kind": "poisson", "rate_per_s": 4.0, "gap_cv": 1.0}

    trace = tmp_path / "t.jsonl"
    trace.write_text(
        "\n".join(
            json.dumps({"arrival_s": t, "input_tokens": n, "output_tokens": 2})
            for t, n in ((0.0, 10), (0.1, 20), (0.2, 30), (4.0, 40))
        )
    )
    requests = build_requests(load_workload(f"trace:{trace}"), tokenizer)
    found = traffic(requests)
    assert found["input_tokens"] == {"p10": 10, "p50": 30, "p90": 40, "max": 40}
    # 3 gaps in 4 s (0.1, 0.1, 3.8): 0.75 req/s, in a burst then a lull.
    assert found["arrivals"]["kind"] == "trace"
    assert found["arrivals"]["rate_per_s"] == 0.75 and found["arrivals"]["gap_cv"] > 1
    assert traffic(requests, 3.0)["arrivals"]["rate_per_s"] == 3.0


def test_traffic_differences_name_what_changed() -> None:
    from tuner.profiles.profile import TrafficRecord

    def record(p50: int, share: float, kind: str = "at once", rate: float | None = None):  # type: ignore[no-untyped-def]
        spread = {"p10": p50, "p50": p50, "p90": p50, "max": p50}
        return TrafficRecord.model_validate(
            {
                "input_tokens": spread,
                "output_tokens": spread,
                "shared_prefix_share": share,
                "arrivals": {"kind": kind, "rate_per_s": rate},
            }
        )

    tuned = record(500, 0.8, "trace", 2.0)
    assert tuned.differences(record(550, 0.75, "trace", 2.2)) == []
    assert tuned.differences(record(1000, 0.0, "trace", 5.0)) == [
        "median prompt 1,000 tokens, tuned on 500",
        "median output 1,000 tokens, tuned on 500",
        "0% of prompt tokens in shared prefixes, tuned on 80%",
        "arrivals at 5 req/s, tuned on 2 req/s",
    ]
    assert tuned.differences(record(500, 0.8)) == ["arrivals at once, tuned on trace"]

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from ConfigSpace import CategoricalHyperparameter, EqualsCondition, UniformIntegerHyperparameter

from tests.conftest import CPU, FOUR_GPUS, REPO_ROOT
from tuner.engines import ENGINES, engine_class, load_catalogue
from tuner.engines.server import with_load
from tuner.errors import TunerError
from tuner.hardware.machine import Platform
from tuner.optimizers.smac import config_of, configspace, knobs_of
from tuner.specs.knobs import Catalogue
from tuner.specs.space import resolve
from tuner.testing import FAKE_CATALOGUE

ONE_GPU_NO_BF16 = Platform("cuda", 1, frozenset({"cuda", "fp16"}))


def catalogue(**overrides: object) -> Catalogue:
    data = {
        "engine": "toy",
        "summary": "toy",
        "knobs": {
            "batch": {
                "type": "int",
                "stage": "run",
                "range": [1, 64],
                "log": True,
                "default": 4,
                "help": "b",
            },
            "dtype": {
                "type": "choice",
                "stage": "load",
                "help": "d",
                "choices": [{"value": "bf16", "requires": ["bf16"]}, "fp32"],
                "default": ["bf16", "fp32"],
            },
            "cache": {
                "type": "choice",
                "stage": "run",
                "choices": ["dyn", "static"],
                "default": "dyn",
                "help": "c",
            },
            "compile": {
                "type": "bool",
                "stage": "load",
                "when": {"cache": "static"},
                "default": False,
                "help": "x",
                "requires": ["cuda"],
            },
            "gpus": {
                "type": "int",
                "stage": "load",
                "range": [1, "gpus"],
                "default": 1,
                "help": "g",
                "requires": ["cuda"],
            },
            "ratio": {
                "type": "float",
                "stage": "load",
                "range": [0.1, 0.9],
                "default": 0.5,
                "help": "r",
            },
        },
        "forbidden": [{"if": {"dtype": "fp32", "cache": "static"}, "because": "no"}],
    }
    data.update(overrides)
    return Catalogue.model_validate(data)


def test_shipped_catalogues_load_and_resolve_on_cpu_and_gpus() -> None:
    for name in ENGINES:
        if name.startswith("vllm") and importlib.util.find_spec("vllm") is None:
            continue  # its catalogue is checked against the installed vLLM
        cat = engine_class(name).catalogue()
        assert cat.engine == name
        if not name.startswith("vllm"):
            shipped = load_catalogue(name)
            if name in ("hf-server", "openai-server"):
                shipped = with_load(shipped)
            # hf-cb and hf-server are checked against the installed transformers, which offers
            # every knob they ship (choices kept as the catalogue states them).
            assert set(cat.knobs) == set(shipped.knobs)
            assert not [n for n, k in cat.knobs.items() if k.unavailable], name
            for knob_name, knob in cat.knobs.items():
                shipped_knob = shipped.knobs[knob_name]
                assert [c.value for c in knob.choice_specs()] == [
                    c.value for c in shipped_knob.choice_specs()
                ], (name, knob_name)
        if name.endswith("server"):
            assert "concurrency" in cat.knobs  # the client's load, searched beside the server's
        facts = {
            "workload_max_tokens": 300,
            "workload_requests": 64,
            "model_max_len": 2048,
            "num_attention_heads": 8,
        }
        for platform in (CPU, FOUR_GPUS):
            space = resolve(cat, platform, facts=facts)
            defaults = space.default_knobs()
            assert defaults.get("batch_size", 1) == 1
            config_of(space, configspace(space, 0), defaults).check_valid_configuration()


def test_translation_to_configspace_types_ranges_defaults() -> None:
    space = resolve(catalogue(), FOUR_GPUS)
    cs = configspace(space, seed=1)
    batch = cs["batch"]
    assert isinstance(batch, UniformIntegerHyperparameter)
    assert (batch.lower, batch.upper, batch.log, batch.default_value) == (1, 64, True, 4)
    dtype = cs["dtype"]
    assert isinstance(dtype, CategoricalHyperparameter)
    assert list(dtype.choices) == ["bf16", "fp32"] and dtype.default_value == "bf16"
    assert (cs["gpus"].lower, cs["gpus"].upper) == (1, 4)
    assert cs["ratio"].default_value == pytest.approx(0.5)
    assert list(cs["compile"].choices) == [False, True]
    conditions = cs.conditions
    assert len(conditions) == 1 and isinstance(conditions[0], EqualsCondition)
    assert conditions[0].child.name == "compile" and conditions[0].parent.name == "cache"
    assert len(cs.forbidden_clauses) == 1


def test_samples_respect_conditions_and_forbidden_rules() -> None:
    space = resolve(catalogue(), FOUR_GPUS)
    cs = configspace(space, seed=3)
    for config in cs.sample_configuration(200):
        knobs = knobs_of(space, config)
        assert ("compile" in knobs) == (knobs["cache"] == "static")
        assert not (knobs["dtype"] == "fp32" and knobs["cache"] == "static")
        assert all(type(v) in (int, float, str, bool) for v in knobs.values())


def test_platform_drops_knobs_and_choices_it_cannot_run() -> None:
    space = resolve(catalogue(), CPU)
    assert set(space.dropped) == {"compile", "gpus"}
    assert space.dropped["gpus"] == "needs cuda"
    assert space.knobs["dtype"].choices == ("bf16", "fp32")

    space = resolve(catalogue(), ONE_GPU_NO_BF16)
    assert space.fixed == {"dtype": "fp32", "gpus": 1}  # one choice left, range 1..1
    assert "dtype" not in space.knobs
    # With dtype fixed at fp32, the forbidden rule narrows to cache=static alone.
    assert [r.values for r in space.rules] == [(("cache", ("static",)),)]
    for config in configspace(space, 0).sample_configuration(50):
        assert knobs_of(space, config)["cache"] == "dyn"


def test_default_prefers_first_available_choice() -> None:
    assert resolve(catalogue(), CPU).default_knobs()["dtype"] == "bf16"
    assert resolve(catalogue(), ONE_GPU_NO_BF16).default_knobs()["dtype"] == "fp32"


def test_pinned_knobs_leave_the_search_and_decide_conditions() -> None:
    space = resolve(catalogue(), FOUR_GPUS, {"cache": "dyn"})
    assert "cache" not in space.knobs and space.fixed["cache"] == "dyn"
    assert space.dropped["compile"] == "applies only when cache=static"
    space = resolve(catalogue(), FOUR_GPUS, {"cache": "static"})
    assert space.knobs["compile"].when == ()
    assert "compile" in space.default_knobs()
    with pytest.raises(TunerError, match=r"batch=999 is outside 1\.\.64"):
        resolve(catalogue(), CPU, {"batch": 999})
    with pytest.raises(TunerError, match="cannot set gpus here: needs cuda"):
        resolve(catalogue(), CPU, {"gpus": 2})


def test_parse_overrides_and_complete() -> None:
    space = resolve(catalogue(), FOUR_GPUS)
    knobs = space.complete(space.parse_overrides(["batch=16", "cache=static", "compile=on"]))
    assert knobs == {
        "batch": 16,
        "dtype": "bf16",
        "cache": "static",
        "compile": True,
        "gpus": 1,
        "ratio": 0.5,
    }
    load, run = space.split(knobs)
    assert set(load) == {"dtype", "compile", "gpus", "ratio"} and set(run) == {"batch", "cache"}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["bsz=4"], "toy has no knob 'bsz'; its knobs: batch, dtype"),
        (["batch=0"], "batch=0 is outside 1..64 (log)"),
        (["batch=four"], "batch takes a whole number, not 'four'"),
        (["ratio=x"], "ratio takes a number"),
        (["dtype=fp8"], "dtype=fp8 is not one of: bf16, fp32"),
        (["compile=maybe"], "compile takes true or false"),
        (["batch"], "--set takes name=value"),
        (["compile=true"], "compile applies only when cache=static"),
        (["dtype=fp32", "cache=static"], "dtype=fp32 cache=static is not allowed: no"),
    ],
)
def test_bad_overrides_say_what_is_wrong(pairs: list[str], message: str) -> None:
    space = resolve(catalogue(), FOUR_GPUS)
    with pytest.raises(TunerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        space.complete(space.parse_overrides(pairs))


def test_configspace_round_trip() -> None:
    space = resolve(catalogue(), FOUR_GPUS)
    cs = configspace(space, 0)
    for config in cs.sample_configuration(20):
        knobs = knobs_of(space, config)
        assert knobs_of(space, config_of(space, cs, knobs)) == knobs


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"knobs": {"b": {"type": "int", "stage": "run", "default": 1, "help": ""}}}, "range"),
        (
            {"knobs": {"b": {"type": "choice", "stage": "run", "default": 1, "help": ""}}},
            "needs choices",
        ),
        ({"knobs": {"b": {"type": "bool", "stage": "boot", "default": 1, "help": ""}}}, "stage"),
        (
            {
                "knobs": {
                    "b": {
                        "type": "bool",
                        "stage": "run",
                        "default": True,
                        "help": "",
                        "requires": ["tpu"],
                    }
                }
            },
            "unknown requirement 'tpu'",
        ),
        (
            {
                "knobs": {
                    "b": {
                        "type": "bool",
                        "stage": "run",
                        "default": True,
                        "help": "",
                        "when": {"zz": 1},
                    }
                }
            },
            "unknown knob 'zz'",
        ),
        ({"forbidden": [{"if": {"zz": 1}, "because": "x"}]}, "unknown knob 'zz'"),
        ({"extra": 1}, "extra"),
    ],
)
def test_malformed_catalogues_are_rejected(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        catalogue(**change)


def test_catalogue_file_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: x\nsummary: y\nknobs: {a: {type: int}}\n")
    with pytest.raises(TunerError, match=r"bad.yaml: knobs.a.stage: Field required"):
        Catalogue.from_file(bad)
    bad.write_text("engine: [x\n")
    with pytest.raises(TunerError, match="not valid YAML"):
        Catalogue.from_file(bad)


def test_hf_catalogue_on_a_gpu_with_flash_attention() -> None:
    space = resolve(load_catalogue("hf"), FOUR_GPUS)
    assert "flash_attention_2" in space.knobs["attn_implementation"].choices
    assert space.knobs["num_gpus"].high == 4
    with pytest.raises(TunerError, match="flash attention runs in float16 or bfloat16 only"):
        space.complete({"attn_implementation": "flash_attention_2", "dtype": "float32"})
    assert (
        "flash_attention_2"
        not in resolve(load_catalogue("hf"), CPU).knobs["attn_implementation"].choices
    )


def test_fake_catalogue_is_valid() -> None:
    space = resolve(Catalogue.model_validate(FAKE_CATALOGUE), CPU)
    assert set(space.knobs) == {"batch_size", "kernel", "cache", "compile"}


SCHED = {
    "engine": "sched",
    "summary": "vLLM-like scheduler knobs",
    "knobs": {
        "seqs": {
            "type": "int",
            "stage": "load",
            "range": [1, 1024],
            "log": True,
            "default": 256,
            "engine_default": True,
            "help": "s",
        },
        "tokens": {
            "type": "int",
            "stage": "load",
            "range": [16, 16384],
            "log": True,
            "default": 8192,
            "engine_default": True,
            "help": "t",
        },
        "chunked": {
            "type": "bool",
            "stage": "load",
            "default": True,
            "engine_default": True,
            "help": "c",
        },
        "max_len": {
            "type": "int",
            "stage": "load",
            "range": ["workload_max_tokens", "model_max_len"],
            "log": True,
            "default": 2048,
            "engine_default": True,
            "help": "m",
        },
        "tp": {
            "type": "int",
            "stage": "load",
            "range": [1, "gpus"],
            "divides": "heads",
            "default": 1,
            "help": "p",
        },
        "mem": {
            "type": "float",
            "stage": "load",
            "range": [0.5, 0.95],
            "default": 0.9,
            "engine_default": True,
            "help": "u",
            "per_device": {"cpu": {"range": [0.05, 0.4], "default": 0.2, "engine_default": False}},
        },
    },
    "forbidden": [
        {"expr": "tokens < seqs", "because": "token budget below sequence budget"},
        {"expr": "not chunked and tokens < max_len", "because": "prefill must fit a batch"},
        {"expr": "tp * 2 > gpus", "because": "two replicas must fit"},
    ],
}
FACTS = {"workload_max_tokens": 300, "model_max_len": 2048, "heads": 12}


def test_facts_bound_ranges_and_divisors() -> None:
    space = resolve(Catalogue.model_validate(SCHED), FOUR_GPUS, facts=FACTS)
    assert (space.knobs["max_len"].low, space.knobs["max_len"].high) == (300, 2048)
    assert space.knobs["tp"].choices == (1, 2, 3, 4)  # in 1..4 and dividing 12
    assert type(configspace(space, 0)["tp"]).__name__ == "OrdinalHyperparameter"
    with pytest.raises(TunerError, match="tp=5 is outside"):
        space.complete({"tp": 5})
    missing = resolve(Catalogue.model_validate(SCHED), FOUR_GPUS)
    assert "workload_max_tokens" in missing.dropped["max_len"]


def test_engine_defaults_are_left_to_the_engine_in_the_baseline() -> None:
    gpu = resolve(Catalogue.model_validate(SCHED), FOUR_GPUS, facts=FACTS)
    assert gpu.default_knobs() == {"tp": 1}
    assert gpu.centre_knobs()["seqs"] == 256 and gpu.centre_knobs()["mem"] == 0.9
    cpu = resolve(Catalogue.model_validate(SCHED), CPU, facts=FACTS)
    assert cpu.default_knobs() == {"mem": 0.2}  # per_device: cpu overrides the engine's default
    assert (cpu.knobs["mem"].low, cpu.knobs["mem"].high) == (0.05, 0.4)
    cs = configspace(gpu, 0)
    baseline = config_of(gpu, cs, gpu.default_knobs())
    assert knobs_of(gpu, baseline)["seqs"] == 256


def test_expression_rules_become_forbidden_relations() -> None:
    space = resolve(Catalogue.model_validate(SCHED), FOUR_GPUS, facts=FACTS)
    assert [r.text for r in space.rules] == [
        "tokens < seqs",
        "not chunked and tokens < max_len",
        "tp * 2 > gpus",
    ]
    cs = configspace(space, 1)
    assert len(cs.forbidden_clauses) == 2  # the third is checked per proposal
    assert space.violated({**space.centre_knobs(), "tp": 3}) is space.rules[2]
    for config in cs.sample_configuration(300):
        k = knobs_of(space, config)
        assert k["tokens"] >= k["seqs"]
        assert k["chunked"] or k["tokens"] >= k["max_len"]
        assert space.violated(k) in (None, space.rules[2])
    with pytest.raises(TunerError, match="seqs=64 tokens=32 is not allowed: token budget"):
        space.complete({"seqs": 64, "tokens": 32})
    # A rule is skipped where a knob it names is unset (the engine decides it).
    assert space.violated({"tokens": 32}) is None


def test_fixed_knobs_decide_parts_of_a_rule() -> None:
    cat = Catalogue.model_validate(SCHED)
    on = resolve(cat, FOUR_GPUS, {"chunked": True}, facts=FACTS)
    assert [r.text for r in on.rules] == ["tokens < seqs", "tp * 2 > gpus"]
    off = resolve(cat, FOUR_GPUS, {"chunked": False, "max_len": 1024}, facts=FACTS)
    rule = off.rules[1]
    assert rule.matches({"tokens": 512}) and not rule.matches({"tokens": 1024})
    assert rule.clause({}) is None  # a bound against a constant is checked per proposal


def test_rule_expressions_are_a_small_safe_language() -> None:
    from tuner.specs import rules

    tree = rules.parse("a * b > gpus and not c")
    assert rules.names(tree) == {"a", "b", "gpus", "c"}
    assert rules.evaluate(tree, {"a": 2, "b": 3, "gpus": 4, "c": False})
    with pytest.raises(rules.Unknown):
        rules.evaluate(tree, {"a": 2})
    for bad in ("__import__('os')", "a.b > 1", "[1][0]", "a if b else c", "lambda: 1"):
        with pytest.raises(ValueError):
            rules.parse(bad)


def test_complete_switches_on_a_conditional_knob_at_its_default() -> None:
    # Overrides that satisfy a condition bring the conditional knob in at its default (or fixed)
    # value, rather than leaving it out because it was inactive under the other defaults.
    space = resolve(catalogue(), FOUR_GPUS)
    assert space.complete({"cache": "static"})["compile"] is False
    pinned = resolve(catalogue(), FOUR_GPUS, {"compile": True, "cache": "static"})
    assert pinned.complete({})["compile"] is True


def test_values_make_an_ordered_set_of_numbers() -> None:
    knobs = catalogue().model_dump(by_alias=True, exclude_unset=True)["knobs"]
    knobs["batch"] = {
        "type": "int",
        "stage": "run",
        "values": [64, 1, 16, 4],
        "default": 3,
        "help": "b",
    }
    space = resolve(catalogue(knobs=knobs), CPU)
    batch = space.knobs["batch"]
    assert batch.choices == (1, 4, 16, 64) and batch.default == 4
    assert (batch.low, batch.high) == (1, 64)
    hp = configspace(space, 0)["batch"]
    assert type(hp).__name__ == "OrdinalHyperparameter" and list(hp.sequence) == [1, 4, 16, 64]
    with pytest.raises(TunerError, match="batch=8 is not one of: 1, 4, 16, 64"):
        space.parse_overrides(["batch=8"])
    with pytest.raises(ValueError, match="only int and float knobs take values"):
        catalogue(knobs={**knobs, "cache": {**knobs["cache"], "values": [1]}})


def test_initial_points_resolve_bounds_and_skip_what_is_not_searched() -> None:
    cat = catalogue(initial=[{"batch": "max"}, {"batch": "min", "compile": True}, {"gpus": 2}])
    cpu = resolve(cat, CPU)
    # On the CPU: batch at its bounds; compile and gpus are not searched there.
    assert cpu.initial_knobs() == [
        {**cpu.default_knobs(), "batch": 64},
        {**cpu.default_knobs(), "batch": 1},
    ]
    gpu = resolve(cat, FOUR_GPUS)
    # compile=true needs cache=static, which the point does not set: that point is left out.
    assert [p["batch"] for p in gpu.initial_knobs()] == [64, 4]
    assert gpu.initial_knobs()[1]["gpus"] == 2
    with pytest.raises(ValueError, match="an initial point names unknown knob 'bsz'"):
        catalogue(initial=[{"bsz": 1}])


def test_backing_off_steps_the_batch_down_its_values_or_halves_it_in_its_range() -> None:
    from tuner.study.prepare import prepare

    table = REPO_ROOT / (
        "benchmarks/data/external/martinez2024/martinez2024-a100-hf-pipeline-bloom-1b7.json"
    )
    space = prepare(f"replay:{table}", "", "").space
    assert space.backed_off({"num_gpus": 2, "batch_size": 256}) == {
        "num_gpus": 2,
        "batch_size": 128,
    }
    assert space.backed_off({"num_gpus": 2, "batch_size": 1}) is None  # nothing smaller
    hf = resolve(load_catalogue("hf"), CPU, facts={"workload_requests": 164})
    assert hf.backed_off({"batch_size": 96, "dtype": "float32"}) == {
        "batch_size": 48,
        "dtype": "float32",
    }
    assert hf.backed_off({"batch_size": 1}) is None
    vllm = resolve(load_catalogue("vllm"), FOUR_GPUS)
    assert vllm.backed_off({"max_num_seqs": 256}) is None  # its catalogue does not back off


def test_the_vllm_engine_args_probe_is_kept_and_a_torn_file_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.engines import vllm

    kept = tmp_path / "vllm" / "engine-args-0123.json"
    answer: tuple[str, dict[str, list[object] | None]] = (
        "9.9",
        {"max_num_seqs": None, "kv_cache_dtype": ["auto", "fp8"]},
    )
    probes = []

    def probe() -> tuple[str, dict[str, list[object] | None]]:
        probes.append(answer)
        return answer

    monkeypatch.setattr(vllm, "_probe_file", lambda: kept)
    monkeypatch.setattr(vllm, "_probe", probe)
    kept.parent.mkdir()
    kept.write_text('{"version": "9.9", "fie')  # torn
    try:
        for _ in range(3):
            vllm.engine_args_fields.cache_clear()  # as a new process would
            assert vllm.engine_args_fields() == answer
    finally:
        vllm.engine_args_fields.cache_clear()
    assert len(probes) == 1  # the torn file's: the next two read the file it wrote
    assert json.loads(kept.read_text()) == {"version": "9.9", "fields": answer[1]}


def test_a_vllm_requests_end_is_when_it_was_seen_done_on_its_arrivals_clock() -> None:
    from types import SimpleNamespace

    from tuner.engines.vllm import request_timing

    def output(**metrics: float) -> SimpleNamespace:
        return SimpleNamespace(
            metrics=SimpleNamespace(**metrics) if metrics else None,
            outputs=[SimpleNamespace(token_ids=[1, 2, 3, 4, 5])],
        )

    # vLLM's engine core made the first token at 50.0 and the last at 50.4 (its own clock),
    # the caller got the first 0.9 s after arrival and saw the request done at 1001.0: its end
    # is 1.0 s, not 0.9 + 0.4.
    seen = output(
        arrival_time=1000.0, first_token_latency=0.9, first_token_ts=50.0, last_token_ts=50.4
    )
    timing = request_timing(seen, finished_at=1001.0)
    assert timing is not None
    assert (timing.ttft_s, timing.e2e_s, timing.output_tokens) == (0.9, 1.0, 5)
    assert timing.tpot_s == pytest.approx(0.1 / 4)
    assert request_timing(seen, finished_at=1000.5).e2e_s == 0.9  # never before its first token
    assert request_timing(output(), finished_at=1001.0) is None  # stats off
    no_token = output(arrival_time=1000.0, first_token_latency=0.0, first_token_ts=0.0)
    assert request_timing(no_token, finished_at=1001.0) is None

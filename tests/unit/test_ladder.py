"""The optimizers that know serving: `ladder` (the default) and `descend` (the yardstick)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CPU, REPO_ROOT
from tuner.optimizers import make_optimizer
from tuner.optimizers.base import Feedback
from tuner.optimizers.lattice import Lattice
from tuner.optimizers.smac import SmacOptimizer
from tuner.specs.knobs import Catalogue
from tuner.specs.space import SearchSpace, resolve
from tuner.study.study import BACK_OFF, replay_study

EXTERNAL = REPO_ROOT / "benchmarks" / "data" / "external"
MARTINEZ_HF = EXTERNAL / "martinez2024" / "martinez2024-a100-hf-pipeline-codellama-13b-hf.json"
LOADS = [4, 8, 16, 32, 64, 128, 256]


def serving_space(**extra: Any) -> SearchSpace:
    """Tensor parallel size 1..8 (a launch each) and the client's concurrency (the load)."""
    knobs: dict[str, Any] = {
        "tensor_parallel_size": {
            "type": "int", "stage": "load", "values": [1, 2, 4, 8], "default": 1, "help": "tp",
        },
        "concurrency": {
            "type": "int", "stage": "run", "values": LOADS, "default": 256, "load": True,
            "help": "requests in flight",
        },
        **extra,
    }  # fmt: skip
    catalogue = Catalogue.model_validate({"engine": "serving", "summary": "s", "knobs": knobs})
    return resolve(catalogue, CPU)


def ladder(space: SearchSpace, tmp_path: Path, **kw: Any) -> Any:
    return make_optimizer("ladder", space, budget=10, seed=0, output_dir=tmp_path, **kw)


def test_the_lattice_is_a_line_of_loads_per_layout() -> None:
    lattice = Lattice.of(serving_space())
    assert lattice.load == "concurrency" and lattice.loads == tuple(LOADS)
    assert [lay["tensor_parallel_size"] for lay in lattice.layouts()] == [1, 2, 4, 8]
    assert lattice.gpus({"tensor_parallel_size": 4}) == 4
    assert lattice.point({"tensor_parallel_size": 2}, 3) == {
        "tensor_parallel_size": 2,
        "concurrency": 32,
    }


def test_a_space_of_many_layouts_is_searched_one_knob_away_from_the_best() -> None:
    # 4 x 6 x 6 x 6 layouts of four knobs: more than the lattice lists.
    extra = {
        name: {"type": "int", "stage": "load", "values": [1, 2, 4, 8, 16, 32], "default": 2,
               "help": name}
        for name in ("a", "b", "c")
    }  # fmt: skip
    lattice = Lattice.of(serving_space(**extra))
    around = {"tensor_parallel_size": 1, "a": 2, "b": 2, "c": 2}
    layouts = lattice.layouts(around)
    assert layouts[0] == around
    assert len(layouts) == 1 + 3 + 5 * 3
    assert all(sum(lay[n] != around[n] for n in around) == 1 for lay in layouts[1:])


def test_a_broken_limit_steps_down_as_far_as_its_pressure_says(tmp_path: Path) -> None:
    space = serving_space()
    search = ladder(space, tmp_path, objectives=["output_tokens_per_s_per_gpu"])
    # The baseline, every request at once, is 4x over its latency limit.
    search.observe(
        {"tensor_parallel_size": 1, "concurrency": 256}, None, Feedback("limit", 4.0, -100.0)
    )
    first = search.ask()
    assert first.knobs == {"tensor_parallel_size": 1, "concurrency": 64}
    # Still 1.5x over: the pressure grew 4/1.5 over 256/64, so the limit fits near 36.
    search.tell(first.handle, None, Feedback("limit", 1.5, -60.0))
    second = search.ask()
    assert second.knobs == {"tensor_parallel_size": 1, "concurrency": 32}
    # It counts at 32 and 64 broke: the line is settled. Per GPU, the nearest layout is the
    # best bet; it starts where this one's boundary is, one load step up per GPU doubling.
    search.tell(second.handle, (-40.0,), Feedback(None, 0.9, -40.0))
    third = search.ask()
    assert third.knobs == {"tensor_parallel_size": 2, "concurrency": 64}


def test_out_of_memory_halves_the_gap_and_no_back_off_is_added(tmp_path: Path) -> None:
    space = serving_space()
    search = ladder(space, tmp_path)
    assert search.steps_down
    search.observe({"tensor_parallel_size": 1, "concurrency": 4}, (-10.0,), Feedback(loss=-10.0))
    top = search.ask()
    assert top.knobs["concurrency"] == 256  # nothing rules the largest load out yet
    search.tell(top.handle, None, Feedback("oom"))
    middle = search.ask()
    assert middle.knobs == {"tensor_parallel_size": 1, "concurrency": 32}  # sqrt(4 x 256)
    search.tell(middle.handle, (-50.0,), Feedback(loss=-50.0))
    # sqrt(32 x 256) lies half way between 64 and 128: the smaller, more likely to fit.
    assert search.ask().knobs == {"tensor_parallel_size": 1, "concurrency": 64}


def test_the_next_layout_is_the_one_the_model_across_layouts_ranks_best(tmp_path: Path) -> None:
    space = serving_space()
    search = ladder(space, tmp_path)
    # No limits; each doubling of the GPUs gave 1.5x the throughput at the largest load.
    search.observe({"tensor_parallel_size": 1, "concurrency": 256}, (-100.0,), Feedback())
    first = search.ask()
    search.tell(first.handle, (-150.0,), Feedback(loss=-150.0))
    measured = {first.knobs["tensor_parallel_size"], 1}
    following = search.ask()
    assert following.knobs["concurrency"] == 256
    # The model extrapolates the trend: the most GPUs not yet measured.
    assert following.knobs["tensor_parallel_size"] == max({2, 4, 8} - measured)


def test_where_the_figure_falls_with_the_load_it_looks_below_the_best(tmp_path: Path) -> None:
    space = serving_space()
    search = ladder(space, tmp_path)
    search.observe({"tensor_parallel_size": 1, "concurrency": 256}, None, Feedback("oom"))
    for load, tok_s in ((32, -80.0), (128, -60.0), (64, -70.0)):
        search.observe({"tensor_parallel_size": 1, "concurrency": load}, (tok_s,), Feedback())
    # 32 beats 64 and 128 above it: the peak may lie below 32.
    assert search.ask().knobs == {"tensor_parallel_size": 1, "concurrency": 16}


def test_several_objectives_or_no_load_knob_hand_the_search_to_gp(tmp_path: Path) -> None:
    assert isinstance(ladder(serving_space(), tmp_path, objectives=2), SmacOptimizer)
    unloaded = serving_space()
    pinned = resolve(unloaded.catalogue, CPU, {"concurrency": 64})
    assert isinstance(ladder(pinned, tmp_path), SmacOptimizer)


@pytest.mark.parametrize("optimizer", ["ladder", "descend"])
def test_a_replay_study_runs_lattice_points_without_back_offs(
    tmp_path: Path, optimizer: str
) -> None:
    outcome = replay_study(
        MARTINEZ_HF, trials=20, seed=0, run_dir=tmp_path / "r", optimizer=optimizer, confirm=0
    )
    results = outcome.results
    assert len(results) == 20 and results[0].origin == "baseline"
    assert all(r.origin != BACK_OFF for r in results)
    assert len({json.dumps(r.knobs, sort_keys=True) for r in results}) == 20
    assert outcome.best is not None and outcome.best.knobs["num_gpus"] > 1


def test_descend_takes_each_layout_from_its_largest_load_down_until_one_counts(
    tmp_path: Path,
) -> None:
    outcome = replay_study(
        MARTINEZ_HF, trials=24, seed=0, run_dir=tmp_path / "r", optimizer="descend", confirm=0
    )
    # The first pass: each layout's trials until the search moves on.
    layouts: dict[int, list[Any]] = {}
    for r in outcome.results[1:]:
        gpus = int(r.knobs["num_gpus"])
        if gpus not in layouts or gpus == list(layouts)[-1]:
            layouts.setdefault(gpus, []).append(r)
    # One GPU first (the baseline's layout), then the others in order.
    assert list(layouts) == [1, 2, 4, 8]
    for trials in layouts.values():
        batches = [r.knobs["batch_size"] for r in trials]
        assert batches == sorted(batches, reverse=True)
        # Down until the first that counts, and not a step further.
        assert trials[-1].status == "ok"
        assert all(r.status != "ok" for r in trials[:-1])


SILICON = EXTERNAL / "aiconfigurator-silicon"


def test_a_study_tells_ladder_how_hard_each_trial_pressed_its_limits(tmp_path: Path) -> None:
    table = SILICON / "silicon-b200-meta-llama-llama-3.1-70b-fp4-1024x1024-vllmunknown.json"
    outcome = replay_study(
        table, trials=3, seed=0, run_dir=tmp_path / "r", confirm=0,
        objectives=["output_tokens_per_s_per_gpu"],
        constraints=["itl_p99_ms<=16", "ttft_p99_ms<=160"],
    )  # fmt: skip
    baseline, second = outcome.results[:2]
    # Every request at once broke the TPOT limit 1.5x: the next load is the largest that the
    # pressure says fits (64 / 1.5 = 43: 32), on the same layout, with no engine launch.
    assert baseline.knobs == {"tensor_parallel_size": 1, "concurrency": 64}
    assert second.knobs == {"tensor_parallel_size": 1, "concurrency": 32}
    assert second.reused_model


def test_the_shipped_priors_were_fitted_on_the_tuning_half_only() -> None:
    from tuner.optimizers.ladder import PRIORS_FILE, shipped_priors

    fitted = json.loads(PRIORS_FILE.read_text())
    split = json.loads((EXTERNAL / "split.json").read_text())["sources"]
    tuning = {m for halves in split.values() for m in halves["tuning"]}
    models = {
        json.loads(path.read_text())["model"]
        for path in EXTERNAL.glob("*/*.json")
        if path.stem in fitted["tables"]
    }
    assert models and models <= tuning
    assert set(shipped_priors()) == {"limits", "none"}
    assert shipped_priors()["none"]["tensor_parallel_size"] > 0  # more GPUs, more tok/s


def test_knobs_the_model_knows_nothing_of_are_changed_one_at_a_time(tmp_path: Path) -> None:
    # Two knobs with no prior and one measured layout: every fresh layout is estimated alike,
    # so the nearest goes first (one knob changed), not one the ridge's rounding favours.
    extra = {
        name: {"type": "int", "stage": "load", "values": [4, 64, 512], "default": 4, "help": name}
        for name in ("max_num_seqs", "max_num_batched_tokens")
    }
    space = serving_space(**extra)
    search = ladder(space, tmp_path)
    base = space.default_knobs()
    search.observe(base, (-100.0,), Feedback(loss=-100.0))
    proposal = search.ask()
    changed = [n for n in base if n != "concurrency" and proposal.knobs[n] != base[n]]
    assert len(changed) == 1, proposal.knobs

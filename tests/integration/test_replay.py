"""Recorded landscapes and the replay engine (real SMAC, no GPU, no engine loaded)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.errors import TunerError
from tuner.profiles.profile import read_profile, write_profile
from tuner.replay.landscape import read_landscape
from tuner.replay.replay import load_replay
from tuner.study.prepare import prepare
from tuner.study.study import replay_study as study_of

DATA = REPO_ROOT / "benchmarks" / "data"
TABLES = sorted(DATA.glob("*.json"))
H100 = DATA / "h100-hf-tiny-llama-humaneval.json"
runner = CliRunner()


def replay_study(table: Path, seed: int, trials: int, run_dir: Path):  # type: ignore[no-untyped-def]
    return study_of(table, trials=trials, seed=seed, run_dir=run_dir)


@pytest.mark.parametrize("table", TABLES, ids=[t.stem for t in TABLES])
def test_committed_tables_read_and_hold_their_grid(table: Path) -> None:
    land = read_landscape(table)
    assert land.points and land.baseline
    sizes = [len(v) for v in land.grid.values()]
    assert len(land.points) <= int(statistics.fmean(sizes) ** len(sizes)) + 1
    assert land.point(land.baseline).knobs == land.baseline
    assert land.optimum().output_tokens_per_s >= land.point(land.baseline).output_tokens_per_s


def test_the_replay_space_is_the_recorded_grid() -> None:
    space = prepare(f"replay:{H100}", "", "").space
    assert space.knobs["batch_size"].choices == (1, 4, 16, 64)
    assert set(space.knobs) == {
        "batch_size",
        "dtype",
        "attn_implementation",
        "cache_implementation",
    }
    assert space.fixed == {"torch_compile": False, "num_gpus": 1}
    assert space.default_knobs() == read_landscape(H100).baseline


@pytest.mark.slow
def test_a_replay_study_reaches_90_percent_of_the_optimum_within_20_trials(
    tmp_path: Path,
) -> None:
    # The behaviour check: most seeds (3 of 5) pick a configuration whose recorded
    # figure is within 90% of the table's optimum. The pick is made on noisy answers (the
    # CPU table's recorded spread is 15% at the median), so a seed can pick a near-peak point.
    for table in TABLES:
        land = read_landscape(table)
        optimum = land.optimum().output_tokens_per_s
        ratios = []
        for seed in range(5):
            outcome = replay_study(table, seed, 20, tmp_path / f"{table.stem}-{seed}")
            searched = [r for r in outcome.results if r.origin != "confirm"]
            # A table of fewer configurations than the budget is searched to its end.
            assert outcome.results[0].origin == "baseline"
            assert len(searched) == 20 or outcome.stopped == "search space exhausted"
            picked = land.point(outcome.best.knobs).output_tokens_per_s
            ratios.append(picked / optimum)
        assert sum(r >= 0.9 for r in ratios) >= 3, (table.name, ratios)


def test_replay_answers_with_seeded_noise_and_recorded_costs(tmp_path: Path) -> None:
    land = read_landscape(H100)
    a = replay_study(H100, 3, 6, tmp_path / "a").results
    b = replay_study(H100, 3, 6, tmp_path / "b").results
    assert [r.output_tokens_per_s for r in a] == [r.output_tokens_per_s for r in b]
    for r in a:
        point = land.point(r.knobs)
        recorded = point.output_tokens_per_s
        cv = point.measurement.output_tokens_per_s.cv
        assert abs(r.output_tokens_per_s / recorded - 1) <= 5 * cv + 1e-9
        load = 0.0 if r.reused_model else land.load_cost_s(r.knobs)
        assert r.wall_s == pytest.approx(land.measure_cost_s(point) + load)
    assert not a[0].reused_model and a[0].load_s == land.load_cost_s(a[0].knobs)


def test_knobs_outside_the_table_are_a_clear_error(tmp_path: Path) -> None:
    answer = load_replay(f"replay:{H100}").evaluator(0)
    with pytest.raises(TunerError, match=r"batch_size=2 .* is not in the recorded table"):
        answer(0, "x", {**read_landscape(H100).baseline, "batch_size": 2})
    result = runner.invoke(
        app,
        [
            "tune",
            "--engine",
            f"replay:{H100}",
            "--set",
            "batch_size=2",
            "--run-dir",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "batch_size=2 is not one of: 1, 4, 16, 64" in result.output
    bench = runner.invoke(app, ["bench", "--engine", f"replay:{H100}"])
    assert bench.exit_code == 2 and "a replay answers studies only" in bench.output
    assert "Traceback" not in result.output


def test_tune_on_a_replay_prints_the_ratio_and_writes_the_tables_profile(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    result = runner.invoke(
        app,
        [
            "tune",
            "--engine",
            f"replay:{H100}",
            "--trials",
            "8",
            "--run-dir",
            str(tmp_path / "r"),
            "--profiles-dir",
            str(profiles),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trials"] == 8 + 2 and 0 < data["ratio_to_optimum"] <= 1.5  # 2 confirmations
    assert data["table_optimum"]["output_tokens_per_s"] == pytest.approx(
        read_landscape(H100).optimum().output_tokens_per_s
    )
    profile = read_profile(Path(data["profile"]))
    # The table's machine and figures, marked as replayed.
    assert profile.gpu.slug == "nvidia-h100-80gb-hbm3" and profile.replay == str(H100)
    assert profile.shape == "humaneval-64x16" and profile.front == []
    # A replay never replaces a measured profile.
    measured = profile.model_copy(update={"replay": None})
    write_profile(measured, Path(data["profile"]))
    again = runner.invoke(
        app,
        ["tune", "--engine", f"replay:{H100}", "--trials", "4", "--run-dir",
         str(tmp_path / "r2"), "--profiles-dir", str(profiles)],
    )  # fmt: skip
    assert again.exit_code == 2 and "holds a measured profile; a replay does not" in again.output
    assert read_profile(Path(data["profile"])).replay is None


@pytest.mark.parametrize("second", ["joules_per_token", "peak_memory_mib"])
def test_a_two_objective_replay_writes_a_front_and_exports_each_end(
    second: str, tmp_path: Path
) -> None:
    profiles = tmp_path / "profiles"
    result = runner.invoke(
        app,
        [
            "tune", "--engine", f"replay:{H100}", "--trials", "24",
            "--objective", "output_tokens_per_s", "--objective", second,
            "--run-dir", str(tmp_path / "r"), "--profiles-dir", str(profiles), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = Path(json.loads(result.stdout)["profile"])
    assert (
        path.name
        == f"synthetic-tiny-llama--humaneval-64x16--output_tokens_per_s+{second}--replay.json"
    )
    profile = read_profile(path)
    goal = profile.goal()
    points = [[o.of(p.measurement) for o in goal.objectives] for p in profile.front]
    assert points and all(None not in p for p in points)
    for i, (speed, cost) in enumerate(points):
        for j, (other_speed, other_cost) in enumerate(points):
            if i != j:  # no point is as fast and as cheap as another, and better in one
                assert not (other_speed >= speed and other_cost <= cost)  # type: ignore[operator]
    assert [p[0] for p in points] == sorted((p[0] for p in points), reverse=True)
    ends = {}
    for pick in ("fastest", "0", str(len(points) - 1)):
        out = runner.invoke(app, ["profile", "export", str(path), "--pick", pick])
        assert out.exit_code == 0, out.output
        ends[pick] = json.loads(out.stdout)["knobs"]
    assert ends["fastest"] == ends["0"] == profile.front[0].knobs
    assert ends[str(len(points) - 1)] == profile.front[-1].knobs
    if second == "joules_per_token":
        out = runner.invoke(app, ["profile", "export", str(path), "--pick", "most-efficient"])
        thriftiest = min(profile.front, key=lambda p: goal.objectives[1].of(p.measurement))  # type: ignore[arg-type,return-value]
        assert json.loads(out.stdout)["knobs"] == thriftiest.knobs
    else:
        # Memory and speed pull apart on this table: the front has two ends.
        assert len(points) >= 2 and ends["0"] != ends[str(len(points) - 1)]
    bad = runner.invoke(app, ["profile", "export", str(path), "--pick", "99"])
    assert bad.exit_code == 2 and "--pick takes best, fastest, most-efficient" in bad.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no landscape at"),
        ("{", "not JSON"),
        ('{"kind": "profile"}', "is not a recorded landscape"),
        ('{"kind": "tuner-landscape"}', "engine: Field required"),
    ],
)
def test_bad_tables_are_one_line(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "t.json"
    if text is not None:
        path.write_text(text)
    result = runner.invoke(
        app, ["tune", "--engine", f"replay:{path}", "--run-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("optimizer", ["ladder", "gp", "rf"])
def test_a_budget_larger_than_the_table_stops_when_the_space_is_spent(
    tmp_path: Path, optimizer: str
) -> None:
    # 32 recorded configurations, 60 trials asked: every one is measured once, then it stops.
    table = DATA / "cpu-hf-tiny-llama-humaneval.json"
    outcome = study_of(
        table, trials=60, seed=0, run_dir=tmp_path / "r", confirm=0, optimizer=optimizer
    )
    assert outcome.stopped == "search space exhausted"
    assert len({tuple(sorted(r.knobs.items())) for r in outcome.results}) == 32
    assert len(outcome.results) == 32


SILICON = (
    DATA
    / "external"
    / "aiconfigurator-silicon"
    / "silicon-h100-qwen-qwen3-32b-default-1024x1024-vllm0.12.0.json"
)


@pytest.mark.parametrize(
    "table", [SILICON, DATA / "cpu-vllm-server-tiny-llama-humaneval.json"], ids=["silicon", "cpu"]
)
def test_a_vllm_table_replays_where_vllm_does_not_import(tmp_path: Path, table: Path) -> None:
    # A replay is a recorded table: it must run without the engine that recorded it. A `vllm`
    # package that fails to import stands first on the path, as on a machine without vLLM.
    import os
    import subprocess
    import sys

    fake = tmp_path / "site" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no vLLM on this machine')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    command = [sys.executable, "-m", "tuner", "tune", "--engine", f"replay:{table}"]
    command += ["--trials", "4", "--optimizer", "random", "--quiet", "--json"]
    command += ["--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "p")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "vLLM" not in done.stderr
    assert json.loads(done.stdout)["trials"] >= 4


MINIMAX = (
    DATA
    / "external"
    / "aiconfigurator-silicon"
    / "silicon-b200-minimaxai-minimax-m2.5-fp4-8192x1024-vllm0.19.0.json"
)


@pytest.mark.parametrize("optimizer", ["hyperopt-tpe", "optuna-tpe"])
def test_a_study_stops_as_exhausted_only_when_every_allowed_point_is_measured(
    tmp_path: Path, optimizer: str
) -> None:
    # The table's grid holds points its source never ran: TPE keeps proposing those and the
    # points it has measured. The study measures the rest itself rather than stop early.
    table = read_landscape(MINIMAX)
    runnable = {json.dumps(p.knobs, sort_keys=True) for p in table.points}
    twenty = study_of(MINIMAX, trials=20, seed=1, run_dir=tmp_path / "a", optimizer=optimizer,
                      confirm=0)  # fmt: skip
    assert twenty.stopped == "budget spent" and len(twenty.results) == 20
    every = study_of(MINIMAX, trials=60, seed=1, run_dir=tmp_path / "b", optimizer=optimizer,
                     confirm=0)  # fmt: skip
    assert every.stopped == "search space exhausted"
    assert {json.dumps(r.knobs, sort_keys=True) for r in every.results} == runnable
    assert len(every.results) == len(runnable)


def test_a_table_without_loads_charges_a_launch_by_the_models_size() -> None:
    from tuner.replay.landscape import default_launch_s, model_size_b

    assert model_size_b("meta-llama/Llama-3.1-70B") == 70
    assert model_size_b("Bloom-1b7") == 1.7
    assert model_size_b("Phi-1_5") == 1.3  # its name gives none: the model card's
    assert model_size_b("synthetic-tiny-llama") == 7  # unknown: a 7B model's
    assert default_launch_s("Qwen/Qwen3-32B") == 60 + 2 * 32
    table = read_landscape(SILICON)
    assert all(p.load_s is None for p in table.points)
    assert table.load_cost_s(table.baseline) == default_launch_s(table.model)
    # Our own tables record their loads: those are what they charge.
    own = read_landscape(H100)
    first = next(p for p in own.points if p.load_s)
    assert own.load_cost_s(first.knobs) == first.load_s

"""Tables imported from others' measurements (tuner.replay.external): their figures against the
source files, their provenance, and replays of them (real SMAC, Hyperopt and random search)."""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.measure.objective import goal
from tuner.replay.external import (
    MARTINEZ_COMMIT,
    MARTINEZ_NEW_TOKENS,
    MARTINEZ_PROMPTS,
    martinez_tables,
    silicon_tables,
)
from tuner.replay.landscape import read_landscape
from tuner.replay.replay import NOT_RUN
from tuner.study.prepare import prepare
from tuner.study.study import replay_study

ROOT = REPO_ROOT
SLICE = REPO_ROOT / "tests" / "data" / "martinez2024-slice"
EXTERNAL = ROOT / "benchmarks" / "data" / "external"
MARTINEZ = sorted((EXTERNAL / "martinez2024").glob("*.json"))
SILICON = sorted((EXTERNAL / "aiconfigurator-silicon").glob("*.json"))
runner = CliRunner()


def silicon_csv() -> Path:
    return Path(str(resources.files("aiconfigurator_core") / "systems" / "silicon_sample.csv"))


def test_a_martinez_slice_keeps_the_source_figures_failures_and_gaps() -> None:
    tables = martinez_tables(SLICE)
    hf = tables["martinez2024-tesla-hf-pipeline-codellama-7b-hf.json"]
    assert hf.engine == "hf-pipeline" and hf.gpu.name == "NVIDIA V100"
    assert hf.grid == {"num_gpus": [1, 4], "batch_size": [1, 2, 4, 8, 16, 32, 64, 128, 256]}
    # RQ2/tables/table_batchsizes_tesla_autohf_gpu_1.csv: Codellama-7b-hf,12.3,15.2,17.9,22.1,nan
    point = hf.point({"num_gpus": 1, "batch_size": 8})
    assert point.status == "ok" and point.output_tokens_per_s == pytest.approx(22.1)
    run = point.measurement.runs[0]
    assert run.output_tokens == MARTINEZ_PROMPTS * MARTINEZ_NEW_TOKENS and run.gpus == 1
    assert point.gpu_s == pytest.approx(MARTINEZ_PROMPTS * MARTINEZ_NEW_TOKENS / 22.1)
    # gpu_4: Codellama-7b-hf,11.7,14.4,16.8,16.8,16.4,15.4,16.2,nan,nan
    four = hf.point({"num_gpus": 4, "batch_size": 64})
    assert four.output_tokens_per_s == pytest.approx(16.2) and four.gpus == 4
    assert four.gpu_s == pytest.approx(4 * four.wall_s)
    failed = hf.point({"num_gpus": 1, "batch_size": 16})
    assert failed.status == "oom" and failed.measurement is None
    assert "CUDA out of memory x6" in failed.reason and "gpu_1.csv" in failed.reason
    # The gpu_1 table has no column 256: never run, so outside the replayed space.
    assert {"num_gpus": 1, "batch_size": 256} in hf.source.not_run
    assert hf.source.version == MARTINEZ_COMMIT and hf.source.repository.endswith("infpop")
    assert any("batchSize -> batch_size" in m for m in hf.source.mapping)
    vllm = tables["martinez2024-a100-vllm-bloom-1b7.json"]
    assert vllm.engine == "vllm" and vllm.grid["tensor_parallel_size"] == [1]
    assert (
        vllm.point({"tensor_parallel_size": 1, "prompts_per_call": 1028}).output_tokens_per_s == 816
    )
    assert vllm.baseline == {"tensor_parallel_size": 1, "prompts_per_call": 1028}


def test_the_committed_martinez_tables_are_the_source_figures() -> None:
    # The slice's lines are the appendix's: every committed table agrees with them (the
    # failure messages come from allData.csv, of which the slice holds a few rows).
    for name, table in martinez_tables(SLICE).items():
        committed = read_landscape(EXTERNAL / "martinez2024" / name)
        for point in table.points:
            kept = committed.point(point.knobs)
            assert kept.output_tokens_per_s == point.output_tokens_per_s
            assert (kept.status == "ok") == (point.status == "ok")


def test_a_silicon_slice_derives_throughput_and_latency_from_ttft_and_tpot(tmp_path: Path) -> None:
    rows = list(csv.DictReader(silicon_csv().open()))
    chosen = [
        r
        for r in rows
        if r["model_path"] == "meta-llama/Llama-3.1-70B"
        and r["system"] == "h200_sxm"
        and r["precision"] == "fp8"
        and (r["isl"], r["osl"]) == ("1024", "1024")
        and r["backend"] == "vllm"
    ]
    assert len(chosen) == 20
    sliced = tmp_path / "silicon.csv"
    with sliced.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    ((name, table),) = silicon_tables(sliced, "0.12.0").items()
    assert name == "silicon-h200-meta-llama-llama-3.1-70b-fp8-1024x1024-vllmunknown.json"
    assert table.engine == "vllm-server" and table.grid["tensor_parallel_size"] == [1, 2, 4, 8]
    assert table.workload.requests == 64 and table.source.rows == [r["id"] for r in chosen]
    row = next(r for r in chosen if r["tp_size"] == "4" and r["batch_size"] == "16")
    ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
    e2e = ttft + 1023 * tpot
    point = table.point({"tensor_parallel_size": 4, "concurrency": 16})
    m = point.measurement
    assert m.output_tokens_per_s.median == pytest.approx(16 * 1024 / (e2e / 1000))
    assert m.latency.ttft.p99_ms == pytest.approx(ttft) and m.latency.itl.p50_ms == pytest.approx(
        tpot
    )
    per_gpu = goal(["output_tokens_per_s_per_gpu"]).value(point)
    assert per_gpu == pytest.approx(m.output_tokens_per_s.median / 4)
    # Goodput counts every request (each stands for the table's 64) or none.
    inside = goal(["goodput_tokens_per_s"], [f"itl_p99_ms<={tpot * 1.01}"]).value(point)
    outside = goal(["goodput_tokens_per_s"], [f"itl_p99_ms<={tpot * 0.99}"]).value(point)
    assert inside == pytest.approx(m.output_tokens_per_s.median) and outside == 0


@pytest.mark.parametrize("table", [*MARTINEZ, *SILICON], ids=lambda p: p.stem)
def test_every_imported_table_reads_with_its_source_and_replays_its_grid(table: Path) -> None:
    land = read_landscape(table)
    assert land.source is not None and land.source.files and land.source.mapping
    assert land.point(land.baseline).knobs == land.baseline
    space = prepare(f"replay:{table}", "", "").space
    assert space.default_knobs() == land.baseline
    for gap in land.source.not_run:
        rule = space.violated({**land.baseline, **gap})
        assert rule is not None and rule.because == NOT_RUN


def test_the_committed_silicon_tables_are_the_installed_packages_rows() -> None:
    rows = {r["id"]: r for r in csv.DictReader(silicon_csv().open())}
    for path in SILICON:
        land = read_landscape(path)
        ttfts = sorted(float(rows[i]["silicon_ttft_ms"]) for i in land.source.rows)
        held = sorted(r.latency.ttft.p50_ms for p in land.points for r in p.measurement.runs)
        assert held == pytest.approx(ttfts), path.name


@pytest.mark.parametrize("table", [*MARTINEZ[::10], *SILICON[::10]], ids=lambda p: p.stem)
def test_a_random_search_on_an_imported_table_never_proposes_what_was_not_run(
    table: Path, tmp_path: Path
) -> None:
    land = read_landscape(table)
    outcome = replay_study(table, trials=12, seed=0, run_dir=tmp_path / "run", optimizer="random")
    gaps = {json.dumps(g, sort_keys=True) for g in land.source.not_run}
    assert outcome.results and outcome.best is not None
    for r in outcome.results:
        assert json.dumps(r.knobs, sort_keys=True) not in gaps
        assert r.status == land.point(r.knobs).status


def test_a_silicon_study_per_gpu_within_a_tpot_limit_picks_a_point_that_keeps_it(
    tmp_path: Path,
) -> None:
    table = next(p for p in SILICON if "h200-meta-llama" in p.name and "1024x1024" in p.name)
    land = read_landscape(table)
    fastest = land.optimum(goal(["output_tokens_per_s_per_gpu"]))
    limit = 0.9 * fastest.measurement.latency.itl.p99_ms
    outcome = replay_study(
        table,
        trials=10,
        seed=0,
        run_dir=tmp_path / "run",
        objectives=["output_tokens_per_s_per_gpu"],
        constraints=[f"itl_p99_ms<={limit}"],
    )
    assert outcome.best is not None and outcome.best.knobs != fastest.knobs
    assert land.point(outcome.best.knobs).measurement.latency.itl.p99_ms <= limit


def test_warm_start_from_a_profile_puts_its_best_first(tmp_path: Path) -> None:
    source = EXTERNAL / "martinez2024" / "martinez2024-a100-hf-pipeline-codellama-7b-hf.json"
    target = EXTERNAL / "martinez2024" / "martinez2024-tesla-hf-pipeline-codellama-7b-hf.json"
    profiles = tmp_path / "profiles"
    first = runner.invoke(
        app,
        ["tune", "--engine", f"replay:{source}", "--trials", "4", "--confirm", "0",
         "--run-dir", str(tmp_path / "a"), "--profiles-dir", str(profiles), "--quiet"],
    )  # fmt: skip
    assert first.exit_code == 0, first.output
    assert "as measured by Martinez 2024" in " ".join(first.output.split())
    (profile,) = profiles.rglob("*.json")
    best = json.loads(profile.read_text())["best"]["knobs"]
    assert best != read_landscape(target).baseline  # else it would be the baseline trial
    second = runner.invoke(
        app,
        ["tune", "--engine", f"replay:{target}", "--trials", "3", "--confirm", "0",
         "--warm-start", str(profile), "--run-dir", str(tmp_path / "b"),
         "--profiles-dir", str(profiles), "--quiet"],
    )  # fmt: skip
    assert second.exit_code == 0, second.output
    spec = json.loads((tmp_path / "b" / "study.json").read_text())
    assert spec["warm_start"][0] == best and spec["warm_start_from"] == str(profile)
    trials = [
        json.loads(line) for line in (tmp_path / "b" / "trials.jsonl").read_text().splitlines()
    ]
    assert trials[0]["origin"] == "baseline"
    assert (trials[1]["origin"], trials[1]["knobs"]) == ("warm-start", best)


@pytest.mark.parametrize(
    ("profile", "message"),
    [("missing.json", "no profile at"), ("hf", "none of its configurations fits")],
)
def test_a_warm_start_that_cannot_serve_is_one_line(
    tmp_path: Path, profile: str, message: str
) -> None:
    target = EXTERNAL / "martinez2024" / "martinez2024-tesla-vllm-codellama-7b-hf.json"
    given = tmp_path / profile
    if profile == "hf":
        source = EXTERNAL / "martinez2024" / "martinez2024-a100-hf-pipeline-codellama-7b-hf.json"
        made = runner.invoke(
            app,
            ["tune", "--engine", f"replay:{source}", "--trials", "3", "--confirm", "0",
             "--run-dir", str(tmp_path / "a"), "--profiles-dir", str(tmp_path / "p"), "--quiet"],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        (given,) = (tmp_path / "p").rglob("*.json")
    result = runner.invoke(
        app,
        ["tune", "--engine", f"replay:{target}", "--trials", "3", "--warm-start", str(given),
         "--run-dir", str(tmp_path / "b"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()

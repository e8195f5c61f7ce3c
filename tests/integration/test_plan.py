"""Priors and `tuner plan`: the real AIConfigurator (offline, nothing downloaded) where it is
used, the fake surface's prior (`tuner.testing.FakePrior`) for the ranking's logic."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import CPU, REPO_ROOT
from tuner.cli.app import app
from tuner.errors import TunerError
from tuner.measure.objective import goal, metric, prediction_error
from tuner.predict.prior import (
    BREAKS_LIMIT,
    NO_FIT,
    Belief,
    candidates,
    measured_prior,
    rank,
    rerank,
    with_margin,
)
from tuner.profiles.profile import profile_path, read_profile, write_profile
from tuner.specs.knobs import Catalogue
from tuner.specs.space import resolve
from tuner.testing import FAKE_CATALOGUE, FakePrior, surface, surface_result

runner = CliRunner()
ROOT = REPO_ROOT
SILICON = ROOT / "benchmarks/data/external/aiconfigurator-silicon"
H200_70B = SILICON / "silicon-h200-meta-llama-llama-3.1-70b-fp8-1024x1024-vllmunknown.json"


def fake_space():  # type: ignore[no-untyped-def]
    return resolve(Catalogue.model_validate(FAKE_CATALOGUE), CPU)


def test_a_ranking_puts_the_best_predicted_first_then_broken_limits_then_out_of_memory() -> None:
    space = fake_space()
    prior = FakePrior(unknown=[{"kernel": "tiled"}])
    configurations = candidates(space, prior.covers)
    assert {c["kernel"] for c in configurations} == {"basic", "fused", "tiled"}
    ranking = rank(
        prior, configurations, goal(["output_tokens_per_s"], ["output_tokens_per_s>=10000"])
    )
    assert ranking.ranked, "the fake surface has predictions"
    assert all(r.knobs["kernel"] != "tiled" for r in ranking.ranked)  # nothing to say: left out
    statuses = [r.status for r in ranking.ranked]
    assert "oom" in statuses and statuses.index("oom") >= ranking.kept
    assert statuses[statuses.index("oom") :] == ["oom"] * statuses.count("oom")
    kept = [surface(r.knobs) or 0.0 for r in ranking.ranked[: ranking.kept]]
    assert kept == sorted(kept, reverse=True) and min(kept) >= 10000
    broken = ranking.ranked[ranking.kept : statuses.index("oom")]
    assert broken and all((surface(r.knobs) or 0.0) < 10000 for r in broken)
    assert ranking.starts(2) == [dict(r.knobs) for r in ranking.ranked[:2]]
    # The prediction of a configuration that differs only in knobs the prior does not read.
    first = ranking.ranked[0]
    other = {**first.knobs, "cache": "static"}
    assert ranking.prediction(other) == first.prediction


def test_the_prediction_error_is_the_median_absolute_percentage_error() -> None:
    space = fake_space()
    exact, off = FakePrior(), FakePrior(error=0.25)
    configurations = candidates(space, exact.covers)[:6]
    measured = rank(exact, configurations, goal()).ranked
    predicted = {
        json.dumps(r.knobs): r.prediction for r in rank(off, configurations, goal()).ranked
    }
    beside = [r.model_copy(update={"prediction": predicted[json.dumps(r.knobs)]}) for r in measured]
    errors = prediction_error(beside, ["output_tokens_per_s"])
    assert errors["output_tokens_per_s"] == pytest.approx(25.0, abs=0.5)


def test_a_table_of_another_gpu_is_a_prior_over_its_points() -> None:
    prior = measured_prior(H200_70B)
    assert prior.covers == {"tensor_parallel_size", "concurrency"}
    found = prior.predict({"tensor_parallel_size": 4, "concurrency": 64, "block_size": 16})
    assert found is not None and found.status == "ok"
    assert found.output_tokens_per_s == pytest.approx(4 * 980.9, rel=0.01)  # 980.9 per GPU
    assert prior.predict({"tensor_parallel_size": 3, "concurrency": 64}) is None


def test_aiconfigurator_predicts_a_silicon_table_near_its_measurements() -> None:
    """NVIDIA's model on NVIDIA's measurements of Llama 3.1 70B fp8 on H200 (what it is
    calibrated on: this is a check of the mapping, not of the model)."""
    from tuner.predict.aiconfigurator import Workload, prior_for
    from tuner.replay.landscape import read_landscape

    table = read_landscape(H200_70B)
    w = table.workload
    prior = prior_for(
        "vllm-server", table.model, table.gpu.slug,
        Workload(w.requests or 0, int(w.input_tokens), int(w.output_tokens)),  # type: ignore[arg-type]
        precision=table.versions["precision"],
    )  # fmt: skip
    for knobs in (
        {"tensor_parallel_size": 4, "concurrency": 64},
        {"tensor_parallel_size": 1, "concurrency": 8},
    ):
        predicted = prior.predict(knobs)
        point = table.point(knobs)
        assert predicted is not None and predicted.output_tokens_per_s and point is not None
        assert predicted.output_tokens_per_s == pytest.approx(point.output_tokens_per_s, rel=0.2)


def plan_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["plan", "--profiles-dir", str(tmp_path / "profiles"), *extra]


def test_plan_ranks_8b_on_an_h200_over_every_knob_and_exports_them_all(tmp_path: Path) -> None:
    args = plan_args(
        tmp_path, "--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h200",
        "--input-tokens", "1024", "--output-tokens", "1024", "--requests", "256",
        "--slo", "itl_p99_ms<=10",
    )  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "predicted (not measured)" in result.output
    said = re.search(r"planned (\d+) configurations \((\d+) the model tells apart\)", result.output)
    assert said and int(said[1]) == 64 and 0 < int(said[2]) <= 64
    (path,) = (tmp_path / "profiles").glob("*/*/*.json")
    assert path.parent.parent.name == "nvidia-h200" and path.stem.endswith("--predicted")
    profile = read_profile(path)
    assert profile.predicted and "AIConfigurator 0.12.0" in profile.predicted
    knobs = profile.best.knobs
    assert set(knobs) == {
        "tensor_parallel_size", "pipeline_parallel_size", "max_num_seqs",
        "max_num_batched_tokens", "kv_cache_dtype",
    }  # fmt: skip
    assert profile.best.measurement.latency.itl.p99_ms <= 10  # type: ignore[union-attr]
    # The limit binds: vLLM's defaults on an H200 (1024 sequences, 8192 batched tokens) break it.
    assert profile.baseline is not None and profile.baseline.knobs["max_num_seqs"] == 1024
    assert profile.baseline.measurement.latency.itl.p99_ms > 10  # type: ignore[union-attr]
    sol = profile.best.prediction.speed_of_light_tokens_per_s  # type: ignore[union-attr]
    assert sol is not None and sol > profile.best.measurement.output_tokens_per_s.median  # type: ignore[union-attr]
    exported = runner.invoke(app, ["profile", "export", "--format", "vllm-args", str(path)])
    assert exported.exit_code == 0, exported.output
    flags = exported.output.split()[::2]
    assert flags == [
        "--tensor-parallel-size", "--pipeline-parallel-size", "--max-num-seqs",
        "--max-num-batched-tokens", "--kv-cache-dtype",
    ]  # fmt: skip
    assert exported.output.split()[5] == str(knobs["max_num_seqs"])


def test_a_plans_grid_spans_the_layouts_within_the_gpus_and_expert_parallelism_for_moe() -> None:
    from tuner.predict.plan import grid

    dense = grid(4, {})
    layouts = {(c["tensor_parallel_size"], c["pipeline_parallel_size"]) for c in dense}
    assert layouts == {(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (4, 1)}
    assert len(dense) == 6 * 8 * 4 * 2 and "data_parallel_size" not in dense[0]
    moe = grid(2, {"max_num_seqs": [64]}, moe=True)
    assert {c["max_num_seqs"] for c in moe} == {64}
    assert all(
        c["tensor_parallel_size"] * c["data_parallel_size"] > 1
        for c in moe
        if c["enable_expert_parallel"]
    )  # expert parallelism over one GPU is the same as none: kept once
    assert any(c["enable_expert_parallel"] for c in moe)
    assert (
        max(
            c["tensor_parallel_size"] * c["pipeline_parallel_size"] * c["data_parallel_size"]
            for c in moe
        )
        == 2
    )


@pytest.mark.slow
def test_plan_keeps_a_tpot_limit_for_70b_on_8_h100s(tmp_path: Path) -> None:
    args = plan_args(
        tmp_path, "--model", "meta-llama/Meta-Llama-3.1-70B", "--gpu", "h100", "--gpus", "8",
        "--slo", "itl_p99_ms<=30", "--grid", "concurrency=64", "--json",
    )  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    profile = json.loads(result.output)
    assert profile["gpu"] == {**profile["gpu"], "slug": "nvidia-h100-80gb-hbm3", "count": 8}
    best = profile["best"]
    assert best["measurement"]["latency"]["itl"]["p99_ms"] <= 30
    assert best["knobs"]["tensor_parallel_size"] > 1  # bf16 70B does not fit on one H100
    assert profile["trials"]["by_status"]["oom"] >= 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "v100"], "covers h100"),
        (["--model", "bigscience/bloom-1b7", "--gpu", "a100"], "no config for model"),
        # Its config file ships, but AIConfigurator would download it: nothing is downloaded.
        (["--model", "mistralai/Mixtral-8x7B-v0.1", "--gpu", "a100"], "reads offline"),
        (["--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h100", "--engine", "hf"], "vLLM"),
        (
            ["--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h100", "--grid", "dtype=x"],
            "reads",
        ),
    ],
)
def test_what_the_model_does_not_cover_is_one_line(
    extra: list[str], says: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, plan_args(tmp_path, *extra))
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "profiles").exists()


def test_a_predicted_profile_never_replaces_a_measured_one(tmp_path: Path) -> None:
    measured = next((ROOT / "profiles").glob("cpu/vllm-server/*.json"))
    held = read_profile(measured)
    target = tmp_path / "held.json"
    shutil.copy(measured, target)
    predicted = held.model_copy(update={"predicted": "a performance model"})
    with pytest.raises(TunerError, match="measured profile; a prediction does not replace it"):
        write_profile(predicted, target)
    assert read_profile(target).predicted is None
    # Its own name says what it is: a study's profile and a plan's never share a file.
    assert profile_path(tmp_path, predicted) != profile_path(tmp_path, held)
    assert profile_path(tmp_path, predicted).stem.endswith("--predicted")


@pytest.mark.slow
def test_tune_with_the_prior_starts_from_its_best_and_keeps_each_prediction(
    tmp_path: Path,
) -> None:
    """With piBO too; the report plots predicted against measured, and the report and the
    profile give the best's share of its speed-of-light bound."""
    args = [
        "tune", "--engine", f"replay:{H200_70B}", "--objective", "output_tokens_per_s_per_gpu",
        "--slo", "itl_p99_ms<=20", "--trials", "6", "--confirm", "0", "--prior", "aiconfigurator",
        "--pibo", "--optimizer", "gp", "--run-dir", str(tmp_path / "run"),
        "--profiles-dir", str(tmp_path / "profiles"), "--json",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").open()]
    # Predict, then measure: the prior's 3 best first, then the engine's defaults.
    assert [t["origin"] for t in trials[:4]] == ["prior", "prior", "prior", "baseline"]
    assert all(t["prediction"] is not None for t in trials)
    # Each measured trial as a share of its speed-of-light bound (AIConfigurator's SOL mode).
    for t in trials:
        sol = t["prediction"]["speed_of_light_tokens_per_s"]
        assert 0 < t["measurement"]["output_tokens_per_s"]["median"] / sol < 1
    spec = json.loads((tmp_path / "run" / "study.json").read_text())
    assert [t["knobs"] for t in trials[:3]] == spec["prior"]["starts"]
    # The prior's first pick is the one it predicts best within the limit.
    first = spec["prior"]["predicted"][0]
    assert first["knobs"] == spec["prior"]["starts"][0]
    assert first["prediction"]["measurement"]["latency"]["itl"]["p99_ms"] <= 20
    (path,) = (tmp_path / "profiles").glob("*/*/*.json")
    profile = json.loads(path.read_text())
    assert profile["prior"]["by"].startswith("AIConfigurator 0.12.0")
    assert profile["prior"]["starts"] == 3
    assert 0 <= profile["prior"]["error_pct"]["output_tokens_per_s_per_gpu"] < 30
    assert spec["pibo"] is True
    shown = runner.invoke(app, ["profile", "show", str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "prior error" in shown.output and "of speed of light" in shown.output
    result = runner.invoke(app, ["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "(piBO)" in report and "| of SOL |" in report and "| of speed of light |" in report
    assert (tmp_path / "rep" / "predicted-measured.png").stat().st_size > 0


def test_pibo_without_a_prior_is_one_line(tmp_path: Path) -> None:
    args = ["tune", "--engine", f"replay:{H200_70B}", "--pibo", "--run-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: --pibo weights the search by a prior: give --prior too"


def test_pibo_with_an_optimizer_it_cannot_weight_is_one_line(tmp_path: Path) -> None:
    args = ["tune", "--engine", f"replay:{H200_70B}", "--prior", "aiconfigurator", "--pibo"]
    result = runner.invoke(app, [*args, "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --pibo weights the acquisition of gp or rf, not of ladder: add --optimizer gp"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tune_with_the_prior_on_a_cpu_study_is_one_line_and_goes_on_cold(
    tmp_path: Path,
) -> None:
    """A real transformers study on this CPU: AIConfigurator models vLLM on NVIDIA GPUs."""
    args = [
        "tune", "--engine", "hf", "--workload", "synthetic",
        "--requests", "8", "--output-tokens", "4", "--trials", "2", "--confirm", "0",
        "--prior", "aiconfigurator", "--run-dir", str(tmp_path / "run"),
        "--profiles-dir", str(tmp_path / "profiles"), "--run-time-limit", "5",
        "--warmup-time-limit", "5",
    ]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "--prior aiconfigurator" in line]
    assert len(said) == 1 and "starts cold" in said[0], result.output
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").open()]
    assert len(trials) == 2 and all(t["origin"] != "prior" for t in trials)
    assert json.loads((tmp_path / "run" / "study.json").read_text())["prior"] is None


def test_without_the_plan_extra_the_prior_is_one_line_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "aiconfigurator.cli", None)  # import fails as if absent
    result = runner.invoke(
        app, plan_args(tmp_path, "--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h200")
    )
    assert result.exit_code == 2, result.output
    assert 'pip install -e ".[plan]"' in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_belief_weighs_predictions_for_pibo() -> None:
    space = fake_space()
    prior = FakePrior(unknown=[{"kernel": "tiled"}])
    wanted = goal(["output_tokens_per_s"], ["output_tokens_per_s>=10000"])
    ranking = rank(prior, candidates(space, prior.covers), wanted)
    belief = Belief(ranking.plan(0), wanted)
    best, *_ = ranking.ranked
    assert belief(best.knobs) == 1.0
    kept = ranking.ranked[1 : ranking.kept]
    assert all(
        belief(r.knobs) == pytest.approx(surface(r.knobs) / surface(best.knobs), rel=1e-3)
        for r in kept
    )
    oom = next(r for r in ranking.ranked if r.status == "oom")
    assert belief(oom.knobs) == NO_FIT
    broken = ranking.ranked[ranking.kept]
    assert broken.status == "ok" and belief(broken.knobs) <= BREAKS_LIMIT
    # A configuration the prior said nothing of weighs the median: no opinion.
    assert belief({"batch_size": 48, "kernel": "tiled"}) == belief.neutral
    assert NO_FIT < belief.neutral < 1.0


def test_pibo_steers_the_model_based_proposals_toward_the_prior(tmp_path: Path) -> None:
    """SMAC's piBO with a prior over whole configurations: past the initial design, the
    proposals come from where the prior puts the optimum, and a prior that says nothing
    leaves the proposals as they are."""
    from tuner.optimizers import make_optimizer

    space = fake_space()
    wanted = goal()

    def search(prior):  # type: ignore[no-untyped-def]
        optimizer = make_optimizer(
            "gp", space, budget=40, seed=0, output_dir=tmp_path / "smac", prior=prior
        )
        proposed = []
        for number in range(14):
            proposal = optimizer.ask()
            optimizer.tell(
                proposal.handle, wanted.losses(surface_result(number, "x", proposal.knobs))
            )
            proposed.append(proposal)
        return proposed

    liked = lambda knobs: 1.0 if knobs["kernel"] == "tiled" else 1e-6  # noqa: E731
    guided = [p for p in search(liked) if p.origin not in ("sobol", "initial design")]
    assert len(guided) >= 3
    assert all(p.knobs["kernel"] == "tiled" for p in guided), [p.knobs for p in guided]
    flat = search(lambda knobs: 1.0)
    cold = search(None)
    assert [p.knobs for p in flat] == [p.knobs for p in cold]


def test_a_combination_the_model_refuses_gets_no_prediction() -> None:
    """AIConfigurator refuses MiniMax M2.5 in nvfp4 over 8 GPUs (its MoE layer's width does
    not split into quantization blocks): that configuration gets no prediction, and the others
    still do."""
    from tuner.predict.aiconfigurator import Workload, prior_for

    prior = prior_for(
        "vllm-server", "MiniMaxAI/MiniMax-M2.5", "b200_sxm", Workload(256, 1024, 1024),
        precision="fp4",
    )  # fmt: skip
    assert prior.predict({"tensor_parallel_size": 8, "concurrency": 4}) is None
    ((knobs, why),) = prior.refused.items()
    assert knobs == "tensor_parallel_size=8 concurrency=4" and "moe_tp_size=8" in why
    found = prior.predict({"tensor_parallel_size": 4, "concurrency": 4})
    assert found is not None and found.status == "ok"


def test_a_margin_starts_only_from_what_keeps_each_limit_by_it() -> None:
    space = fake_space()
    prior = FakePrior()
    wanted = goal(["output_tokens_per_s"], ["output_tokens_per_s>=40000"])
    plan = rank(prior, candidates(space, prior.covers), wanted).plan(3)
    inward = with_margin(wanted, 0.2)
    assert [c.text for c in inward.constraints] == ["output_tokens_per_s>=48000"]
    again = rerank(plan, inward)
    assert again.starts and all((surface(k) or 0.0) >= 48000 for k in again.starts)
    assert any((surface(k) or 0.0) < 48000 for k in plan.starts)
    assert len(again.predicted) == len(plan.predicted)


def test_estimates_are_kept_on_disk_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    from tuner.predict.aiconfigurator import Estimator

    args = {
        "model_path": "meta-llama/Meta-Llama-3.1-8B",
        "system_name": "h200_sxm",
        "backend_name": "vllm",
        "isl": 1024,
        "osl": 128,
        "batch_size": 8,
        "tp_size": 1,
        "pp_size": 1,
        "attention_dp_size": 1,
    }
    cache = tmp_path / "estimates.jsonl"
    first = Estimator("h200_sxm", cache)
    found = first(args)
    assert first.calls == 1 and found.failure is None and found.ttft > 0 and found.tpot > 0
    assert first(args) == found and first.calls == 1
    oom = first({**args, "model_path": "meta-llama/Meta-Llama-3.1-405B"})
    assert oom.failure == "oom" and first.calls == 2

    with open(cache, "a") as f:
        f.write('{"key": "torn')  # a process stopped mid-write
    again = Estimator("h200_sxm", cache)
    assert again(args) == found and again.calls == 0
    assert again({**args, "model_path": "meta-llama/Meta-Llama-3.1-405B"}) == oom
    assert again({**args, "batch_size": 16}).tpot != found.tpot and again.calls == 1
    third = Estimator("h200_sxm", cache)  # the line after the torn one was kept whole
    assert third({**args, "batch_size": 16}) == again({**args, "batch_size": 16})
    assert third.calls == 0


# -- capacity ------------------------------------------------------------------------------------


def served(knobs: dict, ttft_ms: float, tpot_ms: float, concurrency: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from tuner.measure.measurement import Measurement, alike_run
    from tuner.measure.trial import TrialResult
    from tuner.specs.knobs import gpus_of

    run = alike_run(
        ttft_ms, tpot_ms, requests=256, isl=1024, osl=128, concurrency=concurrency,
        gpus=gpus_of(knobs),
    )  # fmt: skip
    return TrialResult(
        number=0, origin="predicted", knobs=knobs, status="ok", wall_s=0.0,
        started_at=datetime.now(UTC), measurement=Measurement.from_runs(run, [run]),
    )  # fmt: skip


def test_capacity_takes_the_fewest_gpus_not_the_fastest_replica() -> None:
    from tuner.profiles.capacity import capacity_of, fewest_gpus

    one = served({"tensor_parallel_size": 1}, 100, 10, concurrency=16)
    two = served({"tensor_parallel_size": 2}, 60, 5.5, concurrency=16)
    per_one, per_two = (capacity_of(1.0, r).per_replica for r in (one, two))  # type: ignore[union-attr]
    assert 1.5 * per_one < per_two < 2 * per_one  # faster a replica, slower a GPU
    rate = 2.5 * per_one  # 3 replicas of tp1 (3 GPUs), or 2 of tp2 (4 GPUs)
    assert per_two < rate < 2 * per_two
    found = fewest_gpus(rate, [two, one])
    assert (found.replicas, found.gpus_per_replica, found.gpus) == (3, 1, 3)
    assert found.knobs == {"tensor_parallel_size": 1}
    assert "3 GPUs = 3 replicas x 1 GPU" in found.text(["itl_p99_ms<=10"])
    assert fewest_gpus(per_one, [one]).replicas == 1  # exactly its rate: one replica


def test_plan_for_a_rate_names_gpus_replicas_and_the_configuration(tmp_path: Path) -> None:
    args = plan_args(
        tmp_path, "--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h200", "--gpus", "2",
        "--input-tokens", "1024", "--output-tokens", "1024", "--slo", "itl_p99_ms<=10",
        "--rate", "20", "--json",
    )  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    capacity = found["capacity"]
    assert capacity["rate"] == 20 and capacity["gpus_per_replica"] <= 2
    assert capacity["replicas"] * capacity["per_replica"] >= 20
    assert (capacity["replicas"] - 1) * capacity["per_replica"] < 20
    assert capacity["gpus"] == capacity["replicas"] * capacity["gpus_per_replica"]
    assert "max_num_seqs" in capacity["knobs"] and found["workload"]["requests"] == 1024


def test_a_server_profile_gives_the_replicas_for_a_rate_and_an_offline_one_says_it_cannot(
    tmp_path: Path,
) -> None:
    served_by = next((ROOT / "profiles").glob("cpu/vllm-server/*.json"))
    per = read_profile(served_by).best.measurement.requests_per_s.median  # type: ignore[union-attr]
    result = runner.invoke(
        app, ["profile", "show", str(served_by), "--rate", str(per * 2.5), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["capacity"]["replicas"] == 3
    shown = runner.invoke(app, ["profile", "show", str(served_by), "--rate", "1"])
    assert shown.exit_code == 0 and "1 requests/s" in shown.output and "1 replica" in shown.output
    offline = next((ROOT / "profiles").glob("cpu/vllm/*.json"))
    refused = runner.invoke(app, ["profile", "show", str(offline), "--rate", "1"])
    assert refused.exit_code == 2 and "server engine" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def hf_cache_with(root: Path, repo: str, config: dict) -> Path:
    """A local Hugging Face cache holding only `repo`'s config.json."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize("layers", [32, 40])
def test_a_model_with_a_shipped_configs_shape_is_planned_as_it_and_the_plan_says_so(
    layers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.resources import files

    shipped = files("aiconfigurator_core") / "model_configs"
    config = json.loads((shipped / "meta-llama--Meta-Llama-3.1-8B_config.json").read_text())
    # Meta-Llama-3-8B: the same shape, a shorter context and no RoPE scaling.
    config.update(max_position_embeddings=8192, rope_scaling=None, num_hidden_layers=layers)
    cache = hf_cache_with(tmp_path / "hub", "meta-llama/Meta-Llama-3-8B", config)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    args = plan_args(
        tmp_path, "--model", "meta-llama/Meta-Llama-3-8B", "--gpu", "h200",
        "--grid", "max_num_seqs=64", "--grid", "max_num_batched_tokens=8192",
    )  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    if layers == 32:
        assert (
            "meta-llama/Meta-Llama-3-8B as meta-llama/Meta-Llama-3.1-8B: every shape field" in first
        )
    else:  # one shape field differs: predicted from its own config, and said so
        assert "meta-llama/Meta-Llama-3-8B from its config.json at" in first
        assert "as meta-llama/Meta-Llama-3.1-8B" not in result.output


def test_a_plan_calibrated_by_tables_of_its_gpu_corrects_each_prediction(tmp_path: Path) -> None:
    from tuner.predict.plan import PlanRequest, make_plan
    from tuner.replay.landscape import read_landscape
    from tuner.specs.workloads import load_workload

    qwen = SILICON / "silicon-h100-qwen-qwen3-32b-default-1024x128-vllm0.12.0.json"
    table = read_landscape(qwen)
    workload = load_workload("synthetic", requests=256, output_tokens=128)
    workload = workload.model_copy(update={"input_tokens": 1024})
    given = {
        "tensor_parallel_size": [2, 4], "concurrency": [8, 16, 32, 64, 128],
        "pipeline_parallel_size": [1], "max_num_batched_tokens": [None], "kv_cache_dtype": ["auto"],
    }  # fmt: skip
    target = goal(["output_tokens_per_s_per_gpu"], [])
    plans = {
        how: make_plan(
            PlanRequest(
                "vllm-server", "Qwen/Qwen3-32B", "h100", 4, workload, target, given=given,
                calibrate=paths,
            )
        )
        for how, paths in (("raw", []), ("calibrated", [qwen]))
    }  # fmt: skip
    assert plans["calibrated"].ranking.label.endswith("calibrated on 15 measured points of 1 table")
    assert "calibrated" in (plans["calibrated"].profile.predicted or "")
    ttft = metric("ttft_p99_ms")
    errors = {}
    for how, made in plans.items():
        pairs = []
        for r in made.ranking.ranked:
            point = table.point({k: r.knobs[k] for k in ("tensor_parallel_size", "concurrency")})
            pairs.append(abs(ttft.of(r.measurement) / ttft.of(point.measurement) - 1))  # type: ignore[operator]
        assert len(pairs) == 10
        errors[how] = statistics.median(pairs)
    assert errors["calibrated"] < errors["raw"] / 2  # fitted on the very points: in sample

    other_gpu = SILICON / "silicon-h200-meta-llama-llama-3.1-70b-fp8-1024x1024-vllmunknown.json"
    args = ["--model", "Qwen/Qwen3-32B", "--gpu", "h100", "--calibrate", str(other_gpu)]
    refused = runner.invoke(app, plan_args(tmp_path, *args))
    assert refused.exit_code == 2 and "not on this plan's GPU" in refused.output
    assert len(refused.output.strip().splitlines()) == 1

"""The command line, through typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.profiles.profile import SCHEMA_FILE, read_profile

runner = CliRunner()
FAKE = "tuner.testing:FakeEngine"


def fake_args(model: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--engine",
        FAKE,
        "--model",
        str(model),
        "--workload",
        "synthetic",
        "--requests",
        "8",
        "--output-tokens",
        "4",
        "--run-time-limit",
        "5",
        "--warmup-time-limit",
        "5",
        "--run-dir",
        str(tmp_path / "run"),
        "--profiles-dir",
        str(tmp_path / "profiles"),
        *extra,
    ]


def test_tune_writes_a_profile_that_validates_against_the_shipped_schema(
    fake_model: Path, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["tune", *fake_args(fake_model, tmp_path, "--trials", "5", "--json")]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    path = Path(data["profile"])
    assert path == tmp_path / "profiles" / path.relative_to(tmp_path / "profiles")
    assert path.name == f"{Path(fake_model).name}--synthetic-8x4.json"
    profile = json.loads(path.read_text())
    jsonschema.validate(profile, json.loads(SCHEMA_FILE.read_text()))
    # Five searched, then the best two measured again.
    assert [t["origin"] for t in data["trials"]].count("confirm") == 2
    assert len(data["trials"]) == 5 + 2 and data["trials"][0]["origin"] == "baseline"
    assert profile["speedup"] >= 1.0

    listed = runner.invoke(app, ["profile", "list", "--dir", str(tmp_path / "profiles"), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["path"] == str(path)
    shown = runner.invoke(app, ["profile", "show", str(path)])
    assert shown.exit_code == 0 and "best knobs" in shown.stdout

    # --resume with a larger budget continues the same run directory.
    more = runner.invoke(
        app,
        [
            "tune",
            "--resume",
            str(tmp_path / "run"),
            "--trials",
            "7",
            "--profiles-dir",
            str(tmp_path / "profiles"),
            "--json",
        ],
    )
    assert more.exit_code == 0, more.output
    trials = json.loads(more.stdout)["trials"]
    assert [t["number"] for t in trials] == list(range(len(trials)))
    # Seven searched in all; a configuration that became one of the best two is confirmed.
    assert len([t for t in trials if t["origin"] != "confirm"]) == 7


def test_tune_shows_progress_and_a_summary(fake_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["tune", *fake_args(fake_model, tmp_path, "--trials", "3")])
    assert result.exit_code == 0, result.output
    assert "#0   ok" in result.stderr and "baseline" in result.stderr
    assert "trials" in result.stdout and "speed-up" in result.stdout
    assert "profile written:" in result.stdout
    report = tmp_path / "run" / "report" / "report.html"
    assert f"report written: {report}" in result.stdout.replace("\n", "")
    assert report.is_file() and (tmp_path / "run" / "machine.json").is_file()


def test_an_slo_study_reports_infeasible_trials_and_picks_within_the_limit(
    fake_model: Path, tmp_path: Path
) -> None:
    # The fake server's first token waits for the batches before it: one request at a time
    # (the baseline) takes milliseconds per batch, one batch of all eight well under one.
    args = fake_args(fake_model, tmp_path, "--trials", "8", "--optimizer", "random", "--json")
    args[1] = "tuner.testing:FakeServer"
    result = runner.invoke(
        app, ["tune", *args, "--slo", "ttft_p99_ms<=2", "--objective", "goodput"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["objectives"] == ["goodput"] and data["constraints"] == ["ttft_p99_ms<=2"]
    baseline = data["trials"][0]
    assert baseline["knobs"]["batch_size"] == 1
    assert re.match(
        r"p99 TTFT [\d,]+ ms( \(with its \d+% spread, [\d,]+ ms\))? > 2 ms$", baseline["infeasible"]
    )
    assert Path(data["profile"]).name.endswith("--synthetic-8x4--goodput--ttft_p99_ms-le-2.json")
    profile = read_profile(Path(data["profile"]))
    ttft = profile.best.measurement.latency.ttft  # type: ignore[union-attr]
    assert ttft is not None and ttft.p99_ms <= 2
    assert profile.goal().breaches(profile.best.measurement) == []


def test_a_study_with_no_configuration_within_the_limits_is_exit_1_and_no_profile(
    fake_model: Path, tmp_path: Path
) -> None:
    args = fake_args(fake_model, tmp_path, "--trials", "3")
    args[1] = "tuner.testing:FakeServer"
    result = runner.invoke(app, ["tune", *args, "--slo", "e2e_p50_ms<=0.000001"])
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert re.search(
        r"no configuration met the limits \(e2e_p50_ms<=1e-06\): [1-3] of 3 trials", said
    )
    assert "p50 E2E latency" in result.stdout  # each trial's reason, in the table
    assert not list((tmp_path / "profiles").rglob("*.json"))


def test_bench_measures_one_configuration(fake_model: Path, tmp_path: Path) -> None:
    args = fake_args(fake_model, tmp_path)[:-4]  # no run or profiles dir for bench
    result = runner.invoke(
        app, ["bench", *args, "--set", "batch_size=8", "--set", "kernel=fused", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["knobs"] == {"batch_size": 8, "kernel": "fused", "cache": "dynamic"}
    # 3 repeats, and 3 more per re-measure (millisecond fake runs spread on a loaded machine).
    m = data["measurement"]
    assert data["status"] == "ok" and len(m["runs"]) == 3 * (1 + m["remeasured"])
    oom = runner.invoke(app, ["bench", *args, "--set", "batch_size=200"])
    assert oom.exit_code == 1
    assert "oom: EngineOutOfMemory: fake engine: batch_size=200 does not fit" in oom.stderr


BAD_INPUT = [
    (["tune", "--engine", "nope"], "unknown engine 'nope'; known engines: hf, hf-pipeline"),
    (["tune", "--set", "bsz=4"], "has no knob 'bsz'; its knobs: batch_size, kernel"),
    (["tune", "--set", "batch_size=0"], "batch_size=0 is outside 1..256 (log)"),
    (["tune", "--set", "kernel=magic"], "kernel=magic is not one of: basic, fused, tiled"),
    (
        ["tune", "--workload", "nope"],
        "unknown workload 'nope'; known: humaneval, shared-prefix, synthetic",
    ),
    (["tune", "--optimizer", "tpe"], "unknown optimizer 'tpe'; known: ladder, gp, rf, random"),
    (
        ["tune", "--slo", "ttft_p99_ms<=500"],
        "ttft_p99_ms needs the latency of each request, which tuner.testing:FakeEngine does not",
    ),
    (["tune", "--rate-search"], "--rate-search looks for the highest rate within a limit: give"),
    (["tune", "--objective", "goodput"], "goodput counts the requests that meet a latency limit"),
    (["tune", "--slo", "ttft below 500"], "cannot read the limit 'ttft below 500': write it as"),
    (["tune", "--max-power-w", "300"], "peak_power_w needs GPU telemetry, and there is none here"),
    (
        [
            "tune",
            "--objective",
            "requests_per_s",
            "--objective",
            "output_tokens_per_s",
            "--optimizer",
            "hyperopt-tpe",
        ],
        "hyperopt-tpe optimizes one objective; for a Pareto front use ladder, gp, rf, random",
    ),
    (
        ["bench", "--set", "cache=dynamic", "--set", "compile=true"],
        "compile applies only when cache=static",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    fake_model: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    command, *rest = args
    base = (
        fake_args(fake_model, tmp_path)
        if command == "tune"
        else fake_args(fake_model, tmp_path)[:-4]
    )
    result = runner.invoke(app, [command, *base, *rest])
    assert_one_line_error(result, message)
    assert not list((tmp_path / "profiles").rglob("*.json"))


def test_unknown_model_malformed_workload_and_unwritable_dirs(
    fake_model: Path, tmp_path: Path
) -> None:
    base = fake_args(fake_model, tmp_path)
    result = runner.invoke(app, ["tune", *base, "--model", str(tmp_path / "no-model")])
    assert_one_line_error(result, "not found: no such folder")
    result = runner.invoke(app, ["tune", *base, "--model", "acme/not-cached"])
    assert_one_line_error(result, "is not in the local Hugging Face cache")

    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    result = runner.invoke(app, ["tune", *base, "--workload", f"jsonl:{bad}"])
    assert_one_line_error(result, 'prompts.jsonl line 2: expected an object with a "prompt"')

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["tune", *base, "--profiles-dir", str(blocker / "profiles")])
    assert_one_line_error(result, "cannot write to the profiles folder")
    result = runner.invoke(app, ["tune", *base[:-4], "--run-dir", str(blocker / "run")])
    assert_one_line_error(result, "cannot write to the run directory")
    assert not (blocker.parent / "profiles").exists() or not list(
        (blocker.parent / "profiles").rglob("*.json")
    )


def test_bad_profiles_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"schema_version": 99}')
    assert_one_line_error(
        runner.invoke(app, ["profile", "show", str(path)]),
        "schema_version 99 is not one this tuner reads",
    )


def test_gpus_and_knobs() -> None:
    gpus = runner.invoke(app, ["gpus", "--json"])
    assert gpus.exit_code == 0
    data = json.loads(gpus.stdout)
    assert data["slug"] == ("cpu" if not data["gpus"] else data["slug"])
    assert data["cpu_cores"] >= 1
    knobs = runner.invoke(app, ["knobs", "--engine", "hf", "--json"])
    assert knobs.exit_code == 0
    assert json.loads(knobs.stdout)["defaults"]["batch_size"] == 1
    assert "--set" in runner.invoke(app, ["tune", "--help"]).stdout
    help_text = " ".join(runner.invoke(app, ["--help"]).stdout.split())
    assert "Exit codes: 0 done" in help_text and "2 bad input" in help_text


def assert_one_line_error(result, message: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    assert "Traceback" not in result.output


def test_without_nvml_the_study_runs_and_says_so_once(fake_model: Path, tmp_path: Path) -> None:
    from tuner.hardware.machine import detect_hardware

    if detect_hardware().gpus:
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["tune", *fake_args(fake_model, tmp_path, "--trials", "3")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("no GPU telemetry") == 1
    trials = [json.loads(line) for line in (tmp_path / "run" / "trials.jsonl").open()]
    assert len([t for t in trials if t["origin"] != "confirm"]) == 3
    # The fake surface runs out of memory at large batches, which the search may propose.
    measured = [t for t in trials if t["measurement"] is not None]
    assert measured and all(t["status"] == "oom" for t in trials if t not in measured)
    for trial in measured:
        assert trial["measurement"]["energy"] is None
        assert trial["measurement"]["energy_note"] == "the engine runs on no GPU"
        assert trial["measurement"]["runs"][0]["telemetry"] is None


def test_the_trials_table_is_readable_at_80_columns(tmp_path: Path) -> None:
    # CI logs: rich sees no terminal and draws 80 columns; every knob of the best trial must
    # be there as name=value, not squeezed to "…".
    table = REPO_ROOT / "benchmarks" / "data" / "cpu-hf-tiny-llama-humaneval.json"
    args = [
        "tune",
        "--engine",
        f"replay:{table}",
        "--trials",
        "6",
        "--run-dir",
        str(tmp_path / "r"),
        "--profiles-dir",
        str(tmp_path / "profiles"),
    ]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("trials (* best)")))
    drawn = lines[start:]
    assert max(len(line) for line in drawn) <= 80
    best = next(line for line in drawn if line.split("│")[1:2] and "*" in line.split("│")[1])
    number = int(best.split("│")[1].strip().rstrip("*"))
    run = json.loads((tmp_path / "r" / "trials.jsonl").read_text().splitlines()[number])
    row_text = " ".join(
        line.split("│")[-2].strip() for line in drawn[drawn.index(best) :] if line.startswith("│")
    )
    for name, value in run["knobs"].items():
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        assert f"{name}={shown}" in row_text, (name, row_text)
    assert "…" not in "\n".join(drawn)

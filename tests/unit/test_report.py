"""Reports: plots from real trials (the committed H100 study) and from trials with sampled
GPU telemetry (fake GPUs); Markdown and a self-contained HTML page."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.hardware.telemetry import Sampler
from tuner.measure.measurement import Measurement, Run
from tuner.measure.trial import TrialResult
from tuner.report.plots import pareto_front
from tuner.report.report import write_report
from tuner.study.rundir import TRIALS_FILE
from tuner.testing import FakeClock, FakeGpu

H100_RUN = REPO_ROOT / "reports" / "h100-hf-llama-1b"
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_pareto_front_keeps_points_nothing_beats_on_both() -> None:
    points = [(100.0, 1.0), (200.0, 0.5), (150.0, 0.4), (90.0, 2.0), (200.0, 0.6)]
    assert pareto_front(points) == [(150.0, 0.4), (200.0, 0.5)]


def test_the_committed_h100_study_reports_every_plot(tmp_path: Path) -> None:
    written = write_report(H100_RUN, tmp_path)
    names = {p.name for p in written.images}
    assert names == {"best-so-far.png", "knobs.png", "speed-energy.png", "power-memory.png"}
    assert all(p.read_bytes().startswith(PNG) for p in written.images)
    md = written.markdown.read_text()
    assert "on NVIDIA H100 80GB HBM3" in md and "8,744.9" in md and "137.76x" in md
    assert all(f"]({n})" in md for n in names)
    assert "this study's tuner kept no time series" in md  # recorded before series were kept
    page = written.html.read_text()
    # Self-contained: every image inlined, nothing fetched.
    assert page.count("src='data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=['\"](?!data:)", page)


def _trial(number: int, rate: float, joules: float, clock: FakeClock) -> TrialResult:
    """A trial whose runs carry sampled telemetry from a fake GPU."""
    runs = []
    for _ in range(4):
        gpu = FakeGpu(
            energy_j=itertools.count(0.0, joules * 100),
            power_w=itertools.cycle([250.0, 300.0]),
            memory_used_mib=itertools.count(1000.0, 10.0),
        )
        sampler = Sampler([gpu], clock=clock, background=False)
        sampler.start()
        for _ in range(20):
            clock.advance(0.05)
            sampler.sample()
        telemetry = sampler.stop()
        runs.append(
            Run(
                elapsed_s=1.0,
                requests=10,
                input_tokens=100,
                output_tokens=int(rate),
                truncated=False,
                telemetry=telemetry,
            )
        )
    return TrialResult(
        number=number,
        origin="baseline" if number == 0 else "sobol",
        knobs={"batch_size": 2**number, "kernel": ["basic", "fused"][number % 2]},
        status="ok",
        measurement=Measurement.from_runs(runs[0], runs[1:]),
        wall_s=10.0,
        started_at=datetime.now(UTC),
    )


@pytest.fixture
def gpu_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "study.json").write_text((H100_RUN / "study.json").read_text())
    clock = FakeClock()
    trials = [_trial(i, 100.0 * (i + 1), 1.0 / (i + 1), clock) for i in range(4)]
    failed = TrialResult(
        number=4,
        origin="sobol",
        knobs={"batch_size": 64, "kernel": "tiled"},
        status="oom",
        reason="out of memory",
        wall_s=3.0,
        started_at=datetime.now(UTC),
    )
    lines = [t.model_dump_json() for t in [*trials, failed]]
    (run_dir / TRIALS_FILE).write_text("\n".join(lines) + "\n")
    return run_dir


def test_sampled_series_are_drawn_and_failures_listed(gpu_run: Path, tmp_path: Path) -> None:
    written = write_report(gpu_run, tmp_path / "out")
    md = written.markdown.read_text()
    assert "power-memory.png" in md and "sampled power and memory" in md
    assert "machine not recorded" in md  # this run directory has no machine.json
    assert "| 4 | sobol | oom | - |" in md and "(out of memory)" in md
    assert "| 3 * | sobol | ok | 400.0 |" in md


def test_without_telemetry_the_report_says_which_plots_it_cannot_draw(
    gpu_run: Path, tmp_path: Path
) -> None:
    lines = (gpu_run / TRIALS_FILE).read_text().splitlines()
    stripped = []
    for line in lines:
        t = TrialResult.model_validate_json(line)
        if t.measurement:
            m = t.measurement
            runs = [r.model_copy(update={"telemetry": None}) for r in m.runs]
            m = Measurement.from_runs(m.cold.model_copy(update={"telemetry": None}), runs)
            t = t.model_copy(update={"measurement": m})
        stripped.append(t.model_dump_json())
    (gpu_run / TRIALS_FILE).write_text("\n".join(stripped) + "\n")
    written = write_report(gpu_run, tmp_path / "out")
    assert {p.name for p in written.images} == {"best-so-far.png", "knobs.png"}
    md = written.markdown.read_text()
    assert "No plot of speed against energy: no trial has energy figures" in md
    assert "No plot of power and memory over time: no GPU telemetry for this trial" in md


def test_cli_report_writes_under_reports_and_bad_run_dirs_are_one_line(
    gpu_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", str(gpu_run)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "run" / "report.html").is_file()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "holds no study (study.json is missing)" in result.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "study.json").write_text((gpu_run / "study.json").read_text())
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "holds no finished trial yet" in result.stderr

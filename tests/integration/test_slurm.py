"""A study through Slurm (dask-jobqueue's SLURMCluster): skipped where no Slurm answers.
`tests/e2e/checks/slurm_check.sh` starts a one-node Slurm from Debian's packages and runs the
same."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.study.rundir import read_trials

TABLE = REPO_ROOT / "benchmarks" / "data" / "h100-hf-tiny-llama-humaneval.json"
#: Where tests/e2e/checks/slurm_check.sh writes the configuration of the Slurm it starts.
CHECK_CONF = Path("/tmp/tuner-slurm/slurm.conf")


def _slurm_env() -> dict[str, str] | None:
    """The environment under which a Slurm controller answers, or None."""
    if shutil.which("sbatch") is None:
        return None
    env = dict(os.environ)
    if "SLURM_CONF" not in env and not Path("/etc/slurm/slurm.conf").is_file():
        if not CHECK_CONF.is_file():
            return None
        env["SLURM_CONF"] = str(CHECK_CONF)
    try:
        ping = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return env if b"UP" in ping.stdout else None


@pytest.mark.slurm
def test_a_study_runs_its_trials_in_slurm_worker_jobs_and_tears_them_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _slurm_env()
    if env is None:
        pytest.skip("no Slurm controller answers here (tests/e2e/checks/slurm_check.sh starts one)")
    for name, value in {
        **{k: v for k, v in env.items() if k == "SLURM_CONF"},
        "DASK_JOBQUEUE__SLURM__CORES": "1",
        "DASK_JOBQUEUE__SLURM__MEMORY": "2GB",
        "DASK_JOBQUEUE__SLURM__WALLTIME": "00:10:00",
        "DASK_JOBQUEUE__SLURM__LOG_DIRECTORY": str(tmp_path / "jobs"),
    }.items():
        monkeypatch.setenv(name, value)
    import dask

    dask.config.refresh()
    result = CliRunner().invoke(
        app,
        [
            *("tune", "--engine", f"replay:{TABLE}", "--cluster", "slurm", "--workers", "2"),
            *("--trials", "6", "--replay-time-scale", "0.02", "--quiet"),
            *("--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "profiles")),
        ],
    )
    assert result.exit_code == 0, result.output
    trials = read_trials(tmp_path / "run" / "trials.jsonl")
    assert trials and all(
        t.placement and t.placement.worker.startswith("SLURMCluster") for t in trials
    )
    assert list((tmp_path / "profiles").glob("*/*/*.json"))
    assert len(list((tmp_path / "jobs").glob("*.out"))) >= 1  # the worker jobs' own logs
    # Torn down: cancelled, the jobs leave the queue once Slurm has completed them.
    for _ in range(60):
        left = subprocess.run(
            ["squeue", "-h", "-n", "dask-worker"], env=env, capture_output=True, text=True
        ).stdout.strip()
        if not left:
            break
        time.sleep(0.5)
    assert left == ""

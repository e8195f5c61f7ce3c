"""Trials side by side on Dask: proposals in a wave, a worker killed mid-trial, a scheduler
lost mid-wave and the study resumed, a fleet of two GPU models (faked) with a profile each."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tuner.cli.app import app
from tuner.errors import TunerError
from tuner.execution.executor import NullObserver
from tuner.execution.fleet import ALLOWED_FAILURES, FleetSpec, open_fleet
from tuner.measure.measurement import MeasurementProtocol
from tuner.profiles.profile import read_profile
from tuner.specs.workloads import load_workload
from tuner.study.rundir import StudySpec, read_spec, read_trials
from tuner.study.study import Study
from tuner.testing import SurfaceOnWorker, fake_machines

H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
TABLE = REPO_ROOT / "benchmarks" / "data" / "h100-hf-tiny-llama-humaneval.json"
FAKE = "tuner.testing:FakeEngine"
BIN = Path(sys.executable).parent


def fake_spec(model: Path, fleet: FleetSpec | None, **kw: Any) -> StudySpec:
    base: dict[str, Any] = {
        "engine": FAKE,
        "model": str(model),
        "workload": load_workload("humaneval", requests=4, output_tokens=4),
        "trials": 8,
        "seed": 0,
        "protocol": MeasurementProtocol(repeats=3, run_time_limit_s=5, warmup_time_limit_s=5),
        "fleet": fleet,
    }
    return StudySpec.model_validate({**base, **kw})


class Waves:
    """Four trials in flight, the oldest finishing first; records what was in flight at each
    submission."""

    slots = 4

    def __init__(self, evaluate: Any) -> None:
        self.evaluate = evaluate
        self.queue: deque[tuple[int, str, dict[str, Any]]] = deque()
        self.flights: list[list[str]] = []

    def submit(self, number: int, origin: str, knobs: dict[str, Any]) -> None:
        self.queue.append((number, origin, knobs))
        self.flights.append([json.dumps(k, sort_keys=True) for _, _, k in self.queue])

    def as_completed(self) -> Iterator[Any]:
        while self.queue:
            yield self.evaluate(*self.queue.popleft())

    def close(self) -> None:
        pass


@pytest.mark.parametrize("optimizer", ["gp", "rf", "random", "optuna-tpe", "hyperopt-tpe"])
def test_no_configuration_is_proposed_twice_while_in_flight(optimizer: str, tmp_path: Path) -> None:
    engine = f"replay:{TABLE}"
    from tuner.study.prepare import prepare

    setup = prepare(engine, "", "")
    spec = StudySpec(
        engine=engine,
        model=setup.model.ref,
        workload=setup.workload,
        trials=24,
        seed=3,
        optimizer=optimizer,  # type: ignore[arg-type]
        confirm=0,
    )
    study = Study.create(spec, tmp_path / "run", setup)
    waves = Waves(setup.replay.evaluator(3))  # type: ignore[union-attr]
    study.executor = lambda *args: waves  # type: ignore[method-assign]
    outcome = study.run()
    assert max(len(f) for f in waves.flights) == 4
    for flight in waves.flights:
        assert len(set(flight)) == len(flight), flight
    searched = [json.dumps(r.knobs, sort_keys=True) for r in outcome.results]
    # The budget, or every configuration the optimizer would still propose (a 32-point table).
    assert len(searched) == 24 or outcome.stopped == "search space exhausted", outcome.stopped
    assert len(set(searched)) == len(searched)


def test_a_killed_dask_worker_yields_a_crashed_trial_and_the_study_completes(
    fake_model: Path, tmp_path: Path
) -> None:
    fleet_spec = FleetSpec(workers=2)
    with open_fleet(fleet_spec) as fleet:
        study = Study.create(fake_spec(fake_model, fleet_spec), tmp_path / "run")
        outcome = study.run(evaluate=SurfaceOnWorker(0.05, kill_at=2), fleet=fleet)
    by_number = {r.number: r for r in outcome.results}
    assert by_number[2].status == "crashed"
    assert "Dask worker running it died" in (by_number[2].reason or "")
    assert len(outcome.results) == 8 + 2  # the budget and two confirmations
    # A trial queued on (or whose result sat on) a worker as it died can be caught too (seen
    # in 1 of 3 runs: the baseline, queued behind the killer on both workers). With two slots,
    # each of trial 2's deaths (it runs ALLOWED_FAILURES more times, then is crashed) can catch the
    # one other trial in flight at most; any other failure is not allowed.
    others = {n: (r.status, r.reason or "") for n, r in by_number.items() if n != 2}
    caught = [n for n, (_, reason) in others.items() if "Dask worker running it died" in reason]
    assert len(caught) <= ALLOWED_FAILURES + 1, others
    rest = [status for n, (status, _) in others.items() if n not in caught]
    assert set(rest) <= {"ok", "oom"}, others
    assert outcome.best is not None
    workers = {r.placement.worker for r in outcome.results if r.placement is not None}
    assert len(workers) == 2  # trials ran on both workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_cluster(port: int, workers: int) -> list[subprocess.Popen[bytes]]:
    """A scheduler and its workers as processes of their own, as on a real cluster."""
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    quiet: Any = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [BIN / "dask", "scheduler", "--port", str(port), "--no-dashboard"], **quiet
        )
    ]
    for _ in range(workers):
        procs.append(
            subprocess.Popen(
                [
                    *(BIN / "dask", "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1"),
                    *("--resources", "GPU=1", "--no-dashboard"),
                ],
                env=env,
                **quiet,
            )
        )
    return procs


class KillScheduler(NullObserver):
    def __init__(self, scheduler: subprocess.Popen[bytes], after: int) -> None:
        self.scheduler, self.after, self.finished = scheduler, after, 0

    def trial_finished(self, result: Any, best: Any) -> None:
        self.finished += 1
        if self.finished == self.after:
            self.scheduler.kill()


def test_a_study_whose_scheduler_is_lost_mid_wave_resumes_with_every_finished_trial_kept(
    fake_model: Path, tmp_path: Path
) -> None:
    port = _free_port()
    procs = _start_cluster(port, 2)
    run = tmp_path / "run"
    try:
        fleet_spec = FleetSpec(scheduler=f"tcp://127.0.0.1:{port}")
        with open_fleet(fleet_spec) as fleet:
            fleet.client.wait_for_workers(2, 120)
            study = Study.create(fake_spec(fake_model, fleet_spec), run)
            with pytest.raises(TunerError, match=r"lost the Dask scheduler .* --resume"):
                study.run(
                    KillScheduler(procs[0], after=3), evaluate=SurfaceOnWorker(0.3), fleet=fleet
                )
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    kept = (run / "trials.jsonl").read_text().splitlines()
    assert len(kept) == 3
    # Resumed on another fleet (the stored one is gone): every kept trial stays as it was.
    with open_fleet(FleetSpec(workers=2)) as fleet:
        machine = fleet.groups()[0].machine
        outcome = Study.resume(run, machine=machine).run(evaluate=SurfaceOnWorker(), fleet=fleet)
    assert (run / "trials.jsonl").read_text().splitlines()[:3] == kept
    assert outcome.resumed == 3
    numbers = [r.number for r in outcome.results]
    assert len(numbers) == len(set(numbers)) == 8 + 2
    assert sum(r.origin == "baseline" for r in outcome.results) == 1


@pytest.mark.slow
def test_a_two_model_fake_fleet_writes_a_profile_per_model_and_warm_starts_the_new_one(
    fake_model: Path, tmp_path: Path
) -> None:
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.daemon": False})
    profiles = tmp_path / "profiles"
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            resources={"GPU": 1},
            dashboard_address=None,
            silence_logs=40,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(fake_machines({"0": H100, "1": A100}))

        def tune(run_dir: Path) -> Any:
            return CliRunner().invoke(
                app,
                [
                    "tune", "--engine", FAKE, "--model", str(fake_model), "--requests", "4",
                    "--output-tokens", "4", "--trials", "6", "--confirm", "0", "--quiet",
                    "--dask-scheduler", cluster.scheduler_address, "--per-gpu-model",
                    "--run-dir", str(run_dir), "--profiles-dir", str(profiles),
                ],
            )  # fmt: skip

        result = tune(tmp_path / "first")
        assert result.exit_code == 0, result.output
        written = sorted(p.relative_to(profiles).parts[0] for p in profiles.glob("*/fake/*.json"))
        assert written == ["nvidia-a100-sxm4-80gb", "nvidia-h100-80gb-hbm3"]
        for slug, model in (("nvidia-h100-80gb-hbm3", H100), ("nvidia-a100-sxm4-80gb", A100)):
            run = tmp_path / f"first--{slug}"
            assert {r.placement.gpu_model for r in read_trials(run / "trials.jsonl")} == {model}
            assert read_spec(run).warm_start == []  # neither model had a profile

        # The A100 profile is gone: its new study starts from the H100's best.
        (a100,) = profiles.glob("nvidia-a100-sxm4-80gb/fake/*.json")
        h100 = next(profiles.glob("nvidia-h100-80gb-hbm3/fake/*.json"))
        best = read_profile(h100).best.knobs
        a100.unlink()
        result = tune(tmp_path / "second")
        assert result.exit_code == 0, result.output
        spec = read_spec(tmp_path / "second--nvidia-a100-sxm4-80gb")
        assert spec.warm_start_from == str(h100)
        assert spec.warm_start == [best]
        tried = [
            r.knobs for r in read_trials(tmp_path / "second--nvidia-a100-sxm4-80gb/trials.jsonl")
        ]
        assert best in tried
        assert read_spec(tmp_path / "second--nvidia-h100-80gb-hbm3").warm_start == []
        assert a100.is_file()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--per-gpu-model"], "--per-gpu-model splits a fleet"),
        (["--workers", "2", "--cluster", "kubernetes"], "--cluster takes local, slurm"),
        (["--cluster", "slurm"], "say how many with --workers"),
        (["--dask-scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "leave out --workers"),
        (["--replay-time-scale", "0.1"], "--replay-time-scale is for replays"),
    ],
)
def test_fleet_options_that_cannot_work_are_one_line_and_exit_2(
    fake_model: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("tune", "--engine", FAKE, "--model", str(fake_model), "--trials", "2"),
            *("--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "p")),
            *args,
        ],
    )
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output


def test_a_trial_needing_more_gpus_than_any_worker_has_is_crashed_with_the_reason(
    fake_model: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from tuner.execution.dask_executor import DaskExecutor
    from tuner.study.prepare import prepare

    setup = prepare(FAKE, str(fake_model), load_workload("humaneval", requests=2, output_tokens=2))
    protocol = MeasurementProtocol(repeats=3, run_time_limit_s=5, warmup_time_limit_s=5)

    def task(knobs: dict[str, Any]) -> Any:
        return replace(setup.task(knobs, protocol), gpus=2)  # tensor parallel over two GPUs

    with open_fleet(FleetSpec(workers=1)) as fleet:
        executor = DaskExecutor(fleet, make_task=task, log_dir=tmp_path / "workers")
        try:
            executor.submit(0, "baseline", setup.space.default_knobs())
            (result,) = list(executor.as_completed())
        finally:
            executor.close()
    assert result.status == "crashed"
    assert result.reason == "needs 2 GPUs; the largest worker has 1"


def test_a_batch_queue_fleet_without_dask_jobqueue_is_one_line_and_exit_2(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # dask-jobqueue is an extra (`tuner[jobqueue]`): without it, `--cluster slurm` says so.
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    result = CliRunner().invoke(
        app,
        [
            *("tune", "--engine", FAKE, "--model", str(fake_model), "--trials", "2"),
            *("--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "p")),
            *("--cluster", "slurm", "--workers", "1"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "needs dask-jobqueue: pip install 'tuner[jobqueue]'" in result.output
    assert "Traceback" not in result.output


def test_a_batch_queue_fleet_with_no_job_description_is_one_line_and_exit_2(
    fake_model: Path, tmp_path: Path
) -> None:
    # Real dask-jobqueue, with no cores or memory for its Slurm jobs: it refuses to build the
    # cluster (a ValueError), and tuner says why in one line instead of a traceback.
    import dask.config

    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        result = CliRunner().invoke(
            app,
            [
                *("tune", "--engine", FAKE, "--model", str(fake_model), "--trials", "2"),
                *("--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "p")),
                *("--cluster", "slurm", "--workers", "1"),
            ],
        )
    assert result.exit_code == 2, result.output
    assert "dask-jobqueue cannot describe the worker job" in result.output
    assert "Traceback" not in result.output

"""The run directory under faults (issue 21, defects 5 to 7): a torn last line before a resume,
two studies in one run directory, a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuner.cli.app import app
from tuner.errors import TunerError
from tuner.study.rundir import RunLock, append_trial, read_trials

from .test_cli import assert_one_line_error, fake_args
from .test_study import spec

runner = CliRunner()


def tune(fake_model: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["tune", *fake_args(fake_model, tmp_path, "--optimizer", "random", *extra)]


def trial_lines(run_dir: Path) -> list[dict[str, object]]:
    """Every line of trials.jsonl, each of which must be a whole trial (none: no file)."""
    path = run_dir / "trials.jsonl"
    text = path.read_text() if path.exists() else ""
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


# -- 5: a torn last line -----------------------------------------------------------------------


def test_resume_after_a_torn_last_line_keeps_every_trial(
    a_finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resumed study writes its profile, and `tuner report` its report, where the commands
    # say by default (./profiles, ./reports): here, not into the repository.
    monkeypatch.chdir(tmp_path)
    run_dir = a_finished_run  # 3 trials
    path = run_dir / "trials.jsonl"
    fragment = '{"schema_version": 1, "numb'
    with open(path, "a") as f:
        f.write(fragment)  # a kill, or a full disk, mid-write
    resumed = runner.invoke(app, ["tune", "--resume", str(run_dir), "--trials", "5"])
    assert resumed.exit_code == 0, resumed.output
    assert "set aside a torn last line" in " ".join(resumed.stderr.split())
    lines = trial_lines(run_dir)
    numbers = [t["number"] for t in lines]
    assert len(numbers) == len(set(numbers))
    assert sum(t["origin"] != "confirm" for t in lines) == 5
    assert (run_dir / "trials.jsonl.torn").read_text() == fragment + "\n"
    assert runner.invoke(app, ["report", str(run_dir)]).exit_code == 0
    again = runner.invoke(app, ["tune", "--resume", str(run_dir), "--trials", "6"])
    assert again.exit_code == 0, again.output


def test_a_whole_last_trial_without_its_newline_is_kept(
    a_finished_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the resumed study writes its profile under ./profiles
    run_dir = a_finished_run  # 3 trials
    path = run_dir / "trials.jsonl"
    path.write_text(path.read_text().rstrip("\n"))
    kept = read_trials(path)
    resumed = runner.invoke(app, ["tune", "--resume", str(run_dir), "--trials", "4"])
    assert resumed.exit_code == 0, resumed.output
    lines = trial_lines(run_dir)
    assert [t["number"] for t in lines[: len(kept)]] == [r.number for r in kept]
    assert sum(t["origin"] != "confirm" for t in lines) == 4


# -- 6: one study per run directory ------------------------------------------------------------


def test_a_second_study_in_a_run_directory_in_use_is_one_line(
    fake_model: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    held = RunLock(run_dir)  # another study, running
    try:
        result = runner.invoke(app, tune(fake_model, tmp_path, "--trials", "2"))
        assert_one_line_error(result, "is in use by another study (tuner pid")
        assert not (run_dir / "study.json").exists()
    finally:
        held.release()
    assert runner.invoke(app, tune(fake_model, tmp_path, "--trials", "2")).exit_code == 0
    before = (run_dir / "study.json").read_bytes()
    held = RunLock(run_dir)
    try:
        result = runner.invoke(app, ["tune", "--resume", str(run_dir), "--trials", "9"])
        assert_one_line_error(result, "is in use by another study")
    finally:
        held.release()
    assert (run_dir / "study.json").read_bytes() == before


def test_a_resume_that_fails_leaves_the_study_as_it_was(fake_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(fake_model, model)
    run_dir = tmp_path / "run"
    args = tune(model, tmp_path, "--trials", "2")
    assert runner.invoke(app, args).exit_code == 0
    before = (run_dir / "study.json").read_bytes()
    shutil.rmtree(model)
    result = runner.invoke(app, ["tune", "--resume", str(run_dir), "--trials", "9"])
    assert_one_line_error(result, "not found")
    assert (run_dir / "study.json").read_bytes() == before


def test_two_studies_started_together_in_one_run_directory(
    fake_model: Path, tmp_path: Path
) -> None:
    args = [sys.executable, "-m", "tuner", *tune(fake_model, tmp_path, "--trials", "4")]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outputs
    loser = next(err for p, (_, err) in zip(procs, outputs, strict=True) if p.returncode == 2)
    assert "in use by another study" in loser or "already holds a study" in loser
    lines = trial_lines(tmp_path / "run")
    assert sorted(t["number"] for t in lines) == list(range(len(lines)))
    assert sum(t["origin"] != "confirm" for t in lines) == 4


# -- 7: a full disk ----------------------------------------------------------------------------


def test_a_trial_that_cannot_be_written_whole_leaves_the_file_as_it_was(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.study.study import Study

    run_dir = tmp_path / "run"
    Study.create(spec(fake_model, trials=2), run_dir).run()
    path = run_dir / "trials.jsonl"
    before = path.read_bytes()
    result = read_trials(path)[0]
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 100:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("tuner.study.rundir.os.write", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        append_trial(path, result)
    assert path.read_bytes() == before


def test_a_full_disk_under_the_trials_is_one_line(fake_model: Path, tmp_path: Path) -> None:
    from tuner.study.study import Study

    study = Study.create(spec(fake_model, trials=3), tmp_path / "run")
    (tmp_path / "run" / "trials.jsonl").symlink_to("/dev/full")  # the kernel's own ENOSPC
    with pytest.raises(TunerError, match=r"the disk is full .*; the 0 finished trials are kept"):
        study.run()


def test_a_profile_that_cannot_be_written_leaves_no_temporary(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def full_under_profiles(fd: int) -> None:
        if "/profiles/" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("tuner.files.os.fsync", full_under_profiles)
    result = runner.invoke(app, tune(fake_model, tmp_path, "--trials", "2"))
    assert_one_line_error(result, "cannot write profile")
    assert "the disk is full" in result.stderr
    assert [p.name for p in (tmp_path / "profiles").rglob("*") if p.is_file()] == []


def _can_mount_tmpfs() -> bool:
    probe = "mount -t tmpfs -o size=16k tmpfs /mnt"
    try:
        done = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="no tmpfs in a user namespace here")
@pytest.mark.parametrize(("optimizer", "size"), [("random", "32k"), ("gp", "160k")])
def test_a_study_on_a_full_tmpfs_stops_in_one_line_with_its_trials_whole(
    fake_model: Path, tmp_path: Path, optimizer: str, size: str
) -> None:
    # A small tmpfs holds the run directory: it fills up after a few trials, or with SMAC's
    # state. Inside a mount namespace of its own, then copied out before it goes.
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    args = tune(fake_model, tmp_path, "--trials", "60", "--confirm", "0")
    args = [a if a != str(tmp_path / "run") else str(disk / "run") for a in args]
    args[args.index("--optimizer") + 1] = optimizer
    script = (
        f'mount -t tmpfs -o size={size} tmpfs "$1" && shift && '
        '"$@" > "$OUT/stdout" 2> "$OUT/stderr"; echo $? > "$OUT/rc"; '
        'cp -a "$DISK/run" "$OUT/run"; ls -A "$DISK/run" > "$OUT/files"'
    )
    subprocess.run(
        [
            *("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"),
            *(str(disk), sys.executable, "-m", "tuner", *args),
        ],
        env={**os.environ, "OUT": str(out), "DISK": str(disk)},
        timeout=600,
        check=True,
    )
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "2", stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "the disk is full" in " ".join(stderr.split())
    assert len(trial_lines(out / "run")) < 60
    assert not [f for f in (out / "files").read_text().split() if f.startswith(".study")]

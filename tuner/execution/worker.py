"""Trial isolation: each engine lives in a worker process.

Out-of-memory, a crash that kills the process, or a hang past the timeout become a trial status
with a reason; the study goes on with a fresh worker. A worker keeps its loaded model between
trials that change only run-time knobs, and exits after any failed trial so that the next one
starts clean.

Nothing a worker starts outlives it (`tuner.processes`): it closes its engine on every path out
of a trial, SIGTERM makes it close and exit, and every process it starts carries its tree mark,
which the worker sweeps before it exits and its parent sweeps whenever it closes or replaces it
(a worker killed at its timeout, or by the kernel, cannot clean up itself).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.engines.base import Engine, EngineBase, EngineClass, EngineFailed, EngineTimeout
from tuner.errors import NvmlError
from tuner.hardware.nvml import open_devices
from tuner.hardware.telemetry import Sampler
from tuner.measure.trial import Outcome, Status, TrialTask
from tuner.processes import TREE_MARK, kill_marked, new_mark

if TYPE_CHECKING:
    from tuner.measure.measurement import Measurement

Progress = Callable[[str], None]


def one_line(exc: BaseException, limit: int = 400) -> str:
    """`Type: first line of the message`, trimmed."""
    message = str(exc).strip().splitlines()
    if isinstance(exc, EngineFailed | EngineTimeout) and message:
        text = message[0]
    else:
        text = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class Loaded:
    """The engine a worker holds, the load it came from, and the sampler of its GPUs."""

    key: tuple[Any, ...]
    engine: Engine
    versions: dict[str, str]
    sampler: Sampler | None = None
    no_telemetry: str | None = None

    def close(self) -> None:
        self.engine.close()
        if self.sampler is not None:
            for device in self.sampler.gpus:
                device.close()


def gpu_sampler(engine: Engine, period_s: float) -> tuple[Sampler | None, str | None]:
    """A sampler of the GPUs the engine placed its model on, or None and the reason."""
    indices = engine.gpu_indices()
    if not indices:
        return None, "the engine runs on no GPU"
    try:
        devices = open_devices(indices)
    except NvmlError as exc:
        return None, f"no GPU telemetry: {exc}"
    return Sampler(devices, period_s=period_s), None


def execute(
    task: TrialTask, loaded: Loaded | None, progress: Progress, log_file: str | None = None
) -> tuple[Outcome, Loaded | None]:
    """Runs one task in this process, reusing `loaded` when the load-time knobs match."""
    from tuner.engines import engine_class

    # EngineBase classifies failures before the adapter is known.
    cls: EngineClass | type[EngineBase] = EngineBase
    try:
        cls = engine_class(task.engine)
        load_s = None
        reused = loaded is not None and loaded.key == task.load_key
        if not reused:
            if loaded is not None:
                loaded.close()
                loaded = None
            loaded, load_s = _load(task, cls, progress, log_file)
        assert loaded is not None
        measurement = _measure(task, loaded, cls.run_clock, progress)
        outcome = Outcome(
            status="ok",
            measurement=measurement,
            load_s=load_s,
            reused_model=reused,
            versions=loaded.versions,
            engine_config=loaded.engine.effective_knobs(),
        )
        return outcome, loaded
    except Exception as exc:
        traceback.print_exc()
        status: Status = (
            "timeout" if isinstance(exc, EngineTimeout) else "oom" if cls.is_oom(exc) else "crashed"
        )
        versions = loaded.versions if loaded is not None else {}
        if loaded is not None:
            close_quietly(loaded)  # a server it started goes with the failed trial
        return Outcome(status=status, reason=one_line(exc), versions=versions), None


def _load(
    task: TrialTask, cls: EngineClass, progress: Progress, log_file: str | None
) -> tuple[Loaded, float]:
    """The task's engine loaded, with its GPU sampler, and the seconds the load took."""
    progress("loading")
    start = time.perf_counter()
    options = {**task.engine_options, "log_file": log_file}
    loaded = Loaded(task.load_key, cls(Path(task.model_dir), task.load_knobs, options), {})
    load_s = time.perf_counter() - start
    try:
        loaded.sampler, loaded.no_telemetry = gpu_sampler(
            loaded.engine, task.protocol.sample_period_s
        )
        loaded.versions = cls.versions()
    except BaseException:
        close_quietly(loaded)  # a server it started goes with the failed load
        raise
    return loaded, load_s


def _measure(
    task: TrialTask, loaded: Loaded, clock: Callable[[], float], progress: Progress
) -> Measurement:
    """The task's measurement on the loaded engine, its runs timed by `clock`: at its load, or
    at the highest request rate that keeps the protocol's limits."""
    from tuner.measure.measurement import measure, measure_max_rate
    from tuner.measure.objective import goal

    if task.protocol.rate_search:
        limits = goal(constraints=task.protocol.rate_search)
        measurement = measure_max_rate(
            loaded.engine,
            task.requests,
            task.run_knobs,
            task.protocol,
            lambda m: not limits.breaches(m),
            clock=clock,
            progress=progress,
            sampler=loaded.sampler,
        )
    else:
        measurement = measure(
            loaded.engine,
            task.requests,
            task.run_knobs,
            task.protocol,
            clock=clock,
            progress=progress,
            sampler=loaded.sampler,
        )
    measurement = measurement.on_gpus(task.gpus)
    if loaded.no_telemetry is not None:
        measurement = measurement.model_copy(update={"energy_note": loaded.no_telemetry})
    return measurement


def close_quietly(loaded: Loaded) -> None:
    """Closes an engine after a failure, whose close may fail too (logged, not raised)."""
    try:
        loaded.close()
    except Exception:
        traceback.print_exc()


def _redirect_output(log_path: Path) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _exit_with_parent(mark: str) -> None:
    """Ends this process when its parent dies (a Dask worker killed with -9 cannot close its
    pipe in time, and an orphaned engine would keep its GPU busy), with what it started."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        kill_marked(mark)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _main(conn: Any, log_path: str, env: dict[str, str]) -> None:
    # Ctrl-C reaches the whole process group; the parent decides what stops (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ.update(env)  # its GPUs and its tree mark, before any engine imports CUDA
    mark = env.get(TREE_MARK, "")
    _exit_with_parent(mark)
    _redirect_output(Path(log_path))
    # Nothing is downloaded at run time, and nothing draws progress bars into the log.
    os.environ.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    loaded: Loaded | None = None
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                break
            if task is None:
                break
            outcome, loaded = execute(
                task, loaded, lambda text: conn.send(("progress", text)), log_path
            )
            conn.send(("done", outcome.model_copy(update={"log": log_path})))
            if outcome.status != "ok":
                break
    finally:
        if loaded is not None:
            close_quietly(loaded)
        if mark:
            kill_marked(mark)


class Worker:
    """Parent-side handle of one worker process, started on demand and replaced after failures;
    `env` is set in the worker before it runs anything (`CUDA_VISIBLE_DEVICES` on a fleet)."""

    def __init__(self, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self._log_dir = log_dir
        self._env = dict(env or {})
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Any = None
        self._mark: str | None = None
        self._busy = False  # a task sent, its result not yet received
        self._started = 0
        self._load_key: tuple[Any, ...] | None = None
        self.log_path: Path | None = None

    def _start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._started += 1
        self.log_path = self._log_dir / f"worker-{os.getpid()}-{self._started}.log"
        parent, child = self._ctx.Pipe()
        self._mark = new_mark()
        # Not a daemon: engines such as vLLM start processes of their own. A worker exits when
        # its pipe closes, so it does not outlive the study.
        self._proc = self._ctx.Process(
            target=_main,
            args=(child, str(self.log_path), {**self._env, TREE_MARK: self._mark}),
            name="tuner-worker",
            daemon=False,
        )
        self._proc.start()
        child.close()
        self._conn = parent

    def run(self, task: TrialTask, timeout_s: float, progress: Progress | None = None) -> Outcome:
        """Runs `task` in the worker; a hang past `timeout_s` or a dead worker is an outcome."""
        if task.fresh_process and self._load_key not in (None, task.load_key):
            self.close()
        self._load_key = task.load_key
        if self._proc is None or not self._proc.is_alive():
            self._reap()
            self._start()
        try:
            self._conn.send(task)
        except (BrokenPipeError, OSError):
            return self._died()
        self._busy = True
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._reap()
                return Outcome(
                    status="timeout",
                    log=str(self.log_path),
                    reason=f"no result within the {timeout_s:.0f} s trial timeout; worker killed",
                )
            if self._conn.poll(min(remaining, 0.2)):
                try:
                    kind, payload = self._conn.recv()
                except (EOFError, OSError):
                    return self._died()
                if kind == "progress":
                    if progress is not None:
                        progress(payload)
                    continue
                self._busy = False
                if payload.status != "ok":
                    self._reap(wait_s=10)
                return payload
            if not self._proc.is_alive() and not self._conn.poll(0):
                return self._died()

    def _died(self) -> Outcome:
        code = None
        if self._proc is not None:
            self._proc.join(5)  # the pipe closes a moment before the exit status is known
            code = self._proc.exitcode
        self._reap()
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                how += " (the kernel's out-of-memory killer sends this)"
        else:
            how = f"exited with code {code}"
        last = _last_line(self.log_path)
        reason = f"worker process {how}" + (f"; last log line: {last}" if last else "")
        return Outcome(status="crashed", reason=reason, log=str(self.log_path))

    def _reap(self, wait_s: float = 0) -> None:
        """Waits up to `wait_s` for the worker to exit, kills it if it has not, and kills
        whatever it started that is still there."""
        if self._proc is not None:
            self._proc.join(wait_s)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(10)
        if self._mark is not None:
            kill_marked(self._mark)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = self._mark = None
        self._busy = False

    def close(self) -> None:
        """Asks the worker to exit (killing it if it does not), releasing its engine. A worker
        in the middle of a trial (the study was interrupted) is told to stop with SIGTERM:
        it closes its engine and exits."""
        if self._proc is not None and self._proc.is_alive():
            if self._busy:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._proc.pid, signal.SIGTERM)
                self._reap(wait_s=15)
                return
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send(None)
            self._reap(wait_s=30)
        else:
            self._reap()


def _last_line(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else None

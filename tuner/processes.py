"""The processes tuner starts, and how they end: none outlives the trial or the tuner that
started it.

Three guards, from the gentlest:

- A worker process closes its engine on every path out of a trial (`tuner.execution.worker`), and a
  server engine stops its server's process group (`tuner.engines.server`).
- Every process a worker starts carries the worker's tree mark in its environment
  (`TREE_MARK`); `kill_marked` finds them wherever they ended up (reparented, in a session of
  their own) and kills them. The worker's parent sweeps the mark whenever it replaces or
  closes a worker, and a worker sweeps its own before it exits.
- A server runs under a guard (`spawn`, `python -m tuner.processes -- COMMAND`): a small
  process that leads the server's session and process group and holds Linux's parent-death
  signal. When the worker ends, however it ends (SIGKILL to tuner's whole process group
  included), the guard gets SIGTERM although nobody is left to send it, passes it to its group,
  and kills whatever is left of the group after a grace period. When the server exits on its
  own, the guard kills the rest of its group and exits with the server's code.

`terminate_as_interrupt` makes SIGTERM and SIGHUP end tuner as Ctrl-C does: one line, exit
130, finished trials kept, nothing left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import IO, Any

#: The environment variable that marks every process of one worker's tree.
TREE_MARK = "TUNER_PROCESS_TREE"

_PR_SET_PDEATHSIG = 1


def new_mark() -> str:
    """A fresh tree mark."""
    return uuid.uuid4().hex


def _parent_death_signal(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` that asks the kernel to send `sig` to the child when the thread that
    started it ends; None off Linux. libc is loaded here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def set_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return set_signal


def spawn(argv: Sequence[str], log: IO[Any]) -> subprocess.Popen[bytes]:
    """Starts `argv` under its guard, in a session (and process group) of its own, its output
    in `log`; the group is stopped when the thread that started it ends, however that ends.
    The returned process is the guard: its exit code is the command's."""
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.processes", "--", *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        # One libc call (prctl) in the child, libc loaded before the fork.
        preexec_fn=_parent_death_signal(signal.SIGTERM),
    )


def _group_members() -> list[int]:
    """The other live processes of this process's group."""
    import psutil

    group, me = os.getpgrp(), os.getpid()
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != me and os.getpgid(proc.pid) == group:
                members.append(proc.pid)
    return members


def guard(argv: Sequence[str], grace_s: float = 20.0) -> int:
    """Runs `argv` as this group's server and returns its exit code (128 + n for signal n);
    SIGTERM to the guard stops the whole group (SIGTERM, then SIGKILL after `grace_s`)."""
    if os.getpgrp() != os.getpid():
        os.setsid()  # a group of its own to stop, whoever started it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server = subprocess.Popen(list(argv))
    except OSError as exc:
        print(f"cannot start {argv[0]}: {exc}", file=sys.stderr, flush=True)
        return 127
    asked_at: list[float] = []  # when SIGTERM came

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        asked_at.append(time.monotonic())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    while True:
        try:
            code = server.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if asked_at and time.monotonic() - asked_at[0] > grace_s:
                os.killpg(0, signal.SIGKILL)  # the guard too: the group is gone
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for pid in _group_members():
        kill_process(pid)
    return code if code >= 0 else 128 - code


def stop_group(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """Stops the process group `proc` leads: SIGTERM, then SIGKILL after `grace_s`; the
    group's other members get SIGKILL too, should the leader leave them behind."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def marked(mark: str, *, name: str = TREE_MARK) -> list[Any]:
    """The live processes (psutil) whose environment holds `name=mark`, this one aside."""
    import psutil

    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(name) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


#: Helpers that end by themselves once their parent is gone, after cleaning up for it (the
#: shared memory and semaphores an engine leaves): never killed by a sweep.
SPARED = ("multiprocessing.resource_tracker",)


def kill_marked(mark: str, *, name: str = TREE_MARK, wait_s: float = 5.0) -> int:
    """Kills (SIGKILL) every process marked `name=mark` but this one and the `SPARED`
    helpers, and waits up to `wait_s` for them to go; returns how many there were."""
    import psutil

    procs = [p for p in marked(mark, name=name) if not _spared(p)]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if procs:
        psutil.wait_procs(procs, timeout=wait_s)
    return len(procs)


def _spared(proc: Any) -> bool:
    import psutil

    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(helper in command for helper in SPARED)


def kill_process(pid: int) -> None:
    """SIGKILL to one process, if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_gone(
    mark: str,
    *,
    name: str = TREE_MARK,
    timeout_s: float = 10.0,
    spare: Callable[[Any], bool] | None = None,
) -> list[Any]:
    """The processes marked `name=mark` still alive after up to `timeout_s` (those shutting
    down are given the time), but those `spare` says to leave be (not waited for either)."""
    end = time.monotonic() + timeout_s
    while True:
        left = [p for p in marked(mark, name=name) if spare is None or not spare(p)]
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.2)


def terminate_as_interrupt() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as SIGINT does."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):  # not the main thread; no such signal
            signal.signal(sig, signal.default_int_handler)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--"] or len(sys.argv) < 3:
        sys.exit("usage: python -m tuner.processes -- COMMAND [ARGS...]")
    sys.exit(guard(sys.argv[2:]))

"""The fault cases of issue 21, run against an installed tuner as a hostile user would: stub
OpenAI servers on the loopback, fake model folders, edited run directories and profiles.

One row per case: the exit code (and the one expected), whether a traceback was printed, the
processes the case started that are still alive afterwards, and the files it left that it
should not have (temporary files, torn lines, files written for bad input, a marker written by
code that should never have run). `tests/e2e/checks/fault_check.sh` makes the fresh installs
and runs this with their Python; run by hand:

    python tests/e2e/checks/fault_check.py [--stub "PYTHON STUB.py"] [--only CASE ...]

`--stub` runs the stub server from a file instead of `python -m tuner.testing` (to check an
older tuner, whose `tuner.testing` has no hostile modes, with the stub of this one). Exit 0 when
every case is clean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import psutil

MARK = "FAULT_CHECK_CASE"
SMALL = (
    *("--model", "synthetic:tiny-llama", "--requests", "8", "--output-tokens", "4"),
    *("--repeats", "3", "--max-remeasures", "0", "--run-time-limit", "3"),
    *("--warmup-time-limit", "5"),
)


@dataclass
class Row:
    """One case's outcome."""

    case: str
    defect: str
    expected: str
    code: int | None = None
    traceback: bool = False
    processes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        codes = {int(c) for c in self.expected.split(" or ")}
        return (
            self.code in codes
            and not self.traceback
            and not self.processes
            and not self.files
            and not self.problems
        )


@dataclass
class Case:
    """The scratch folder of one case, its mark, and what it saw."""

    name: str
    folder: Path
    stub: str
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    outputs: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, MARK: self.mark}

    def tuner(
        self, *args: str, stdin: str | None = None, timeout_s: float = 600
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "tuner", *args],
            cwd=self.folder,
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        self.outputs += [done.stdout, done.stderr]
        return done

    def launch(self, *args: str, **popen: object) -> subprocess.Popen[str]:
        """`tuner ARGS` started (`finish` waits for it)."""
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            [sys.executable, "-m", "tuner", *args],
            cwd=self.folder,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )

    def start(self, *args: str, **popen: object) -> subprocess.Popen[str]:
        """`tuner ARGS` started; returns once a stub server of the case is up."""
        proc = self.launch(*args, **popen)
        end = time.monotonic() + 300
        while not self.stubs() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.2)
        return proc

    def finish(self, proc: subprocess.Popen[str]) -> int:
        out, err = proc.communicate(timeout=300)
        self.outputs += [out, err]
        return proc.returncode

    def marked(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if proc.pid != os.getpid() and proc.environ().get(MARK) == self.mark:
                    found.append(proc)
        return found

    def stubs(self) -> list[psutil.Process]:
        """The case's stub servers: `python -m tuner.testing ...` or `python .../stub.py ...`."""
        found = []
        for proc in self.marked():
            with contextlib.suppress(psutil.Error):
                argv = proc.cmdline()
                if argv[1:3] == ["-m", "tuner.testing"] or argv[1:2] == [self.stub_file]:
                    found.append(proc)
        return found

    @property
    def stub_file(self) -> str:
        words = self.stub.split()
        return words[1] if len(words) > 1 and words[1].endswith(".py") else ""

    def server_cmd(self, *flags: str) -> str:
        return " ".join([self.stub, "--port {port}", *flags])


def left_alive(case: Case, grace_s: float = 15) -> list[str]:
    """The case's processes still alive after a grace period (then killed)."""
    end = time.monotonic() + grace_s
    while case.marked() and time.monotonic() < end:
        time.sleep(0.3)
    names = []
    for proc in case.marked():
        with contextlib.suppress(psutil.Error):
            names.append(" ".join(proc.cmdline())[:80])
            proc.kill()
    return names


def unexpected_files(folder: Path, before: set[Path], allowed: tuple[str, ...]) -> list[str]:
    """New files that no pattern of `allowed` covers, temporary files wherever they are, torn
    lines in trials files (but those a case broke itself, `PATH:as-given`), and markers."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path in before:
            continue
        if path.is_dir():  # an empty folder made for bad input (./profiles, say)
            if not any(path.iterdir()) and not any(fnmatch(f"{relative}/", a) for a in allowed):
                found.append(f"{relative}/")
            continue
        name = path.name
        temporary = name.startswith(".") and (".json." in name or "write-check" in name)
        if (
            temporary
            or name.startswith("MARKER")
            or not any(fnmatch(str(relative), a) for a in allowed)
        ):
            found.append(str(relative))
        elif name == "trials.jsonl" and f"{relative}:as-given" not in allowed:
            found += [f"{relative}: {n} torn" for n in [torn_lines(path)] if n]
    return found


def torn_lines(path: Path) -> int:
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = 1 if lines[-1].strip() else 0
    for line in lines[:-1]:
        try:
            json.loads(line)
        except ValueError:
            torn += 1
    return torn


CASES: dict[str, tuple[str, str, Callable[[Case], int], tuple[str, ...]]] = {}


def case(name: str, defect: str, expected: str, allowed: tuple[str, ...] = ()) -> Callable:
    def register(fn: Callable[[Case], int]) -> Callable[[Case], int]:
        CASES[name] = (defect, expected, fn, allowed)
        return fn

    return register


def bench_stub(c: Case, *flags: str) -> int:
    args = ["bench", "--engine", "openai-server", *SMALL, "--server-cmd", c.server_cmd(*flags)]
    return c.tuner(*args).returncode


def slow_study(c: Case, *extra: str) -> list[str]:
    return [
        *("tune", "--engine", "openai-server", *SMALL[:12], "--run-time-limit", "60"),
        *("--warmup-time-limit", "60", "--trials", "2", "--confirm", "0"),
        *("--server-cmd", c.server_cmd("--delay-s 0.5", "--child")),
        *("--run-dir", "run", "--profiles-dir", "profiles", *extra),
    ]


# -- 1 and 10: processes -------------------------------------------------------------------------


@case("server answers 500 to everything (bench)", "1", "1")
def _(c: Case) -> int:
    return bench_stub(c, "--mode 500", "--child")


@case("server exits mid-run (bench)", "1", "1")
def _(c: Case) -> int:
    return bench_stub(c, "--mode exit")


@case("server trial killed at its timeout (bench)", "1", "1")
def _(c: Case) -> int:
    args = ["bench", "--engine", "openai-server", *SMALL, "--warmup-time-limit", "120"]
    args += ["--trial-timeout", "5", "--server-cmd", c.server_cmd("--mode hang", "--child")]
    return c.tuner(*args).returncode


@case("SIGTERM to tuner mid-study, then --resume", "1, 10", "130", ("run/**", "profiles/**"))
def _(c: Case) -> int:
    proc = c.start(*slow_study(c))
    proc.send_signal(signal.SIGTERM)
    code = c.finish(proc)
    if "interrupted: finished trials are kept" not in " ".join(c.outputs[-1].split()):
        c.outputs.append("PROBLEM: no 'interrupted' line")
    if left_alive(c):
        c.outputs.append("PROBLEM: processes alive after SIGTERM, before the resume")
    resumed = c.tuner("tune", "--resume", "run", "--trials", "1").returncode
    if resumed != 0:
        c.outputs.append(f"PROBLEM: the resume exited {resumed}")
    return code


@case("kill -9 of tuner mid-trial", "1", "-9", ("run/**",))
def _(c: Case) -> int:
    proc = c.start(*slow_study(c))
    proc.kill()
    return c.finish(proc)


@case("kill -9 of tuner's whole process group", "1", "-9", ("run/**",))
def _(c: Case) -> int:
    proc = c.start(*slow_study(c), start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    return c.finish(proc)


@case("Dask worker killed mid server trial", "1", "130", ("run*/**", "profiles/**"))
def _(c: Case) -> int:
    proc = c.start(*slow_study(c, "--workers", "1"))
    stubs = c.stubs()
    if stubs:
        tree = [stubs[0], *stubs[0].parents()]
        dask_worker = next((p for p in tree if "distributed" in " ".join(p.cmdline())), None)
        if dask_worker is None:  # the trial process's parent: the worker spawned by Dask
            dask_worker = tree[min(3, len(tree) - 1)]
        dask_worker.kill()
        _, alive = psutil.wait_procs(stubs, timeout=20)
        if alive:
            c.outputs.append("PROBLEM: the server outlived its Dask worker")
    proc.send_signal(signal.SIGTERM)
    return c.finish(proc)


# -- 2: a taken port -----------------------------------------------------------------------------


@contextlib.contextmanager
def foreign_server(c: Case) -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [*shlex.split(c.stub.replace("{python}", shlex.quote(sys.executable))), "--port"]
    proc = subprocess.Popen([*argv, str(port)])  # not the case's: someone else's
    time.sleep(1.5)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


@case("--port taken by someone else's server", "2", "2")
def _(c: Case) -> int:
    with foreign_server(c) as port:
        args = ["tune", "--engine", "openai-server", *SMALL, "--trials", "2", "--confirm", "0"]
        args += ["--port", str(port), "--server-cmd", c.server_cmd("--mode 500")]
        args += ["--run-dir", "run", "--profiles-dir", "profiles"]
        return c.tuner(*args).returncode


# -- 3: a hung or broken stream ------------------------------------------------------------------


@case("stream hangs after one token (tune)", "3", "1", ("run/**",))
def _(c: Case) -> int:
    args = ["tune", "--engine", "openai-server", *SMALL, "--trials", "2", "--confirm", "0"]
    args += ["--server-cmd", c.server_cmd("--mode hang"), "--run-dir", "run"]
    code = c.tuner(*args, "--profiles-dir", "profiles").returncode
    if list(c.folder.glob("profiles/**/*.json")):
        c.outputs.append("PROBLEM: a profile was written")
    return code


for _mode in ("hang", "null", "array"):

    @case(f"stream {_mode} (bench)", "3", "1")
    def _(c: Case, mode: str = _mode) -> int:
        return bench_stub(c, f"--mode {mode}")


# -- 4: a model folder that ships code -----------------------------------------------------------


def code_folder(c: Case) -> Path:
    from tuner.models import resolve_model

    folder = c.folder / "evil"
    shutil.copytree(resolve_model("synthetic:tiny-llama").path, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "evil_code.py").write_text(f"open({str(c.folder / 'MARKER')!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="evilllama",
        auto_map={"AutoConfig": "evil_code.C", "AutoModelForCausalLM": "evil_code.M"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@case("printf 'y' | tuner knobs --model CODE_FOLDER", "4", "2", ("evil/**",))
def _(c: Case) -> int:
    folder = code_folder(c)
    return c.tuner("knobs", "--engine", "hf", "--model", str(folder), stdin="y\n").returncode


# -- 5 to 7: the run directory -------------------------------------------------------------------


def fake_study(c: Case, trials: int, *extra: str) -> list[str]:
    return [
        *("tune", "--engine", "tuner.testing:FakeEngine", "--model", str(fake_model(c))),
        *("--workload", "synthetic", "--requests", "8", "--output-tokens", "4"),
        *("--run-time-limit", "5", "--warmup-time-limit", "5", "--optimizer", "random"),
        *("--trials", str(trials), "--run-dir", "run", "--profiles-dir", "profiles", *extra),
    ]


def fake_model(c: Case) -> Path:
    from tuner.testing import fake_model_dir

    folder = c.folder / "fake-model"
    return folder if folder.is_dir() else fake_model_dir(folder)


@case("torn last line, then --resume twice", "5", "0", ("run/**", "profiles/**", "fake-model/**"))
def _(c: Case) -> int:
    c.tuner(*fake_study(c, 3))
    with open(c.folder / "run" / "trials.jsonl", "a") as f:
        f.write('{"schema_version": 1, "numb')
    first = c.tuner("tune", "--resume", "run", "--trials", "5").returncode
    second = c.tuner("tune", "--resume", "run", "--trials", "6").returncode
    report = c.tuner("report", "run", "--out", "run/report-again").returncode
    return max(first, second, report)


@case(
    "two studies started together in one run dir",
    "6",
    "2",
    ("run/**", "profiles/**", "fake-model/**"),
)
def _(c: Case) -> int:
    procs = [c.launch(*fake_study(c, 4)) for _ in range(2)]
    codes = sorted(c.finish(p) for p in procs)
    numbers = [json.loads(line)["number"] for line in (c.folder / "run/trials.jsonl").open()]
    if len(numbers) != len(set(numbers)):
        c.outputs.append(f"PROBLEM: trial numbers twice: {sorted(numbers)}")
    if codes != [0, 2]:
        c.outputs.append(f"PROBLEM: exit codes {codes}, not one study and one refusal")
    return codes[-1]


@case(
    "--resume --trials N while the study runs", "6", "2", ("run/**", "profiles/**", "fake-model/**")
)
def _(c: Case) -> int:
    args = [*fake_study(c, 2), "--engine", "tuner.testing:HangingEngine", "--set", "batch_size=80"]
    args += ["--trial-timeout", "60"]
    proc = c.launch(*args)
    end = time.monotonic() + 120
    while not (c.folder / "run" / "study.json").exists() and time.monotonic() < end:
        time.sleep(0.2)
    time.sleep(2)
    before = (c.folder / "run" / "study.json").read_bytes()
    code = c.tuner("tune", "--resume", "run", "--trials", "9").returncode
    if (c.folder / "run" / "study.json").read_bytes() != before:
        c.outputs.append("PROBLEM: study.json was rewritten")
    proc.send_signal(signal.SIGTERM)
    c.finish(proc)
    return code


def tmpfs(size: str, script: str, c: Case) -> int | None:
    """Runs `script` (sh) with a fresh tmpfs of `size` at $DISK, in a mount namespace of its
    own; None where this machine does not allow one."""
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return None
    disk = c.folder / "disk"
    disk.mkdir()
    full = f'mount -t tmpfs -o size={size} tmpfs "$DISK" && {script}'
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", full],
        cwd=c.folder,
        env={**c.env(), "DISK": str(disk), "PY": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    c.outputs += [done.stdout, done.stderr]
    return int((c.folder / "rc").read_text()) if (c.folder / "rc").exists() else done.returncode


@case(
    "run dir on a full 32 KiB tmpfs",
    "7",
    "2",
    ("run/**", "profiles/**", "fake-model/**", "disk/**", "rc", "out*"),
)
def _(c: Case) -> int:
    args = " ".join(shlex.quote(a) for a in fake_study(c, 60, "--confirm", "0"))
    args = args.replace("--run-dir run", '--run-dir "$DISK/run"')
    script = f'"$PY" -m tuner {args} > out.txt 2> out.err; echo $? > rc; cp -a "$DISK/run" run'
    code = tmpfs("32k", script, c)
    if code is None:
        c.outputs.append("SKIPPED: no tmpfs in a user namespace here")
        return 2
    c.outputs.append((c.folder / "out.err").read_text())
    if "disk is full" not in " ".join(c.outputs[-1].split()):
        c.outputs.append("PROBLEM: the line does not name the full disk")
    return code


@case(
    "profiles dir on a full tmpfs",
    "7",
    "2",
    ("run/**", "fake-model/**", "disk/**", "rc", "out*", "ls.txt"),
)
def _(c: Case) -> int:
    args = " ".join(shlex.quote(a) for a in fake_study(c, 2))
    args = args.replace("--profiles-dir profiles", '--profiles-dir "$DISK/profiles"')
    fill = 'dd if=/dev/zero of="$DISK/filler" bs=4k count=1000 2>/dev/null;'
    script = (
        f'{fill} "$PY" -m tuner {args} > out.txt 2> out.err; echo $? > rc; ls -aR "$DISK" > ls.txt'
    )
    code = tmpfs("64k", script, c)
    if code is None:
        c.outputs.append("SKIPPED: no tmpfs in a user namespace here")
        return 2
    listing = (c.folder / "ls.txt").read_text()
    if ".json." in listing:
        c.outputs.append(f"PROBLEM: a temporary profile was left: {listing}")
    c.outputs.append((c.folder / "out.err").read_text())
    return code


# -- 8 and 9: the shell --------------------------------------------------------------------------


def profile_copy(c: Case, source: str, **edits: object) -> Path:
    data = json.loads((REPO / source).read_text())
    if "knobs" in edits:
        data["best"]["knobs"] = edits["knobs"]
    if "gpu_name" in edits:
        data["gpu"]["name"] = edits["gpu_name"]
    path = c.folder / "edited.json"
    path.write_text(json.dumps(data))
    return path


@case("export env: knob named 'x;touch MARKER'", "8", "2", ("edited.json",))
def _(c: Case) -> int:
    path = profile_copy(c, HF_PROFILE, knobs={"x;touch MARKER": 1})
    done = c.tuner("profile", "export", str(path), "--format", "env")
    (c.folder / "profile.env").write_text(done.stdout)
    subprocess.run(["bash", "-c", "set -a; . ./profile.env"], cwd=c.folder, check=False)
    (c.folder / "profile.env").unlink()
    return done.returncode


@case("export env: GPU name with a newline, sourced", "8", "0", ("edited.json", "profile.env"))
def _(c: Case) -> int:
    path = profile_copy(c, VLLM_PROFILE, gpu_name="cpu\ntouch MARKER")
    done = c.tuner("profile", "export", str(path), "--format", "env", "--out", "profile.env")
    sourced = subprocess.run(["bash", "-c", "set -a; . ./profile.env"], cwd=c.folder, check=False)
    return done.returncode or sourced.returncode


@case('vllm-args through eval "set -- $(...)"', "8", "0", ("edited.json",))
def _(c: Case) -> int:
    tricky = "auto $(touch MARKER) 'x'"
    path = profile_copy(c, VLLM_PROFILE, knobs={"max_num_seqs": 8, "dtype": tricky})
    tuner = f"{shlex.quote(sys.executable)} -m tuner profile export {path} -f vllm-args"
    done = subprocess.run(
        ["bash", "-c", f'eval "set -- $({tuner})"; printf "%s\\n" "$@"'],
        cwd=c.folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.stdout.splitlines() != ["--max-num-seqs", "8", "--dtype", tricky]:
        c.outputs.append(f"PROBLEM: the arguments came out as {done.stdout.splitlines()}")
    return done.returncode


@case("{model} holding $(touch MARKER) inside sh -c", "9", "0", ("model*/**",))
def _(c: Case) -> int:
    from tuner.testing import fake_model_dir

    model = fake_model_dir(c.folder / "model $(touch MARKER)")
    command = f"sh -c 'test -d {{model}} && exec {c.stub} --port {{port}}'"
    args = ["bench", "--engine", "openai-server", "--model", str(model), "-w", "synthetic"]
    return c.tuner(
        *args, "--requests", "4", "--output-tokens", "2", "--server-cmd", command
    ).returncode


# -- 11: inputs ----------------------------------------------------------------------------------


def bad_input(name: str, says: str, inputs: tuple[str, ...] = ()) -> Callable:
    """A case of bad input: `make(case)` writes its inputs and returns tuner's arguments; its
    one line must say `says` (exit 2 for another reason is not this case handled)."""

    def register(make: Callable[[Case], list[str]]) -> Callable[[Case], list[str]]:
        @case(name, "11", "2", inputs)
        def _(c: Case) -> int:
            done = c.tuner(*make(c), timeout_s=120)  # bad input is told at once
            if done.returncode == 2 and says not in " ".join(done.stderr.split()):
                c.outputs.append(f"PROBLEM: the line does not say {says!r}")
            return done.returncode

        return make

    return register


def written(c: Case, name: str, data: bytes) -> str:
    (c.folder / name).write_bytes(data)
    return str(c.folder / name)


def broken_run(c: Case, name: str) -> None:
    """A finished fake study whose `name` no longer reads as UTF-8."""
    c.tuner(*fake_study(c, 2))
    path = c.folder / "run" / name
    path.write_bytes(b"\xff\xfe" + path.read_bytes())


def with_config(c: Case, text: str) -> list[str]:
    folder = c.folder / "model"
    shutil.copytree(fake_model(c), folder)
    (folder / "config.json").write_text(text)
    args = fake_study(c, 2)
    args[args.index("--model") + 1] = str(folder)
    return args


RUN = ("run/**", "profiles/**", "fake-model/**")
SYNTHETIC = b"name: w\nsource: synthetic\nrequests: 8\n"
ON_TINY = ["tune", "--engine", "tuner.testing:FakeEngine", "--model", "synthetic:tiny-llama"]


@bad_input("workload YAML not UTF-8", "is not UTF-8 text", ("w.yaml", "fake-model/**"))
def _(c: Case) -> list[str]:
    return [*fake_study(c, 2), "-w", written(c, "w.yaml", b"name: w\xff\n")]


@bad_input("study.json not UTF-8 (--resume)", "is not UTF-8 text", RUN)
def _(c: Case) -> list[str]:
    broken_run(c, "study.json")
    return ["tune", "--resume", "run"]


@bad_input(
    "trials.jsonl not UTF-8 (--resume)", "not UTF-8 text", (*RUN, "run/trials.jsonl:as-given")
)
def _(c: Case) -> list[str]:
    broken_run(c, "trials.jsonl")
    return ["tune", "--resume", "run", "--trials", "3"]


@bad_input("machine.json not UTF-8 (report)", "is not UTF-8 text", RUN)
def _(c: Case) -> list[str]:
    broken_run(c, "machine.json")
    return ["report", "run", "--out", "again"]


for _text, _label, _says in (
    ("{not json", "garbage", "not valid JSON"),
    ("{}", "{}", "names no model_type"),
    ("[]", "[]", "expected a JSON object"),
    ('{"model_type": "llama", "num_hidden_layers": "two"}', "a wrong-typed field", 'is "two"'),
):

    @bad_input(f"config.json is {_label}", _says, ("model/**", "fake-model/**"))
    def _(c: Case, text: str = _text) -> list[str]:
        return with_config(c, text)


@bad_input('profile batch_size: "lots" (show)', "is not a value of this int knob", ("edited.json",))
def _(c: Case) -> list[str]:
    return ["profile", "show", str(profile_copy(c, HF_PROFILE, knobs={"batch_size": "lots"}))]


@bad_input(
    'profile batch_size: "lots" (export hf-kwargs)',
    "is not a value of this int knob",
    ("edited.json",),
)
def _(c: Case) -> list[str]:
    path = profile_copy(c, HF_PROFILE, knobs={"batch_size": "lots"})
    return ["profile", "export", str(path), "--format", "hf-kwargs"]


for _command, _label, _says in (
    ("{python} -m srv --port {port} --to {prot}", "an unknown {placeholder}", "not a placeholder"),
    ('srv --port {port} --json {"a": 1}', "a JSON brace", "write a literal brace"),
    ("srv --port {port} 'unbalanced", "an unbalanced quote", "cannot split"),
):

    @bad_input(f"--server-cmd with {_label}", _says)
    def _(c: Case, command: str = _command) -> list[str]:
        return ["tune", "--engine", "openai-server", *SMALL, "--server-cmd", command]


@bad_input("--slo ttft_p99_ms<=-1", "can never be met")
def _(c: Case) -> list[str]:
    args = ["tune", "--engine", "openai-server", *SMALL, "--server-cmd", c.server_cmd()]
    return [*args, "--slo", "ttft_p99_ms<=-1"]


@bad_input("YAML workload input_tokens: -3", "input_tokens", ("w.yaml", "fake-model/**"))
def _(c: Case) -> list[str]:
    return [*fake_study(c, 2), "-w", written(c, "w.yaml", SYNTHETIC + b"input_tokens: -3\n")]


@bad_input(
    "JSONL output_tokens: 1000000000000",
    "output_tokens must be an integer from 1 to",
    ("p.jsonl", "fake-model/**"),
)
def _(c: Case) -> list[str]:
    rows = b'{"prompt": "x", "output_tokens": 1000000000000}\n' + b'{"prompt": "y"}\n' * 7
    return [*fake_study(c, 2), "-w", "jsonl:" + written(c, "p.jsonl", rows)]


@bad_input(
    "prompt longer than the model's maximum", "beyond the model's maximum length", ("w.yaml",)
)
def _(c: Case) -> list[str]:
    return [*ON_TINY, "-w", written(c, "w.yaml", SYNTHETIC + b"input_tokens: 3000\n")]


@bad_input("a 10 MB prompt", "needs at least", ("p.jsonl",))
def _(c: Case) -> list[str]:
    row = json.dumps({"prompt": "def f(x):\n    return x\n" * 400_000}).encode() + b"\n"
    return [*ON_TINY, "--requests", "1", "-w", "jsonl:" + written(c, "p.jsonl", row)]


@bad_input("tune --slo on hf (no run dir left)", "needs the latency of each request")
def _(c: Case) -> list[str]:
    args = ["tune", "--engine", "hf", "--model", "synthetic:tiny-llama"]
    return [*args, "--slo", "ttft_p99_ms<=500", "--run-dir", "run"]


@bad_input("tune exit 2 (no ./profiles left)", "has no knob 'nope'")
def _(c: Case) -> list[str]:
    return ["tune", "--model", "synthetic:tiny-llama", "--set", "nope=1"]


# -- 12: packaging -------------------------------------------------------------------------------


@case("openai-server study with a stub (this install)", "12", "0", ("run/**", "profiles/**"))
def _(c: Case) -> int:
    args = ["tune", "--engine", "openai-server", *SMALL, "--trials", "3", "--confirm", "1"]
    return c.tuner(
        *args, "--server-cmd", c.server_cmd(), "--run-dir", "run", "--profiles-dir", "profiles"
    ).returncode


@case("hf-server study (this install)", "12", "0 or 2", ("run/**", "profiles/**"))
def _(c: Case) -> int:
    """Runs with transformers[serving] installed; without it, says in one line what to
    install (`--install plain` expects that)."""
    args = ["tune", "--engine", "hf-server", *SMALL, "--trials", "2", "--confirm", "0"]
    done = c.tuner(*args, "--run-dir", "run", "--profiles-dir", "profiles")
    wanted = 2 if INSTALL == "plain" else 0
    if done.returncode != wanted:
        c.outputs.append(f"PROBLEM: exit {done.returncode} in the {INSTALL} install")
    if done.returncode == 2 and "pip install -e '.[hf-server]'" not in done.stderr:
        c.outputs.append("PROBLEM: exit 2 without naming the install")
    return done.returncode


# -- the run -------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[3]
#: Which install is checked: `hf-server` (pip install -e ".[hf-server]") or `plain`.
INSTALL = "hf-server"
HF_PROFILE = "profiles/cpu/hf/synthetic-tiny-llama--humaneval-64x16.json"
VLLM_PROFILE = "profiles/cpu/vllm/synthetic-tiny-llama--humaneval-164x64.json"


def run_case(name: str, root: Path, stub: str) -> Row:
    defect, expected, fn, allowed = CASES[name]
    folder = root / f"case-{len(list(root.iterdir())):02d}"
    folder.mkdir()
    c = Case(name, folder, stub)
    before = set(folder.rglob("*"))
    row = Row(name, defect, expected)
    try:
        row.code = fn(c)
    except Exception as exc:  # a case that cannot run is a problem of its own
        row.problems.append(f"{type(exc).__name__}: {exc}"[:200])
    row.processes = left_alive(c)
    row.files = unexpected_files(folder, before, allowed)
    text = "\n".join(c.outputs)
    row.traceback = "Traceback (most recent call last)" in text
    row.problems += [line for line in text.splitlines() if line.startswith(("PROBLEM", "SKIPPED"))]
    if row.code == -signal.SIGKILL and "-9" in expected:
        row.code = -9
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| case | defect | exit (expected) | traceback | processes left | files left | clean |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        notes = "; ".join(r.problems)
        lines.append(
            f"| {r.case} | {r.defect} | {r.code} ({r.expected}) | {'yes' if r.traceback else 'no'}"
            f" | {len(r.processes)}{': ' + ', '.join(r.processes) if r.processes else ''}"
            f" | {len(r.files)}{': ' + ', '.join(r.files[:4]) if r.files else ''}"
            f" | {'yes' if r.clean else 'NO'}{' (' + notes + ')' if notes else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", default="{python} -m tuner.testing")
    parser.add_argument("--only", nargs="*", help="cases whose name holds one of these")
    parser.add_argument("--install", choices=["hf-server", "plain"], default="hf-server")
    args = parser.parse_args()
    global INSTALL
    INSTALL = args.install
    names = [n for n in CASES if not args.only or any(o in n for o in args.only)]
    with tempfile.TemporaryDirectory(prefix="tuner-fault-check-") as root:
        os.environ.setdefault("TUNER_CACHE", str(Path(root) / "cache"))
        os.environ["HF_HUB_OFFLINE"] = "1"
        (Path(root) / "cases").mkdir()
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from tuner.models import resolve_model as r; r('synthetic:tiny-llama')",
            ],
            check=True,
        )
        rows = []
        for name in names:
            start = time.monotonic()
            rows.append(run_case(name, Path(root) / "cases", args.stub))
            print(
                f"  {'ok ' if rows[-1].clean else 'NO '} {name} ({time.monotonic() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(table(rows))
    clean = sum(r.clean for r in rows)
    print(f"\n{clean} of {len(rows)} cases clean.")
    sys.exit(0 if clean == len(rows) else 1)


if __name__ == "__main__":
    main()

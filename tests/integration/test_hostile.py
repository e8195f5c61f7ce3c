"""tuner tried as a hostile user would (issue 21): someone else's server on the port, broken
streams, a model folder that ships code, edited profiles, shell metacharacters in a model path,
bad inputs, and what the server engines import. Processes and run directories under faults are
in test_processes.py and test_rundir.py."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO_ROOT
from tests.unit.test_export import HF_CPU, HF_SERVER_CPU, VLLM_CPU
from tuner.cli.app import app
from tuner.engines.base import EngineFailed, EngineTimeout
from tuner.engines.command import fill, split
from tuner.engines.server import CommandServer, ServerProcess, free_port
from tuner.errors import TunerError
from tuner.measure.measurement import Measurement, Run, completed
from tuner.measure.objective import THROUGHPUT
from tuner.measure.trial import TrialResult
from tuner.profiles.formats import export
from tuner.profiles.profile import read_profile

from .test_cli import assert_one_line_error, fake_args

ROOT = REPO_ROOT
runner = CliRunner()
STUB = "{python} -m tuner.testing --port {port}"
COMMON = (
    *("--model", "synthetic:tiny-llama", "--requests", "8", "--output-tokens", "4"),
    *("--repeats", "3", "--max-remeasures", "0", "--run-time-limit", "3"),
    *("--warmup-time-limit", "5"),
)


def tuner(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, and one line on stderr holding `message`, no traceback."""
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def foreign_server() -> Iterator[int]:
    """Someone else's server, answering /health on a loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuner.testing", "--port", str(port)])
    while True:
        assert proc.poll() is None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.1)
    yield port
    proc.kill()
    proc.wait()


# -- 2: a taken port ---------------------------------------------------------------------------


def test_a_taken_port_is_one_line_and_no_study(tmp_path: Path, foreign_server: int) -> None:
    done = tuner(
        *("tune", "--engine", "openai-server", *COMMON, "--trials", "2", "--confirm", "0"),
        *("--port", str(foreign_server), "--server-cmd", f"{STUB} --mode 500"),
        *("--run-dir", "run", "--profiles-dir", "profiles"),
        cwd=tmp_path,
    )
    one_line(done, f"port {foreign_server} on 127.0.0.1 is in use by another process")
    assert list(tmp_path.iterdir()) == []


def test_a_port_taken_by_the_time_of_a_load_fails_the_trial(
    tiny_model: Path, foreign_server: int
) -> None:
    with pytest.raises(EngineFailed, match="is in use by another process"):
        CommandServer(tiny_model, {}, {"server_cmd": STUB, "port": foreign_server})


def test_another_process_answering_the_port_is_not_the_launched_server(
    tmp_path: Path, foreign_server: int
) -> None:
    server = ServerProcess(["sleep", "60"], foreign_server, tmp_path / "server.log")
    try:
        with pytest.raises(EngineFailed, match="is in use by another process"):
            server.wait_ready(3)
    finally:
        server.close()
    # A launched server that exits is seen to exit, whatever answers its port.
    server = ServerProcess(["sh", "-c", "exit 3"], foreign_server, tmp_path / "server2.log")
    try:
        server.wait_ready(60)
        assert server.exited() is not None and server.exited()[0] == 3  # type: ignore[index]
    finally:
        server.close()


# -- 3: a hung or broken stream ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("hang", "timeout", "the warm-up completed no request within its 5 s limit (8 cut"),
        ("null", "crashed", "stream event is not a JSON object: null"),
        ("array", "crashed", "stream event is not a JSON object: [1, 2, 3]"),
        ("garbage", "crashed", "JSONDecodeError"),
        ("empty", "crashed", "the answer held no token"),
    ],
)
def test_a_broken_stream_is_never_a_measurement(
    tmp_path: Path, mode: str, status: str, reason: str
) -> None:
    done = tuner(
        *("bench", "--engine", "openai-server", *COMMON, "--json"),
        *("--server-cmd", f"{STUB} --mode {mode}"),
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == status and reason in result["reason"], result["reason"]


@pytest.mark.slow
def test_a_study_of_a_hanging_server_writes_no_profile(tmp_path: Path) -> None:
    done = tuner(
        *("tune", "--engine", "openai-server", *COMMON, "--trials", "2", "--confirm", "0"),
        *("--server-cmd", f"{STUB} --mode hang", "--run-dir", "run"),
        *("--profiles-dir", "profiles"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "no trial succeeded" in done.stderr
    assert not list(tmp_path.glob("profiles/**/*.json"))
    trials = [json.loads(line) for line in (tmp_path / "run/trials.jsonl").read_text().splitlines()]
    assert {t["status"] for t in trials} == {"timeout"}


def test_a_run_that_completes_no_request_is_not_a_measurement() -> None:
    cut = Run(elapsed_s=3.0, requests=0, input_tokens=0, output_tokens=0, truncated=True)
    with pytest.raises(EngineTimeout, match="timed run 2 completed no request within its 3 s"):
        completed(cut.model_copy(update={"cut_requests": 8}), "timed run 2", 3.0)
    # A trial with such runs (an older tuner recorded them as ok) can never win.
    m = Measurement.from_runs(cut, [cut] * 3)
    trial = TrialResult(
        number=0,
        origin="x",
        knobs={},
        status="ok",
        measurement=m,
        wall_s=1,
        started_at=datetime.now(UTC),
    )
    assert THROUGHPUT.feasible(trial) == "no output token was measured: not a measurement"
    assert THROUGHPUT.best([trial]) is None


# -- 4: a model folder that ships code ---------------------------------------------------------


def code_folder(tmp_path: Path, tiny_model: Path, *, where: str = "config.json") -> Path:
    """The tiny Llama renamed to an architecture transformers does not ship, with the code for
    it in the folder (writing MARKER when imported) and no tokenizer.json."""
    folder = tmp_path / "evil"
    shutil.copytree(tiny_model, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "evil_code.py").write_text(f"open({str(tmp_path / 'MARKER')!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evilllama"
    auto_map = {"AutoConfig": "evil_code.EvilConfig", "AutoTokenizer": ["evil_code.Tok", None]}
    if where == "config.json":
        config["auto_map"] = auto_map
    else:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        (folder / "tokenizer_config.json").write_text(
            json.dumps({**tokenizer_config, "auto_map": auto_map})
        )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
@pytest.mark.parametrize("command", ["knobs", "bench", "tune"])
def test_a_model_folders_code_never_runs(
    tmp_path: Path, tiny_model: Path, where: str, command: str
) -> None:
    folder = code_folder(tmp_path, tiny_model, where=where)
    done = tuner(command, "--engine", "hf", "--model", str(folder), cwd=tmp_path, stdin="y\n")
    one_line(done, f"needs code of its own ({where} maps classes to evil_code.py)")
    assert not (tmp_path / "MARKER").exists()


def test_an_architecture_transformers_does_not_ship_is_one_line(
    tmp_path: Path, tiny_model: Path
) -> None:
    folder = code_folder(tmp_path, tiny_model)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    done = tuner("knobs", "--engine", "hf", "--model", str(folder), cwd=tmp_path, stdin="y\n")
    one_line(done, "has no model type 'evilllama'; tuner does not run a model folder's own code")
    assert not (tmp_path / "MARKER").exists()


def test_the_tokenizer_never_asks_to_run_code(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.specs.workloads import Tokenizer

    folder = code_folder(tmp_path, tiny_model)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # the answer transformers asks for
    with pytest.raises(TunerError, match="cannot load the tokenizer of"):
        Tokenizer(folder)
    assert not (tmp_path / "MARKER").exists()


# -- 8: profile export in the shell ------------------------------------------------------------


def edited(path: Path, tmp_path: Path, **changes: Any) -> Path:
    """A committed profile with parts of its JSON replaced (`best_knobs`, `gpu_name`,
    `engine_name`), written to tmp_path."""
    data = json.loads(path.read_text())
    if "best_knobs" in changes:
        data["best"]["knobs"] = changes["best_knobs"]
    if "gpu_name" in changes:
        data["gpu"]["name"] = changes["gpu_name"]
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return out


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_knob_name_that_is_not_an_identifier_is_refused(tmp_path: Path) -> None:
    profile = edited(HF_CPU, tmp_path, best_knobs={"x;touch MARKER": 1})
    result = runner.invoke(app, ["profile", "export", str(profile), "--format", "env"])
    assert_one_line_error(result, "not a valid profile")


def test_the_env_file_only_sets_variables_whatever_the_profile_holds(tmp_path: Path) -> None:
    profile = edited(
        VLLM_CPU,
        tmp_path,
        gpu_name="cpu\ntouch MARKER\n",
        best_knobs={"max_num_seqs": 8, "dtype": "auto$(touch MARKER2)'\""},
    )
    env_file = tmp_path / "profile.env"
    env_file.write_text(export(read_profile(profile), "env"))
    done = bash(f'set -a; . {shlex.quote(str(env_file))}; printf %s "$TUNER_KNOB_DTYPE"', tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "auto$(touch MARKER2)'\""
    assert not list(tmp_path.glob("MARKER*"))


@pytest.mark.parametrize("fmt", ["vllm-args", "hf-serve"])
def test_exported_flags_survive_the_shell_as_the_readme_uses_them(tmp_path: Path, fmt: str) -> None:
    tricky = "auto $(touch MARKER) 'x' \"y\""
    if fmt == "vllm-args":
        profile = edited(VLLM_CPU, tmp_path, best_knobs={"max_num_seqs": 8, "dtype": tricky})
        expected = ["--max-num-seqs", "8", "--dtype", tricky]
        script = 'eval "set -- $(tuner profile export P -f vllm-args)"'
    else:
        profile = edited(HF_SERVER_CPU, tmp_path, best_knobs={"dtype": tricky, "concurrency": 4})
        expected = ["transformers", "serve", "MODEL", "--continuous-batching", "--dtype", tricky]
        script = "eval \"set -- $(tuner profile export P -f hf-serve | grep -v '^#')\""
    tuner_cmd = f"{shlex.quote(sys.executable)} -m tuner"
    script = script.replace("tuner profile export P", f"{tuner_cmd} profile export {profile}")
    done = bash(script + "; printf '%s\\n' \"$@\"", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected
    assert not (tmp_path / "MARKER").exists()


# -- 9: a model path in a shell script ---------------------------------------------------------


def test_a_model_path_stays_one_word_inside_sh_c(tmp_path: Path, fake_model: Path) -> None:
    model = tmp_path / "model $(touch MARKER)"
    shutil.copytree(fake_model, model)
    command = "sh -c 'test -d {model} && exec {python} -m tuner.testing --port {port}'"
    done = tuner(
        *("bench", "--engine", "openai-server", "--model", str(model), "--workload", "synthetic"),
        *("--requests", "4", "--output-tokens", "2", "--server-cmd", command, "--json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "MARKER").exists()


def test_placeholders_are_whole_arguments_or_shell_quoted_in_a_script() -> None:
    values = {"python": "py", "model": "/m $(x) 'q'", "host": "h", "port": "1"}
    assert fill("{python} -m srv --model {model} {args}", values, ["--a", "b c"]) == [
        *("py", "-m", "srv", "--model", "/m $(x) 'q'", "--a", "b c"),
    ]
    script = fill("bash -lc 'exec srv {model} {args}'", values, ["--a", "b c"])
    assert script[:2] == ["bash", "-lc"]
    assert shlex.split(script[2]) == ["exec", "srv", "/m $(x) 'q'", "--a", "b c"]
    assert fill("srv --json '{{\"level\": 3}}'", values, []) == ["srv", "--json", '{"level": 3}']


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("srv --port {prot}", "{prot} is not a placeholder; known: {model}, {port}"),
        ('srv --port {port} --json {"a": 1}', "write a literal brace as {{ or }}"),
        ("srv --port {port} 'unbalanced", "cannot split"),
        ("srv --port={port} --flags={args}", "{args} stands for several arguments"),
        ("srv --port {port!r}", "{port!r} is not a placeholder"),
    ],
)
def test_a_malformed_server_command_is_one_line(
    fake_model: Path, tmp_path: Path, template: str, message: str
) -> None:
    with pytest.raises(TunerError, match=re.escape(message)):
        split(template)
    args = fake_args(fake_model, tmp_path)
    args[args.index("--engine") + 1] = "openai-server"
    result = runner.invoke(app, ["tune", *args, "--server-cmd", template])
    assert_one_line_error(result, message)
    assert not (tmp_path / "run").exists()


# -- 11: inputs that escaped as tracebacks ----------------------------------------------------


def model_with_config(tmp_path: Path, fake_model: Path, text: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(fake_model, folder)
    (folder / "config.json").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{not json", "config.json: not valid JSON (line 1"),
        ("{}", "config.json names no model_type"),
        ("[]", "config.json: expected a JSON object, found list"),
        ('{"model_type": "llama", "num_hidden_layers": "two"}', 'num_hidden_layers is "two"'),
        ('{"model_type": "llama", "vocab_size": -5}', "vocab_size is -5, not a positive integer"),
    ],
)
def test_a_broken_model_config_is_one_line(
    fake_model: Path, tmp_path: Path, config: str, message: str
) -> None:
    folder = model_with_config(tmp_path, fake_model, config)
    result = runner.invoke(app, ["tune", *fake_args(folder, tmp_path)])
    assert_one_line_error(result, message)


def test_text_files_that_are_not_utf8_are_one_line(
    fake_model: Path, tmp_path: Path, a_finished_run: Path
) -> None:
    workload = tmp_path / "w.yaml"
    workload.write_bytes(b"name: w\xff\nsource: synthetic\n")
    result = runner.invoke(app, ["tune", *fake_args(fake_model, tmp_path, "-w", str(workload))])
    assert_one_line_error(result, "is not UTF-8 text")
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b'{"prompt": "caf\xe9"}\n')
    args = fake_args(fake_model, tmp_path, "-w", f"jsonl:{prompts}")
    result = runner.invoke(app, ["tune", *args])
    assert_one_line_error(result, "is not UTF-8 text")

    run_dir = a_finished_run
    for name, message in (
        ("machine.json", "machine record"),
        ("trials.jsonl", "line 1: not a trial result (not UTF-8 text)"),
        ("study.json", "the study file"),
    ):
        path = run_dir / name
        original = path.read_bytes()
        path.write_bytes(b"\xff\xfe" + original)
        assert_one_line_error(runner.invoke(app, ["report", str(run_dir)]), message)
        if name != "machine.json":
            resumed = runner.invoke(app, ["tune", "--resume", str(run_dir), "-n", "3"])
            assert_one_line_error(resumed, message)
        path.write_bytes(original)


@pytest.mark.parametrize("fmt", ["hf-kwargs", None])
def test_a_profile_edited_to_a_wrong_type_is_one_line(tmp_path: Path, fmt: str | None) -> None:
    profile = edited(HF_CPU, tmp_path, best_knobs={"batch_size": "lots"})
    command = ["export", str(profile), "--format", fmt] if fmt else ["show", str(profile)]
    result = runner.invoke(app, ["profile", *command])
    assert_one_line_error(result, "knob batch_size: 'lots' is not a value of this int knob")


@pytest.mark.parametrize(
    ("slo", "message"),
    [
        ("ttft_p99_ms<=-1", "can never be met (ttft_p99_ms is never negative)"),
        ("ttft_p99_ms<=0", "can never be met"),
        ("output_tokens_per_s>=-5", "says nothing"),
        ("ttft_p99_ms<=1e999", "is not a finite number"),
    ],
)
def test_a_limit_that_cannot_hold_is_one_line(
    fake_model: Path, tmp_path: Path, slo: str, message: str
) -> None:
    result = runner.invoke(app, ["tune", *fake_args(fake_model, tmp_path, "--slo", slo)])
    assert_one_line_error(result, message)


def test_lengths_beyond_the_model_or_any_bound_are_one_line(tmp_path: Path) -> None:
    args = fake_args(Path("synthetic:tiny-llama"), tmp_path)
    workloads = {
        "negative.yaml": "name: n\nsource: synthetic\nrequests: 4\ninput_tokens: -3\n",
        "long.yaml": "name: l\nsource: synthetic\nrequests: 4\ninput_tokens: 3000\n",
    }
    messages = {
        "negative.yaml": "input_tokens",
        "long.yaml": "needs 3,000 prompt tokens and 4 output tokens, beyond the model's maximum "
        "length of 2,048 tokens",
    }
    for name, text in workloads.items():
        (tmp_path / name).write_text(text)
        result = runner.invoke(app, ["tune", *args, "-w", str(tmp_path / name)])
        assert_one_line_error(result, messages[name])
    huge = tmp_path / "huge.jsonl"
    huge.write_text(json.dumps({"prompt": "x", "output_tokens": 10**12}) + "\n")
    result = runner.invoke(app, ["tune", *args, "-w", f"jsonl:{huge}"])
    assert_one_line_error(result, "output_tokens must be an integer from 1 to 16,777,216")
    ten_mb = tmp_path / "ten-mb.jsonl"
    rows = [{"prompt": "def f(x):\n    return x\n" * 400_000}] + [{"prompt": "x"}] * 7
    ten_mb.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = runner.invoke(app, ["tune", *args, "-w", f"jsonl:{ten_mb}"])
    assert_one_line_error(result, "request 1 of the workload needs at least")


def test_bad_input_writes_nothing(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            *("tune", "--engine", "hf", "--model", "synthetic:tiny-llama"),
            *("--slo", "ttft_p99_ms<=500", "--run-dir", "run"),
        ],
    )
    assert_one_line_error(result, "ttft_p99_ms needs the latency of each request")
    result = runner.invoke(app, ["tune", "--model", str(fake_model), "--set", "nope=1"])
    assert result.exit_code == 2
    assert list(tmp_path.iterdir()) == []  # neither a run directory nor ./profiles


# -- 12: what the server engines import --------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Top-level names of every module a file imports, inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _requirement_names(requirements: list[str]) -> set[str]:
    names = (re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in requirements)
    return {n.lower().replace("_", "-") for n in names}


def test_what_openai_server_imports_is_in_the_plain_install() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(project["dependencies"])
    modules = [
        "tuner/engines/server.py",
        "tuner/engines/openai_client.py",
        "tuner/engines/command.py",
        "tuner/processes.py",
        "tuner/execution/worker.py",
        "tuner/measure/measurement.py",
    ]
    distributions = importlib.metadata.packages_distributions()
    needed = set()
    for module in modules:
        for name in _imports(ROOT / module) - set(sys.stdlib_module_names) - {"tuner"}:
            needed |= {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
    assert needed, "no third-party import found"
    assert needed <= declared, f"imported but not in the plain install: {needed - declared}"
    extra = _requirement_names(project["optional-dependencies"]["hf-server"])
    assert "transformers" in extra  # transformers[serving]: fastapi, uvicorn, openai

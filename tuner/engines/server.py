"""Server engines: a launcher starts an OpenAI-compatible server per load, and the shared load
client (`tuner.engines.openai_client`) measures it.

A load starts the server's command (`tuner.engines.command`: placeholders filled in as whole
arguments) on a free loopback port, in a process group of its own that gets SIGTERM should its
worker die (`tuner.processes`), with its log beside the worker's. It is ready when `/health`
answers (or `/v1/models`, for servers without a health route) and the port's listener is the
launched process or one of its children: a port someone else holds is a failed trial, never a
measurement of their server, and so is a launched server that exits, before or during a run.
Closing stops the whole process group, killing it if it does not stop.

`openai-server` is the plain launcher: any command that serves the OpenAI API (`--server-cmd`,
SGLang, TGI, llama.cpp's server, ...), measured as the command starts it; it needs no vLLM.
`vllm-server` (`tuner.engines.vllm_server`) launches vLLM's own server with the trial's knobs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tuner.engines import command, load_catalogue
from tuner.engines.base import (
    REQUEST_RATE,
    EngineBase,
    EngineFailed,
    EngineOutOfMemory,
    EngineTimeout,
    RunOutput,
)
from tuner.engines.metrics import run_metrics, scrape
from tuner.engines.openai_client import DIALECTS, OPENAI, Dialect, LoadClient, Prepared
from tuner.errors import TunerError
from tuner.processes import spawn, stop_group
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.workloads import Request

HOST = "127.0.0.1"
OPTIONS = {
    "server_cmd": "command template: {model} {port} {host} {args} {python} are filled in, each "
    "as one argument (shell-quoted inside a shell's -c script); literal braces doubled",
    "port": "port to serve on (default: a free one)",
    "request_rate": "requests per second: Poisson arrivals, or a trace's own scaled to this mean "
    "(default: a trace's arrivals, else all at once)",
    "ready_timeout_s": "seconds to wait for the server to answer /health (default 600)",
    "dialect": "what requests may say: vllm (token-id prompts, ignore_eos) or openai (text)",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` of the loopback now (nobody listens there)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def taken(port: int) -> str:
    return (
        f"port {port} on {HOST} is in use by another process: tuner measures only the server it "
        "starts; give another --port, or none for a free one"
    )


def cli_args(knobs: Mapping[str, Value]) -> list[str]:
    """Knobs as command-line flags, `--no-<flag>` for false (vLLM's and SGLang's spelling)."""
    args: list[str] = []
    for name, value in knobs.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


class ServerProcess:
    """One server started from its arguments, ready when it answers on its own port; stopped
    with its process group."""

    def __init__(self, argv: list[str], port: int, log_path: Path) -> None:
        self.command = shlex.join(argv)
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in close())
        self._log.write(f"$ {self.command}\n")
        self._log.flush()
        try:
            self.proc: subprocess.Popen[bytes] | None = spawn(argv, self._log)
        except OSError as exc:
            self._log.close()
            raise EngineFailed(f"cannot start the server ({self.command}): {exc}") from None

    def exited(self) -> tuple[int, str] | None:
        """(exit code, the log after the command line) once the server has exited."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            return None
        self._log.flush()
        return code, self.log_path.read_text(errors="replace").split("\n", 1)[-1]

    def listens(self) -> bool:
        """Whether the launched process, or one of its children, listens on the port."""
        import psutil

        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        for proc in tree:
            try:
                sockets = proc.net_connections(kind="inet")
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in sockets):
                return True
        return False

    def answers(self) -> bool:
        """Whether something answers `/health` (or `/v1/models`) on the port."""
        for route in ("/health", "/v1/models"):
            try:
                with urllib.request.urlopen(f"{self.base_url}{route}", timeout=2) as reply:
                    if reply.status == 200:
                        return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
        return False

    def wait_ready(self, timeout_s: float) -> None:
        """Returns when the server answers on a port it listens on itself, or has exited (the
        caller words the failure of an exited server); an `EngineFailed` when another process
        answers there, an `EngineTimeout` when nothing does in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.exited() is not None:
                return
            if self.listens() and self.answers():
                return
            time.sleep(0.5)
        if self.exited() is None and not self.listens() and self.answers():
            raise EngineFailed(taken(self.port))
        raise EngineTimeout(
            f"server did not answer /health within {timeout_s:.0f} s (log: {self.log_path})"
        )

    def served_model(self, fallback: str) -> str:
        """The model name the server serves (`/v1/models`), or `fallback`."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/v1/models", timeout=10) as reply:
                models = json.load(reply).get("data", [])
            return str(models[0]["id"]) if models else fallback
        except (urllib.error.URLError, OSError, ValueError, AttributeError, LookupError, TypeError):
            return fallback

    def close(self) -> None:
        """Stops the server's process group: SIGTERM, then SIGKILL after 30 s."""
        if self.proc is not None:
            stop_group(self.proc, grace_s=30)
        if not self._log.closed:
            self._log.close()


class ServerEngine(EngineBase):
    """An engine served over the OpenAI API: a launcher (the command, its flags, its dialect)
    and the shared load client. Subclasses set `default_command` and `dialect`, and may word a
    failed start in the server's own terms (`start_failure`)."""

    name: ClassVar[str]
    fresh_process_per_load: ClassVar[bool] = False  # the server is a process of its own
    reports_latency: ClassVar[bool] = True  # every request is streamed
    default_command: ClassVar[str | None] = None
    dialect: ClassVar[Dialect] = OPENAI
    options: ClassVar[Mapping[str, str]] = OPTIONS

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Fails with one line on an unknown or malformed option."""
        super().check_options(options)
        for key, value in options.items():
            if key == "server_cmd":
                words = command.split(str(value))
                if "port" not in options and not any("{port}" in w for w in words):
                    raise TunerError("--server-cmd needs {port} in it, or a fixed --port")
            if key == "dialect" and value not in DIALECTS:
                raise TunerError(f"--server-dialect takes {' or '.join(DIALECTS)}, not {value!r}")
            if key == "port" and not port_free(int(value)):
                raise TunerError(taken(int(value)))
        if not options.get("server_cmd") and cls.default_command is None:
            raise TunerError(f"{cls.name} needs --server-cmd: the command that starts the server")
        if options.get("request_rate") is not None and float(options["request_rate"]) <= 0:
            raise TunerError("request_rate must be positive")

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        options = dict(options or {})
        self.knobs = dict(knobs)
        port = int(options.get("port") or free_port())
        if not port_free(port):
            raise EngineFailed(taken(port))
        argv = command.fill(
            options.get("server_cmd") or self.default_command or "",
            {"python": sys.executable, "model": str(model_dir), "host": HOST, "port": str(port)},
            cli_args(knobs),
        )
        log_dir = Path(options["log_file"]).parent if options.get("log_file") else Path.cwd()
        self.server = ServerProcess(argv, port, log_dir / f"server-{os.getpid()}-{port}.log")
        try:
            self.server.wait_ready(float(options.get("ready_timeout_s") or 600))
            exited = self.server.exited()
            if exited is not None:
                raise self.start_failure(*exited)
            model_name = self.server.served_model(str(model_dir))
        except BaseException:
            self.server.close()
            raise
        dialect = DIALECTS[options["dialect"]] if options.get("dialect") else self.dialect
        self.client = LoadClient(
            self.server.base_url,
            model_name,
            dialect,
            request_rate=options.get("request_rate"),
        )
        #: Whether the server answers `/metrics` (scraped around each run, then).
        self.watch_metrics = scrape(self.server.base_url) is not None

    @classmethod
    def start_failure(cls, code: int, log_text: str) -> Exception:
        """The exception for a server that exited before it was ready, with `failure_cause`;
        out-of-memory when the adapter's `is_oom` reads it so."""
        cause = cls.failure_cause(log_text)
        message = f"server exited before it was ready (code {code}): {cause}"
        if cls.is_oom(EngineFailed(cause)):
            return EngineOutOfMemory(message)
        return EngineFailed(message)

    @classmethod
    def failure_cause(cls, log_text: str) -> str:
        """Why the server stopped, from its log: its last line."""
        lines = [line.strip() for line in log_text.splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Prepared:
        concurrency = knobs.get("concurrency")
        rate = knobs.get(REQUEST_RATE)
        return self.client.prepare(
            requests,
            int(concurrency) if concurrency else None,
            float(rate) if rate else None,
        )

    def run(self, prepared: Prepared, deadline: float) -> RunOutput:
        """One run of the load; a server that has exited (before the run or during it) fails
        the trial, whatever answers its port now."""
        self._check_running("before the run")
        before = scrape(self.client.base_url) if self.watch_metrics else None
        out = self.client.run(prepared, deadline)
        self._check_running("during the run")
        if before is None:
            return out
        found = run_metrics(before, scrape(self.client.base_url))
        return dataclasses.replace(out, engine_metrics=found)

    def _check_running(self, when: str) -> None:
        exited = self.server.exited()
        if exited is not None:
            code, log_text = exited
            raise EngineFailed(
                f"the server exited {when} (code {code}): {self.failure_cause(log_text)}"
            )

    def close(self) -> None:
        self.server.close()


def with_load(catalogue: Catalogue) -> Catalogue:
    """A server's catalogue with the client's load (`engines/server-load.yaml`: concurrency)
    as run-time knobs: no reload between loads of one server."""
    load = load_catalogue("server-load")
    return catalogue.model_copy(update={"knobs": {**catalogue.knobs, **load.knobs}})


class CommandServer(ServerEngine):
    """`openai-server`: the server `--server-cmd` starts, measured as it starts it. Its own
    flags are its command's, which tuner does not know: it searches only the load."""

    name: ClassVar[str] = "openai-server"

    @classmethod
    def catalogue(cls) -> Catalogue:
        return with_load(load_catalogue(cls.name))

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {}

"""One contract suite for every engine adapter tuner ships, the fake one included (as Optuna runs
one suite against every storage): `tuner.testing.check_engine_contract`, each in a process of
its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tuner.engines import ENGINES

STUB = "{python} -m tuner.testing --port {port}"
#: engine: (model, adapter options, knobs set over its defaults)
CASES = {
    "tuner.testing:FakeEngine": ("fake", {}, {}),
    "hf": ("synthetic:tiny-llama", {}, {}),
    "hf-pipeline": ("synthetic:tiny-llama", {}, {}),
    # At its defaults continuous batching sizes its KV cache from the free memory (90%): 21 GB
    # here, whose page faults took 23 s of the check's 30.
    "hf-cb": ("synthetic:tiny-llama", {}, {"num_blocks": 128}),
    "hf-server": ("synthetic:tiny-llama", {}, {"cb_num_blocks": 128}),
    "vllm": ("synthetic:tiny-llama", {}, {}),
    "vllm-server": ("synthetic:tiny-llama", {}, {}),
    "openai-server": ("synthetic:tiny-llama", {"server_cmd": STUB}, {}),
}
SLOW = {"hf", "hf-pipeline", "hf-cb", "hf-server", "vllm", "vllm-server"}  # real models


def marks(engine: str) -> list[pytest.MarkDecorator]:
    chosen = []
    if engine in SLOW:
        chosen.append(pytest.mark.slow)
    if engine.startswith("vllm"):
        chosen.append(pytest.mark.vllm)
    return chosen


def test_every_shipped_engine_is_covered() -> None:
    assert set(ENGINES) <= set(CASES)


@pytest.mark.spread  # each case checks in a process of its own
@pytest.mark.parametrize("engine", [pytest.param(e, marks=marks(e)) for e in CASES])
def test_engine_contract(engine: str, fake_model: Path, tmp_path: Path) -> None:
    model, options, knobs = CASES[engine]
    model = str(fake_model) if model == "fake" else model
    code = (
        "import json, sys\n"
        "from tuner.testing import check_engine_contract\n"
        "seen = check_engine_contract(sys.argv[1], sys.argv[2], options=json.loads(sys.argv[3]), "
        "knobs=json.loads(sys.argv[4]), log_dir=__import__('pathlib').Path(sys.argv[5]))\n"
        "print(json.dumps(seen))\n"
    )
    args = [engine, model, json.dumps(options), json.dumps(knobs), str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, errors_and_end(done.stderr)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["requests"] == 8 and seen["output_tokens"] == 32
    assert seen["gpu_indices"] == []  # the CPU


def test_the_adapter_in_docs_adapters_md_keeps_the_contract(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuner.testing import check_engine_contract

    page = (REPO_ROOT / "docs" / "adapters.md").read_text()
    example = page.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "echo_engine.py").write_text(example)
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = check_engine_contract("echo_engine:EchoEngine", str(fake_model), log_dir=tmp_path)
    assert seen["versions"] == {"echo": "1.0"}
    assert seen["requests"] == 8 and seen["output_tokens"] == 32


def errors_and_end(stderr: str) -> str:
    """The lines of a failed check's output that name an error (vLLM logs its root cause in a
    process of its own, long before the traceback that ends the output), and that end."""
    named = [line for line in stderr.splitlines() if "Error" in line or "ERROR" in line]
    return "\n".join(named[:40]) + "\n...\n" + stderr[-3000:]

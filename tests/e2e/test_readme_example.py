"""The README's Python example, run: a real study and bench of the embedded tiny model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ROOT = REPO_ROOT


@pytest.mark.slow
def test_the_readmes_python_example_tunes_and_benches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    block = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    profiles = list((tmp_path / "profiles").rglob("*.json"))
    assert len(profiles) == 1 and printed[0].endswith(str(profiles[0].relative_to(tmp_path)))
    assert printed[1].startswith("ok "), printed
    assert (tmp_path / "runs").is_dir()

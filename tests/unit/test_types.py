"""The type checker passes on tuner/ (its settings in pyproject.toml's [tool.mypy])."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ROOT = REPO_ROOT


def test_mypy_finds_no_error_in_tuner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mypy import api

    monkeypatch.chdir(ROOT)
    out, err, status = api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache")]
    )
    assert status == 0, out + err
    assert "Success: no issues found" in out

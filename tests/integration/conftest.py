"""Fixtures of the integration tier."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuner.cli.app import app

from .test_cli import fake_args


@pytest.fixture(scope="session")
def finished_run(fake_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished study's run directory, made once per session: `tuner tune` of the fake
    engine, 3 trials of random search. Tests that change it take a copy (`a_finished_run`)."""
    folder = tmp_path_factory.mktemp("finished")
    args = fake_args(fake_model, folder, "--optimizer", "random", "--trials", "3")
    result = CliRunner().invoke(app, ["tune", *args])
    assert result.exit_code == 0, result.output
    return folder / "run"


@pytest.fixture
def a_finished_run(finished_run: Path, tmp_path: Path) -> Path:
    """A copy of `finished_run` of this test's own, at `tmp_path / "run"`."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))

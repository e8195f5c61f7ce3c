"""The import layers: import-linter's contracts (pyproject.toml) and what importing tuner loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

ROOT = REPO_ROOT


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "6 kept, 0 broken" in done.stdout


def test_importing_tuner_loads_no_engine_and_no_optimizer_library() -> None:
    # The command line, the study loop, run directories and reports: importing them loads
    # neither torch nor vLLM nor any optimizer library (they load when a trial or a study runs).
    code = (
        "import sys, tuner, tuner.cli.app, tuner.study, tuner.report, tuner.ci\n"
        "import tuner.predict, tuner.predict.aiconfigurator\n"
        "heavy = ('torch', 'vllm', 'smac', 'ConfigSpace', 'optuna', 'hyperopt', 'transformers',\n"
        "         'aiconfigurator', 'aiconfigurator_core')\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == ""

"""Finds and reads the declarative specs: `engines/` (knob catalogues) and `workloads/`.

In a source checkout they sit at the top of the repository; an installed wheel carries them in
`tuner/_specs/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuner.errors import TunerError

_PACKAGE = Path(__file__).resolve().parent.parent


def spec_dir(kind: str) -> Path:
    """The folder holding the specs of one kind (`engines` or `workloads`)."""
    for candidate in (_PACKAGE / "_specs" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise TunerError(f"this installation of tuner lacks its {kind}/ folder")


def spec_names(kind: str) -> list[str]:
    """Names of the shipped specs of one kind, sorted."""
    return sorted(p.stem for p in spec_dir(kind).glob("*.yaml"))


def read_yaml(path: Path) -> dict[str, Any]:
    """Reads a YAML mapping, turning every failure into one clear `TunerError`."""
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise TunerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TunerError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise TunerError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    if not isinstance(data, dict):
        raise TunerError(f"{path}: expected a mapping at the top level")
    return data

"""A `tuner ci` config file: what runs, what is held, and how far it may fall (`CiConfig`,
`load_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuner.errors import TunerError
from tuner.measure.measurement import MeasurementProtocol
from tuner.specs.knobs import Value, describe


class CiConfig(BaseModel):
    """The config file of `tuner ci` (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    engine: str = "hf"
    model: str
    workload: str = "humaneval"
    requests: int | None = Field(default=None, ge=1)
    output_tokens: int | None = Field(default=None, ge=1)
    job: Literal["bench", "tune"] = Field(
        default="bench",
        description="bench: measure the held profile's knobs; tune: a bounded study",
    )
    trials: int = Field(default=8, ge=1, description="tune: trial budget, baseline included")
    time_budget_s: float | None = Field(default=None, gt=0, description="tune: wall-clock budget")
    seed: int = 0
    tolerance: float = Field(
        default=0.10, ge=0, lt=1, description="fall below the profile by more than this: fail"
    )
    profile: str = Field(
        default="auto",
        description="the profile to hold: auto (<profiles_dir>/<this GPU>/<engine>/"
        "<model>--<workload>-<requests>x<tokens>[--<objectives>][--<limits>].json) or a path",
    )
    profiles_dir: Path = Path("profiles")
    update_profile: bool = Field(
        default=False, description="write the new profile (where none exists, or to replace it)"
    )
    objectives: list[str] = Field(
        default=["output_tokens_per_s"],
        description="what the profile was tuned for (finds it under profile: auto)",
    )
    constraints: list[str] = Field(
        default=[], description="the limits it was tuned within, as metric<=value"
    )
    set: dict[str, Value] = Field(default={}, description="knobs held at these values")
    protocol: MeasurementProtocol = MeasurementProtocol()
    engine_options: dict[str, Any] = {}
    run_dir: Path | None = Field(default=None, description="default: runs/ci-<time>")
    summary: Path = Path("tuner-ci.md")
    junit: Path = Path("tuner-ci.xml")


def load_config(path: Path) -> CiConfig:
    """Reads a CI config; an unknown key is named, any other problem is one line."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TunerError(f"no CI config at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TunerError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise TunerError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TunerError(f"{path}: a CI config is a mapping of keys to values")
    unknown = sorted(set(data) - set(CiConfig.model_fields))
    if unknown:
        raise TunerError(
            f"{path}: unknown key {', '.join(map(repr, unknown))}; known keys: "
            f"{', '.join(CiConfig.model_fields)}"
        )
    try:
        return CiConfig.model_validate(data)
    except ValidationError as exc:
        raise TunerError(f"{path}: {describe(exc)}") from None

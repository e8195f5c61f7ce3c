"""Knob catalogues: the declarative files in `engines/`.

A catalogue lists an engine's knobs: type, range or choices, default, whether the knob acts at
load time or at run time, what the platform must offer, and when it applies.
`tuner.specs.space.resolve` drops what a platform cannot run and yields the `SearchSpace` a study
searches.

Range bounds may name facts of the platform, model and workload (`gpus`, `model_max_len`,
`workload_max_tokens`, `num_attention_heads`, ...). A knob with `engine_default: true` is left
unset in the baseline, so the engine picks its own value; its `default` is then only the centre
of the search. `per_device: {cpu: {...}}` overrides range and default on one kind of device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from tuner.errors import TunerError
from tuner.hardware.machine import FEATURES
from tuner.specs import rules

Value = bool | int | float | str
Stage = Literal["load", "run"]
#: A knob's name: an identifier (it becomes a flag, a keyword and a shell variable's name).
KNOB_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
KnobName = Annotated[str, StringConstraints(pattern=KNOB_NAME)]


def _check_requirements(requires: list[str]) -> list[str]:
    for req in requires:
        if req not in FEATURES and not req.startswith("module:"):
            known = ", ".join(sorted(FEATURES))
            raise ValueError(f"unknown requirement {req!r} (known: {known}, module:<name>)")
    return requires


class ChoiceSpec(BaseModel):
    """One value of a `choice` knob, with what the platform must offer for it."""

    model_config = ConfigDict(extra="forbid")
    value: Value
    requires: list[str] = []

    @model_validator(mode="after")
    def _known_requirements(self) -> ChoiceSpec:
        _check_requirements(self.requires)
        return self


Bound = float | str


#: Knobs whose product is the number of GPUs a configuration uses.
PARALLEL_KNOBS = (
    "num_gpus",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
)


def gpus_of(knobs: Mapping[str, Value]) -> int:
    """GPUs a configuration uses: tensor x pipeline x data parallel size, or `num_gpus`."""
    gpus = 1
    for name in PARALLEL_KNOBS:
        value = knobs.get(name, 1)
        gpus *= value if isinstance(value, int) and not isinstance(value, bool) else 1
    return gpus


class DeviceOverride(BaseModel):
    """Range and default of a knob on one kind of device (`per_device: {cpu: ...}`)."""

    model_config = ConfigDict(extra="forbid")
    range: tuple[Bound, Bound] | None = None
    default: Value | list[Value] | None = None
    engine_default: bool | None = None


class KnobSpec(BaseModel):
    """One knob as a catalogue file writes it."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["int", "float", "bool", "choice"]
    stage: Stage
    help: str
    default: Value | list[Value]
    engine_default: bool = False
    #: Memory grows with this number: after an out-of-memory trial the study tries the same
    #: configuration with it one step smaller (`SearchSpace.backed_off`).
    backoff: bool = False
    #: The load: a number that throughput mostly grows with until memory or a latency limit
    #: stops it (a batch size, the sequences run at once, the client's concurrency). The
    #: optimizers that know serving (`descend`, `ladder`) search it as an ordered line for each
    #: setting of the other knobs.
    load: bool = False
    range: tuple[Bound, Bound] | None = None
    log: bool = False
    divides: str | None = None
    values: list[int | float] | None = None
    choices: list[Value | ChoiceSpec] | None = None
    requires: list[str] = []
    when: dict[str, Value | list[Value]] | None = None
    #: Set by an adapter that checks its catalogue against the installed library: why the knob
    #: cannot be set with it (the space leaves it out with this reason).
    unavailable: str | None = None
    # Not `on`: YAML 1.1 reads a bare `on` key as the boolean true.
    per_device: dict[Literal["cpu", "cuda"], DeviceOverride] = {}

    @model_validator(mode="after")
    def _consistent(self) -> KnobSpec:
        _check_requirements(self.requires)
        numeric = self.type in ("int", "float")
        if self.values is not None:
            if not numeric or not self.values:
                raise ValueError("only int and float knobs take values, and at least one")
            if self.range is None:
                self.range = (min(self.values), max(self.values))
        if numeric and self.range is None:
            raise ValueError(f"an {self.type} knob needs a range")
        if not numeric and (self.range is not None or self.log):
            raise ValueError("only int and float knobs take a range or log")
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice knob needs choices")
        if self.type != "choice" and self.choices is not None:
            raise ValueError("only choice knobs take choices")
        if isinstance(self.default, list) and self.type != "choice":
            raise ValueError("only choice knobs take a list of preferred defaults")
        if self.divides is not None and self.type != "int":
            raise ValueError("only int knobs take divides")
        if self.load and not numeric:
            raise ValueError("only int and float knobs can be the load")
        return self

    def on_device(self, device: str) -> KnobSpec:
        """This knob with the overrides for `device` applied."""
        override = self.per_device.get(device)  # type: ignore[call-overload]
        if override is None:
            return self
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.model_copy(update=changes)

    def type_error(self, value: Value) -> str | None:
        """Why `value` cannot be this knob's, going by its type alone; None when it can."""
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.type == "int":
            fits = number and isinstance(value, int)
        elif self.type == "float":
            fits = number
        elif self.type == "bool":
            fits = isinstance(value, bool)
        else:
            fits = any(type(c.value) is type(value) for c in self.choice_specs())
        return None if fits else f"{value!r} is not a value of this {self.type} knob"

    def choice_specs(self) -> list[ChoiceSpec]:
        if self.type == "bool":
            return [ChoiceSpec(value=False), ChoiceSpec(value=True)]
        return [c if isinstance(c, ChoiceSpec) else ChoiceSpec(value=c) for c in self.choices or []]


class ForbiddenSpec(BaseModel):
    """A combination of knob values the engine cannot run, and why (see `tuner.specs.rules`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    if_: dict[str, Value | list[Value]] = Field(default={}, alias="if")
    expr: str | None = None
    because: str

    @model_validator(mode="after")
    def _something(self) -> ForbiddenSpec:
        if not self.if_ and self.expr is None:
            raise ValueError("a forbidden rule needs if, expr, or both")
        if self.expr is not None:
            rules.parse(self.expr)
        return self


class Catalogue(BaseModel):
    """An engine's knobs, as read from `engines/<engine>.yaml`."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    engine: str
    summary: str
    knobs: dict[str, KnobSpec]
    forbidden: list[ForbiddenSpec] = []
    # Starting points the search measures right after the baseline: knob values, or `max` /
    # `min` for a numeric knob's bound here (known good corners, say the largest batch).
    initial: list[dict[str, Value]] = []

    @model_validator(mode="after")
    def _references(self) -> Catalogue:
        for name, knob in self.knobs.items():
            for parent in knob.when or {}:
                if parent not in self.knobs or parent == name:
                    raise ValueError(f"knob {name!r} depends on unknown knob {parent!r}")
        for rule in self.forbidden:
            for name in rule.if_:
                if name not in self.knobs:
                    raise ValueError(f"a forbidden rule names unknown knob {name!r}")
        for point in self.initial:
            for name in point:
                if name not in self.knobs:
                    raise ValueError(f"an initial point names unknown knob {name!r}")
        return self

    def names(self) -> set[str]:
        """Names that expressions and bounds use besides knobs: facts to be supplied."""
        used = {r for f in self.forbidden if f.expr for r in rules.names(rules.parse(f.expr))}
        for knob in self.knobs.values():
            for bounds in (knob.range, *(o.range for o in knob.per_device.values())):
                used |= {b for b in (bounds or ()) if isinstance(b, str)}
            if knob.divides:
                used.add(knob.divides)
        return used - set(self.knobs)

    @classmethod
    def from_file(cls, path: Path) -> Catalogue:
        """Reads and checks a catalogue file; every problem is one `TunerError` line."""
        from tuner.specs.paths import read_yaml

        data = read_yaml(path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise TunerError(f"{path}: {describe(exc)}") from None

    def modules(self) -> set[str]:
        """Python modules that some knob or choice requires."""
        reqs = [r for k in self.knobs.values() for r in k.requires]
        reqs += [r for k in self.knobs.values() for c in k.choice_specs() for r in c.requires]
        return {r.removeprefix("module:") for r in reqs if r.startswith("module:")}


def describe(exc: ValidationError) -> str:
    """The first problem of a pydantic error, as `where: what`."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def as_tuple(value: Value | list[Value]) -> tuple[Value, ...]:
    """A value or list of values, as a tuple."""
    return tuple(value) if isinstance(value, list) else (value,)

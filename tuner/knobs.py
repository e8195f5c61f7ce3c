"""Knob catalogues (the declarative files in `engines/`) and the search spaces made from them.

A catalogue lists an engine's knobs: type, range or choices, default, whether the knob acts at
load time or at run time, what the platform must offer, and when it applies. `Catalogue.resolve`
drops what this platform cannot run and yields a `SearchSpace`, which turns into a ConfigSpace
space for SMAC and checks knob values a user gives by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import TunerError
from tuner.hardware import FEATURES, Platform

Value = bool | int | float | str
Stage = Literal["load", "run"]


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


class KnobSpec(BaseModel):
    """One knob as a catalogue file writes it."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["int", "float", "bool", "choice"]
    stage: Stage
    help: str
    default: Value | list[Value]
    range: tuple[float | str, float | str] | None = None
    log: bool = False
    choices: list[Value | ChoiceSpec] | None = None
    requires: list[str] = []
    when: dict[str, Value | list[Value]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KnobSpec:
        _check_requirements(self.requires)
        numeric = self.type in ("int", "float")
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
        return self

    def choice_specs(self) -> list[ChoiceSpec]:
        if self.type == "bool":
            return [ChoiceSpec(value=False), ChoiceSpec(value=True)]
        return [c if isinstance(c, ChoiceSpec) else ChoiceSpec(value=c) for c in self.choices or []]


class ForbiddenSpec(BaseModel):
    """A combination of knob values the engine cannot run, and why."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    if_: dict[str, Value | list[Value]] = Field(alias="if")
    because: str


class Catalogue(BaseModel):
    """An engine's knobs, as read from `engines/<engine>.yaml`."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    engine: str
    summary: str
    knobs: dict[str, KnobSpec]
    forbidden: list[ForbiddenSpec] = []

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
        return self

    @classmethod
    def from_file(cls, path: Path) -> Catalogue:
        """Reads and checks a catalogue file; every problem is one `TunerError` line."""
        from tuner.specs import read_yaml

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

    def resolve(self, platform: Platform, pinned: Mapping[str, Value] | None = None) -> SearchSpace:
        """The search space on `platform`, with `pinned` knobs held at the given values."""
        return SearchSpace.build(self, platform, dict(pinned or {}))


def describe(exc: ValidationError) -> str:
    """The first problem of a pydantic error, as `where: what`."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


@dataclass(frozen=True)
class Knob:
    """A knob as it stands on one platform: its values narrowed to what runs here."""

    name: str
    type: str
    stage: Stage
    help: str
    default: Value
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Value, ...] = ()
    when: tuple[tuple[str, tuple[Value, ...]], ...] = ()

    def describe_values(self) -> str:
        """Human form of the allowed values: `1..512 (log)` or `sdpa, eager`."""
        if self.type in ("int", "float"):
            low, high = (
                (int(self.low), int(self.high)) if self.type == "int" else (self.low, self.high)
            )
            return f"{low}..{high}" + (" (log)" if self.log else "")
        return ", ".join(_fmt(c) for c in self.choices)

    def parse(self, text: str) -> Value:
        """Parses a value given as text (`--set name=value`) and checks it is allowed."""
        text = text.strip()
        if self.type == "int":
            try:
                value: Value = int(text)
            except ValueError:
                raise TunerError(f"{self.name} takes a whole number, not {text!r}") from None
        elif self.type == "float":
            try:
                value = float(text)
            except ValueError:
                raise TunerError(f"{self.name} takes a number, not {text!r}") from None
        elif self.type == "bool":
            lowered = text.lower()
            if lowered not in _BOOLS:
                raise TunerError(f"{self.name} takes true or false, not {text!r}")
            value = _BOOLS[lowered]
        else:
            matches = [c for c in self.choices if _fmt(c) == text]
            if not matches:
                raise TunerError(f"{self.name}={text} is not one of: {self.describe_values()}")
            value = matches[0]
        self.check(value)
        return value

    def check(self, value: Value) -> None:
        """Raises `TunerError` when `value` is outside this knob's range or choices."""
        if self.type in ("int", "float"):
            assert self.low is not None and self.high is not None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TunerError(f"{self.name} takes a number, not {value!r}")
            if not self.low <= value <= self.high:
                raise TunerError(f"{self.name}={value} is outside {self.describe_values()}")
        elif value not in self.choices:
            raise TunerError(f"{self.name}={_fmt(value)} is not one of: {self.describe_values()}")


_BOOLS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "on": True,
    "off": False,
}


def _fmt(value: Value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _as_tuple(value: Value | list[Value]) -> tuple[Value, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _native(value: Any) -> Value:
    """ConfigSpace hands back numpy scalars; profiles and engines want plain Python values."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class Rule:
    """A forbidden combination narrowed to the knobs that still vary on this platform."""

    values: tuple[tuple[str, tuple[Value, ...]], ...]
    because: str

    def matches(self, knobs: Mapping[str, Value]) -> bool:
        return all(name in knobs and knobs[name] in allowed for name, allowed in self.values)


class SearchSpace:
    """The knobs of one engine on one platform: those searched, those fixed, those dropped."""

    def __init__(
        self,
        catalogue: Catalogue,
        knobs: dict[str, Knob],
        fixed: dict[str, Value],
        dropped: dict[str, str],
        rules: list[Rule],
        pinned: dict[str, Value],
        when: dict[str, tuple[tuple[str, tuple[Value, ...]], ...]],
    ) -> None:
        self.catalogue = catalogue
        self.when = when
        self.engine = catalogue.engine
        self.knobs = knobs
        self.fixed = fixed
        self.dropped = dropped
        self.rules = rules
        self.pinned = pinned

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def build(
        cls, catalogue: Catalogue, platform: Platform, pinned: dict[str, Value]
    ) -> SearchSpace:
        available: dict[str, Knob] = {}
        dropped: dict[str, str] = {}
        for name, spec in catalogue.knobs.items():
            knob_or_reason = _narrow(name, spec, platform)
            if isinstance(knob_or_reason, str):
                dropped[name] = knob_or_reason
            else:
                available[name] = knob_or_reason

        for name, value in pinned.items():
            if name not in catalogue.knobs:
                raise TunerError(_unknown_knob(catalogue, name))
            if name in dropped:
                raise TunerError(f"{catalogue.engine} cannot set {name} here: {dropped[name]}")
            available[name].check(value)

        # Knobs left with one value, or pinned, are fixed; conditions on them are decided now.
        fixed = {n: k.choices[0] for n, k in available.items() if len(k.choices) == 1}
        fixed.update(pinned)
        changed = True
        while changed:
            changed = False
            for name, knob in list(available.items()):
                if name in dropped:
                    continue
                for parent, allowed in knob.when:
                    if parent in dropped or (parent in fixed and fixed[parent] not in allowed):
                        if name in pinned:
                            raise TunerError(
                                f"{name} applies only when {_when_text(knob.when)}, "
                                f"which is not the case here"
                            )
                        dropped[name] = f"applies only when {_when_text(knob.when)}"
                        fixed.pop(name, None)
                        changed = True
                        break
        # Conditions on fixed parents that hold are satisfied for good: drop them.
        when = {
            n: tuple((p, a) for p, a in k.when if p not in fixed)
            for n, k in available.items()
            if n not in dropped
        }
        knobs = {
            n: _replace_when(k, when[n])
            for n, k in available.items()
            if n not in dropped and n not in fixed
        }
        rules = []
        for spec in catalogue.forbidden:
            values: list[tuple[str, tuple[Value, ...]]] = []
            applies = True
            for name, allowed in spec.if_.items():
                allowed_t = _as_tuple(allowed)
                if name in dropped or (name in fixed and fixed[name] not in allowed_t):
                    applies = False
                    break
                if name in knobs:
                    allowed_t = tuple(
                        v
                        for v in allowed_t
                        if v in knobs[name].choices or knobs[name].type in ("int", "float")
                    )
                    if not allowed_t:
                        applies = False
                        break
                    values.append((name, allowed_t))
            if not applies:
                continue
            if not values:
                raise TunerError(
                    f"{catalogue.engine}: the fixed knobs {_fmt_knobs(fixed)} are forbidden "
                    f"together: {spec.because}"
                )
            rules.append(Rule(tuple(values), spec.because))
        return cls(catalogue, knobs, fixed, dropped, rules, pinned, when)

    # -- values ----------------------------------------------------------------------------------

    def default_knobs(self) -> dict[str, Value]:
        """The engine's own default configuration on this platform (the baseline)."""
        knobs = {n: k.default for n, k in self.knobs.items()}
        knobs.update(self.fixed)
        return self._active(knobs)

    def _active(self, knobs: dict[str, Value]) -> dict[str, Value]:
        """Removes knobs whose condition does not hold, in catalogue order."""
        active: dict[str, Value] = {}
        for name in self.catalogue.knobs:
            if name not in knobs:
                continue
            if all(p in active and active[p] in a for p, a in self.when.get(name, ())):
                active[name] = knobs[name]
        return active

    def complete(self, overrides: Mapping[str, Value]) -> dict[str, Value]:
        """Defaults with `overrides` applied, checked against ranges, conditions and rules."""
        for name, value in overrides.items():
            if name in self.dropped:
                raise TunerError(f"{self.engine} cannot set {name} here: {self.dropped[name]}")
            if name in self.fixed and self.fixed[name] != value:
                raise TunerError(f"{name} is fixed at {_fmt(self.fixed[name])} here")
            if name not in self.knobs and name not in self.fixed:
                raise TunerError(_unknown_knob(self.catalogue, name))
            if name in self.knobs:
                self.knobs[name].check(value)
        knobs = {n: k.default for n, k in self.knobs.items()}
        knobs.update(self.fixed)
        knobs.update(overrides)
        active = self._active(knobs)
        for name in overrides:
            if name not in active:
                raise TunerError(f"{name} applies only when {_when_text(self.when[name])}")
        for rule in self.rules:
            if rule.matches(active):
                raise TunerError(
                    f"{_fmt_knobs(dict(_firsts(rule, active)))} is not allowed: {rule.because}"
                )
        return active

    def parse_overrides(self, pairs: Iterable[str]) -> dict[str, Value]:
        """Parses `name=value` strings (the CLI's `--set`)."""
        out: dict[str, Value] = {}
        for pair in pairs:
            name, sep, text = pair.partition("=")
            name = name.strip()
            if not sep or not name:
                raise TunerError(f"--set takes name=value, not {pair!r}")
            if name in self.dropped:
                raise TunerError(f"{self.engine} cannot set {name} here: {self.dropped[name]}")
            if name in self.knobs:
                out[name] = self.knobs[name].parse(text)
            elif name in self.fixed:
                out[name] = _parse_fixed(self, name, text)
            else:
                raise TunerError(_unknown_knob(self.catalogue, name))
        return out

    def split(self, knobs: Mapping[str, Value]) -> tuple[dict[str, Value], dict[str, Value]]:
        """(load-time knobs, run-time knobs)."""
        stage = {n: s.stage for n, s in self.catalogue.knobs.items()}
        load = {n: v for n, v in knobs.items() if stage[n] == "load"}
        run = {n: v for n, v in knobs.items() if stage[n] == "run"}
        return load, run

    # -- ConfigSpace ---------------------------------------------------------------------------

    def configspace(self, seed: int = 0) -> Any:
        """The searched knobs as a ConfigSpace space, defaults being the engine's defaults."""
        from ConfigSpace import (
            Categorical,
            ConfigurationSpace,
            EqualsCondition,
            Float,
            ForbiddenAndConjunction,
            ForbiddenEqualsClause,
            ForbiddenInClause,
            InCondition,
            Integer,
        )

        space = ConfigurationSpace(seed=seed)
        params = {}
        for name, knob in self.knobs.items():
            if knob.type == "int":
                params[name] = Integer(
                    name, (int(knob.low), int(knob.high)), default=knob.default, log=knob.log
                )
            elif knob.type == "float":
                params[name] = Float(
                    name, (knob.low, knob.high), default=knob.default, log=knob.log
                )
            else:
                params[name] = Categorical(name, list(knob.choices), default=knob.default)
        space.add(list(params.values()))
        for name, knob in self.knobs.items():
            for parent, allowed in knob.when:
                child, par = params[name], params[parent]
                if len(allowed) == 1:
                    space.add(EqualsCondition(child, par, allowed[0]))
                else:
                    space.add(InCondition(child, par, list(allowed)))
        for rule in self.rules:
            clauses = [
                ForbiddenEqualsClause(params[n], a[0])
                if len(a) == 1
                else ForbiddenInClause(params[n], list(a))
                for n, a in rule.values
            ]
            space.add(clauses[0] if len(clauses) == 1 else ForbiddenAndConjunction(*clauses))
        return space

    def knobs_from_config(self, config: Any) -> dict[str, Value]:
        """Engine knobs for a ConfigSpace configuration: the searched values plus fixed ones."""
        knobs = {name: _native(value) for name, value in dict(config).items()}
        knobs.update(self.fixed)
        return self._active(knobs)

    def config_from_knobs(self, space: Any, knobs: Mapping[str, Value]) -> Any:
        """The ConfigSpace configuration for engine knobs (fixed knobs left out)."""
        from ConfigSpace import Configuration

        values = {n: v for n, v in knobs.items() if n in self.knobs}
        return Configuration(space, values=values)


def _narrow(name: str, spec: KnobSpec, platform: Platform) -> Knob | str:
    """The knob as this platform can run it, or the reason it cannot run here at all."""
    missing = [r for r in spec.requires if not platform.satisfies(r)]
    if missing:
        return f"needs {', '.join(missing)}"
    when = tuple((p, _as_tuple(a)) for p, a in (spec.when or {}).items())
    if spec.type in ("int", "float"):
        assert spec.range is not None
        low, high = (_bound(b, platform) for b in spec.range)
        if high < low:
            return f"its range {low}..{high} is empty here"
        default = spec.default
        if not isinstance(default, int | float) or isinstance(default, bool):
            raise TunerError(f"knob {name}: default {default!r} is not a number")
        default = min(max(default, low), high)
        if spec.type == "int":
            low, high, default = int(low), int(high), int(default)
        choices: tuple[Value, ...] = (low,) if low == high else ()
        return Knob(
            name, spec.type, spec.stage, spec.help, default, low, high, spec.log, choices, when
        )
    choices = tuple(
        c.value for c in spec.choice_specs() if all(map(platform.satisfies, c.requires))
    )
    if not choices:
        return "none of its values runs here"
    preferred = [d for d in _as_tuple(spec.default) if d in choices]
    all_values = [c.value for c in spec.choice_specs()]
    for d in _as_tuple(spec.default):
        if d not in all_values:
            raise TunerError(f"knob {name}: default {_fmt(d)} is not one of its choices")
    default = preferred[0] if preferred else choices[0]
    return Knob(name, spec.type, spec.stage, spec.help, default, choices=choices, when=when)


def _bound(bound: float | str, platform: Platform) -> float:
    if bound == "gpus":
        return platform.gpu_count
    if isinstance(bound, str):
        raise TunerError(f"unknown range bound {bound!r} (a number, or gpus)")
    return bound


def _replace_when(knob: Knob, when: tuple[tuple[str, tuple[Value, ...]], ...]) -> Knob:
    from dataclasses import replace

    return replace(knob, when=when)


def _when_text(when: tuple[tuple[str, tuple[Value, ...]], ...]) -> str:
    return " and ".join(f"{p}={'|'.join(_fmt(v) for v in a)}" for p, a in when)


def _fmt_knobs(knobs: Mapping[str, Value]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in knobs.items())


def _firsts(rule: Rule, knobs: Mapping[str, Value]) -> list[tuple[str, Value]]:
    return [(name, knobs[name]) for name, _ in rule.values]


def _unknown_knob(catalogue: Catalogue, name: str) -> str:
    return f"{catalogue.engine} has no knob {name!r}; its knobs: {', '.join(catalogue.knobs)}"


def _parse_fixed(space: SearchSpace, name: str, text: str) -> Value:
    value = space.fixed[name]
    if _fmt(value) != text.strip():
        raise TunerError(f"{name} is fixed at {_fmt(value)} here")
    return value

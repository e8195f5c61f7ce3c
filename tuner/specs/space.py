"""Search spaces: a knob catalogue narrowed to one platform, model and workload.

A `SearchSpace` knows which knobs are searched, fixed or dropped (and why), checks values a user
gives by hand, and turns an optimizer's values into engine knobs and back. Each optimizer
(`tuner.optimizers`) translates the space into its library's terms itself.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tuner.errors import TunerError
from tuner.fmt import fmt_knobs as _fmt_knobs
from tuner.fmt import fmt_value as _fmt
from tuner.hardware.machine import Platform
from tuner.specs import rules
from tuner.specs.knobs import Catalogue, ForbiddenSpec, KnobSpec, Stage, Value, as_tuple
from tuner.specs.rules import Rule

#: The most combinations `SearchSpace.enumerate` lists.
ENUMERATE_MAX = 4096


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
    engine_default: bool = False
    backoff: bool = False
    load: bool = False

    @property
    def ordinal(self) -> bool:
        """A number searched over an ordered set of values (a recorded grid, a divisor)."""
        return self.type in ("int", "float") and len(self.choices) > 1

    @property
    def ranged(self) -> bool:
        """A number searched over its whole range."""
        return self.type in ("int", "float") and not self.ordinal

    def grid_values(self) -> tuple[Value, ...]:
        """Values to ask a prior about: the choices, or a range's powers of two within it
        (its ends included), or for a float range its ends and middle."""
        if not self.ranged:
            return self.choices or (self.default,)
        low, high = float(self.low or 0), float(self.high or 0)
        if self.type == "float":
            return tuple(dict.fromkeys([low, round((low + high) / 2, 6), high]))
        powers = [2**i for i in range(31) if low <= 2**i <= high]
        return tuple(sorted({int(low), *powers, int(high)}))

    def extreme(self, largest: bool) -> Value:
        """A number knob's largest (or smallest) value here."""
        pool = [c for c in self.choices if isinstance(c, int | float)]
        if len(pool) <= 1:
            pool = [b for b in (self.low, self.high) if b is not None]
        return max(pool) if largest else min(pool)

    def describe_values(self) -> str:
        """Human form of the allowed values: `1..512 (log)` or `sdpa, eager`."""
        if self.ranged:
            assert self.low is not None and self.high is not None  # a ranged knob has both
            low, high = (self.low, self.high)
            if self.type == "int":
                low, high = int(low), int(high)
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
            if len(self.choices) > 1 and value not in self.choices:
                raise TunerError(f"{self.name}={value} is not one of: {self.describe_values()}")
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


def _native(value: Any) -> Value:
    """ConfigSpace hands back numpy scalars; profiles and engines want plain Python values."""
    return value.item() if hasattr(value, "item") else value


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
        cls,
        catalogue: Catalogue,
        platform: Platform,
        pinned: dict[str, Value],
        facts: Mapping[str, float],
    ) -> SearchSpace:
        available: dict[str, Knob] = {}
        dropped: dict[str, str] = {}
        for name, spec in catalogue.knobs.items():
            knob_or_reason = _narrow(name, spec.on_device(platform.device), platform, facts)
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
        rules_here = [
            rule
            for spec in catalogue.forbidden
            if (rule := _narrow_rule(catalogue, spec, knobs, fixed, dropped, facts)) is not None
        ]
        return cls(catalogue, knobs, fixed, dropped, rules_here, pinned, when)

    # -- values ----------------------------------------------------------------------------------

    def load_knob(self) -> str | None:
        """The searched knob the catalogue marks as the load (`load: true`), a run-time one
        first (it changes with no engine launch); None where none is."""
        marked = [n for n, k in self.knobs.items() if k.load]
        run_time = [n for n in marked if self.knobs[n].stage == "run"]
        return next(iter(run_time or marked), None)

    def as_json(self) -> dict[str, object]:
        """What `tuner knobs --json` shows: the knobs searched (their values), fixed, unavailable
        (and why) and the engine's defaults."""
        return {
            "engine": self.engine,
            "searched": {n: k.describe_values() for n, k in self.knobs.items()},
            "fixed": self.fixed,
            "unavailable": self.dropped,
            "defaults": self.default_knobs(),
        }

    def default_knobs(self) -> dict[str, Value]:
        """The engine's own default configuration on this platform (the baseline): knobs the
        engine picks itself (`engine_default`) are left unset."""
        return self._active(self._defaults())

    def _defaults(self) -> dict[str, Value]:
        """Default and fixed values of every knob, whether or not its condition holds."""
        knobs = {n: k.default for n, k in self.knobs.items() if not k.engine_default}
        knobs.update(self.fixed)
        return knobs

    def centre_knobs(self) -> dict[str, Value]:
        """The centre of the search: every searched knob at its catalogue default."""
        knobs = {n: k.default for n, k in self.knobs.items()}
        knobs.update(self.fixed)
        return self._active(knobs)

    def backed_off(self, knobs: Mapping[str, Value]) -> dict[str, Value] | None:
        """`knobs` with every set knob that memory grows with (`backoff`) one step smaller:
        the next smaller of its values, or half of it within its range; None where none can
        step down or the result is forbidden."""
        smaller = dict(knobs)
        for name, value in knobs.items():
            knob = self.knobs.get(name)
            if knob is None or not knob.backoff or not isinstance(value, int | float):
                continue
            if knob.ordinal:
                below = [c for c in knob.choices if c < value]  # type: ignore[operator]
                if below:
                    smaller[name] = max(below)  # type: ignore[type-var]
            elif knob.type == "int" and value // 2 >= (knob.low or 1):
                smaller[name] = int(value) // 2
        if smaller == dict(knobs) or self.violated(smaller) is not None:
            return None
        return smaller

    def violated(self, knobs: Mapping[str, Value]) -> Rule | None:
        """The first forbidden rule `knobs` fall under, if any."""
        return next((rule for rule in self.rules if rule.matches(knobs)), None)

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
        # From all defaults, not the active ones: a knob that the overrides switch on (a
        # compile flag under a static cache) takes its default or fixed value.
        knobs = self._defaults()
        knobs.update(overrides)
        active = self._active(knobs)
        for name in overrides:
            if name not in active:
                raise TunerError(f"{name} applies only when {_when_text(self.when[name])}")
        rule = self.violated(active)
        if rule is not None:
            raise TunerError(f"{rule.describe(active)} is not allowed: {rule.because}")
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

    def assemble(self, values: Mapping[str, Any]) -> dict[str, Value]:
        """Engine knobs from an optimizer's values for the searched knobs: plain Python values,
        the fixed knobs added, knobs whose condition does not hold left out."""
        knobs = {name: _native(value) for name, value in values.items()}
        knobs.update(self.fixed)
        return self._active(knobs)

    def searched_values(self, knobs: Mapping[str, Value]) -> dict[str, Value]:
        """The searched knobs' values of a configuration, for telling an optimizer about it:
        searched knobs that `knobs` leave unset take the centre's value; inactive ones are left
        out. A value outside its knob's range or choices is a `TunerError`."""
        merged = {**self.centre_knobs(), **knobs}
        active = self._active(
            {n: v for n, v in merged.items() if n in self.knobs or n in self.fixed}
        )
        values = {n: v for n, v in active.items() if n in self.knobs}
        for name, value in values.items():
            self.knobs[name].check(value)
        return values

    def enumerate(self, limit: int = ENUMERATE_MAX) -> list[dict[str, Value]] | None:
        """Every allowed configuration of a finite space (each searched knob a set of values)
        once, in the order of the knobs' values; None where a knob is a range or the knobs
        make more than `limit` combinations."""
        knobs = list(self.knobs.values())
        if not knobs or any(k.ranged for k in knobs):
            return None
        if math.prod(len(k.choices) for k in knobs) > limit:
            return None
        found: dict[str, dict[str, Value]] = {}
        for combo in itertools.product(*(k.choices for k in knobs)):
            assembled = self.assemble(dict(zip((k.name for k in knobs), combo, strict=True)))
            if self.violated(assembled) is None:
                found.setdefault(json.dumps(assembled, sort_keys=True), assembled)
        return list(found.values())

    def initial_knobs(self) -> list[dict[str, Value]]:
        """The catalogue's starting points as they stand here (`max`/`min` resolved; knobs
        that are not searched here ignored; points that add nothing or are forbidden left out)."""
        points = []
        for point in self.catalogue.initial:
            given: dict[str, Value] = {}
            for name, value in point.items():
                knob = self.knobs.get(name)
                if knob is None:
                    continue
                if value in ("max", "min") and knob.type in ("int", "float"):
                    value = knob.extreme(value == "max")
                given[name] = value
            if not given:
                continue
            try:
                knobs = self.complete(given)
            except TunerError:
                continue
            if knobs not in points and knobs != self.default_knobs():
                points.append(knobs)
        return points


def resolve(
    catalogue: Catalogue,
    platform: Platform,
    pinned: Mapping[str, Value] | None = None,
    facts: Mapping[str, float] | None = None,
) -> SearchSpace:
    """The search space of `catalogue` on `platform`, with `pinned` knobs held at the given
    values. `facts` give the model and workload values that bounds and rules name; a knob whose
    bounds need a fact not given is left out (reported as dropped)."""
    all_facts = {"gpus": platform.gpu_count, **(facts or {})}
    return SearchSpace.build(catalogue, platform, dict(pinned or {}), all_facts)


def _narrow(
    name: str, spec: KnobSpec, platform: Platform, facts: Mapping[str, float]
) -> Knob | str:
    """The knob as this platform can run it, or the reason it cannot run here at all."""
    if spec.unavailable:
        return spec.unavailable
    missing = [r for r in spec.requires if not platform.satisfies(r)]
    if missing:
        return f"needs {', '.join(missing)}"
    if spec.type in ("int", "float"):
        return _narrow_number(name, spec, facts)
    return _narrow_choice(name, spec, platform)


def _narrow_number(name: str, spec: KnobSpec, facts: Mapping[str, float]) -> Knob | str:
    """A number knob within its range here, on its values or the divisors of a fact."""
    assert spec.range is not None
    unknown = [b for b in spec.range if isinstance(b, str) and b not in facts]
    if unknown:
        return f"its range needs {', '.join(map(str, unknown))}, not known here"
    low, high = (_bound(b, facts) for b in spec.range)
    if high < low:
        return f"its range {low}..{high} is empty here"
    default = spec.default
    if not isinstance(default, int | float) or isinstance(default, bool):
        raise TunerError(f"knob {name}: default {default!r} is not a number")
    default = min(max(default, low), high)
    if spec.type == "int":
        low, high, default = int(low), int(high), int(default)
    choices: tuple[int | float, ...] = (low,) if low == high else ()
    if spec.values is not None:
        # Only these values, searched as an ordered set (a recorded grid, say).
        choices = tuple(sorted({v for v in spec.values if low <= v <= high}))
        if not choices:
            return f"none of its values lies in {low}..{high} here"
        given = default
        default = min(choices, key=lambda v: (abs(v - given), v))
    if spec.divides is not None:
        if spec.divides not in facts:
            return f"needs {spec.divides}, not known here"
        whole = int(facts[spec.divides])
        choices = tuple(v for v in range(int(low), int(high) + 1) if whole % v == 0)
        if not choices:
            return f"no value in {low}..{high} divides {spec.divides}={whole}"
        if default not in choices:
            default = (
                max(v for v in choices if v <= default) if choices[0] <= default else choices[0]
            )
    return Knob(
        name=name,
        type=spec.type,
        stage=spec.stage,
        help=spec.help,
        default=default,
        low=low,
        high=high,
        log=spec.log,
        choices=choices,
        when=_when(spec),
        engine_default=spec.engine_default,
        backoff=spec.backoff,
        load=spec.load,
    )


def _narrow_choice(name: str, spec: KnobSpec, platform: Platform) -> Knob | str:
    """A categorical or boolean knob, on the values this platform runs."""
    choices = tuple(
        c.value for c in spec.choice_specs() if all(map(platform.satisfies, c.requires))
    )
    if not choices:
        return "none of its values runs here"
    preferred = [d for d in as_tuple(spec.default) if d in choices]
    all_values = [c.value for c in spec.choice_specs()]
    for d in as_tuple(spec.default):
        if d not in all_values:
            raise TunerError(f"knob {name}: default {_fmt(d)} is not one of its choices")
    return Knob(
        name=name,
        type=spec.type,
        stage=spec.stage,
        help=spec.help,
        default=preferred[0] if preferred else choices[0],
        choices=choices,
        when=_when(spec),
        engine_default=spec.engine_default,
    )


def _when(spec: KnobSpec) -> tuple[tuple[str, tuple[Value, ...]], ...]:
    """The conditions under which the knob applies, as the search space keeps them."""
    return tuple((p, as_tuple(a)) for p, a in (spec.when or {}).items())


def _bound(bound: float | str, facts: Mapping[str, float]) -> float:
    return facts[bound] if isinstance(bound, str) else bound


def _narrow_rule(
    catalogue: Catalogue,
    spec: ForbiddenSpec,
    knobs: dict[str, Knob],
    fixed: dict[str, Value],
    dropped: dict[str, str],
    facts: Mapping[str, float],
) -> Rule | None:
    """A forbidden rule as it stands here, or None where it can never apply."""
    values: list[tuple[str, tuple[Value, ...]]] = []
    for name, allowed in spec.if_.items():
        allowed_t = as_tuple(allowed)
        if name in dropped or (name in fixed and fixed[name] not in allowed_t):
            return None
        if name in knobs:
            knob = knobs[name]
            if knob.choices:
                allowed_t = tuple(v for v in allowed_t if v in knob.choices)
            if not allowed_t:
                return None
            values.append((name, allowed_t))
    expr: ast.expr | bool | None = None
    bound: dict[str, Any] = {}
    if spec.expr is not None:
        expr = rules.parse(spec.expr)
        used = rules.names(expr)
        if used & set(dropped):
            return None
        missing = used - set(knobs) - set(fixed) - set(facts)
        if missing:
            raise TunerError(
                f"{catalogue.engine}: rule {spec.expr!r} names {', '.join(sorted(missing))}, "
                f"neither a knob nor a known fact"
            )
        bound = {n: facts[n] for n in used if n in facts}
        bound.update({n: fixed[n] for n in used if n in fixed})
        expr = rules.simplify(expr, bound, searched=set(knobs))
        if expr is False:
            return None
    if not values and not isinstance(expr, ast.expr):
        raise TunerError(
            f"{catalogue.engine}: the fixed knobs {_fmt_knobs(fixed)} are forbidden together: "
            f"{spec.because}"
        )
    return Rule(
        tuple(values),
        spec.because,
        expr if isinstance(expr, ast.expr) else None,
        spec.expr or "",
        tuple(sorted(bound.items())),
    )


def _replace_when(knob: Knob, when: tuple[tuple[str, tuple[Value, ...]], ...]) -> Knob:
    from dataclasses import replace

    return replace(knob, when=when)


def _when_text(when: tuple[tuple[str, tuple[Value, ...]], ...]) -> str:
    return " and ".join(f"{p}={'|'.join(_fmt(v) for v in a)}" for p, a in when)


def _unknown_knob(catalogue: Catalogue, name: str) -> str:
    return f"{catalogue.engine} has no knob {name!r}; its knobs: {', '.join(catalogue.knobs)}"


def _parse_fixed(space: SearchSpace, name: str, text: str) -> Value:
    value = space.fixed[name]
    if _fmt(value) != text.strip():
        raise TunerError(f"{name} is fixed at {_fmt(value)} here")
    return value

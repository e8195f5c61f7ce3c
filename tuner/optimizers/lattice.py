"""The search space as the optimizers that know serving see it: for each layout (a setting of
the knobs other than the load), a line of loads.

The load is the searched knob the catalogue marks `load: true` (a batch size, max_num_seqs,
the client's concurrency): throughput mostly grows with it until memory or a latency limit stops
it. Where several knobs are marked, the load is one that changes without an engine launch (a
run-time knob), else the first; the others count as layout knobs. Every knob is searched on a
finite set of values: its own (a choice, a recorded grid) or, for a range, its powers of two and
its default (`Knob.grid_values`). Where the layouts are too many to list, those one knob away
from a given layout stand in for them.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tuner.specs.knobs import Value, gpus_of
from tuner.specs.space import Knob, SearchSpace

#: The most layouts listed; a space with more has them generated one knob at a time.
LAYOUTS_MAX = 512

Layout = dict[str, Value]


def key(knobs: Mapping[str, Value]) -> str:
    """A configuration's identity."""
    return json.dumps(dict(knobs), sort_keys=True)


def _grid(knob: Knob) -> tuple[Value, ...]:
    """The values a knob is searched on here: its grid and its default, in order."""
    if knob.type in ("int", "float"):
        return tuple(sorted({*knob.grid_values(), knob.default}))  # type: ignore[type-var]
    return tuple(dict.fromkeys([*knob.grid_values(), knob.default]))


def _nearest(values: tuple[Value, ...], value: Value) -> Value:
    """The value of `values` nearest `value` (in log space for positive numbers)."""
    if value in values or isinstance(value, bool) or not isinstance(value, int | float):
        return value
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if not numbers:
        return value

    def distance(v: float) -> float:
        if v > 0 and value > 0:
            return abs(math.log(v) - math.log(value))
        return abs(v - value)

    return min(numbers, key=distance)


@dataclass(frozen=True)
class Lattice:
    """A search space as layouts and a line of loads."""

    space: SearchSpace
    #: The load knob's name; None where no searched knob is the load.
    load: str | None
    #: The load's values, ascending (one None where there is no load knob).
    loads: tuple[Value | None, ...]
    #: Every other searched knob and its values.
    values: dict[str, tuple[Value, ...]]

    @classmethod
    def of(cls, space: SearchSpace) -> Lattice:
        load = space.load_knob()
        values = {n: _grid(k) for n, k in space.knobs.items() if n != load}
        loads: tuple[Value | None, ...] = (None,)
        if load is not None:
            loads = _grid(space.knobs[load])
        return cls(space, load, loads, values)

    @property
    def memory_bound(self) -> bool:
        """Whether the catalogue says memory grows with the load (`backoff`)."""
        return self.load is not None and self.space.knobs[self.load].backoff

    def layout_of(self, knobs: Mapping[str, Value]) -> Layout:
        """The layout of a configuration: its layout knobs' values on the lattice (knobs it
        leaves unset at the centre's value). A value outside the space is a `TunerError`."""
        searched = self.space.searched_values(knobs)
        return {
            n: _nearest(self.values[n], searched.get(n, self.space.knobs[n].default))
            for n in self.values
        }

    def layout_key(self, layout: Mapping[str, Value]) -> str:
        """A layout's identity: its knobs as they apply (those whose condition fails left out)."""
        probe = {**layout, **({self.load: self.loads[-1]} if self.load else {})}
        assembled = self.space.assemble(probe)
        return key({n: v for n, v in assembled.items() if n in self.values})

    def index_of(self, knobs: Mapping[str, Value]) -> int:
        """The position of a configuration's load on the line (the nearest value)."""
        if self.load is None:
            return 0
        value = knobs.get(self.load, self.space.centre_knobs().get(self.load))
        return self.loads.index(_nearest(self.loads, value))  # type: ignore[arg-type]

    def point(self, layout: Mapping[str, Value], index: int) -> dict[str, Value] | None:
        """The configuration of a layout at the load of `index`; None where it is forbidden."""
        values = dict(layout)
        if self.load is not None:
            values[self.load] = self.loads[index]  # type: ignore[assignment]
        knobs = self.space.assemble(values)
        return None if self.space.violated(knobs) is not None else knobs

    def default_layout(self) -> Layout:
        return self.layout_of(self.space.default_knobs())

    def layouts(self, around: Mapping[str, Value] | None = None) -> list[Layout]:
        """Every layout once, where they are at most `LAYOUTS_MAX`; else `around` (the default
        layout if none) and the layouts one knob away from it. Layouts with no allowed load
        are left out."""
        names = list(self.values)
        candidates: Iterable[dict[str, Value]]
        if math.prod(len(v) for v in self.values.values()) <= LAYOUTS_MAX:
            candidates = (
                dict(zip(names, combo, strict=True))
                for combo in itertools.product(*(self.values[n] for n in names))
            )
        else:
            base = dict(around or self.default_layout())
            candidates = itertools.chain(
                [base],
                ({**base, n: v} for n in names for v in self.values[n] if v != base[n]),
            )
        found: dict[str, Layout] = {}
        for layout in candidates:
            ident = self.layout_key(layout)
            if ident not in found and self.allowed(layout):
                found[ident] = layout
        return list(found.values())

    def allowed(self, layout: Mapping[str, Value]) -> list[int]:
        """The load positions the layout may run at."""
        return [i for i in range(len(self.loads)) if self.point(layout, i) is not None]

    def gpus(self, layout: Mapping[str, Value]) -> int:
        """GPUs a layout uses."""
        return gpus_of({**self.space.fixed, **layout})

    def features(self, layout: Mapping[str, Value]) -> dict[str, float]:
        """A layout as numbers, for models across layouts: log2 of each positive numeric knob
        and its square (`name^2`: gains that level off), 0 or 1 for a flag, one indicator per
        value of a choice."""
        out: dict[str, float] = {}
        for name, value in layout.items():
            if isinstance(value, bool):
                out[name] = float(value)
            elif isinstance(value, int | float):
                out[name] = math.log2(value) if value > 0 else float(value)
                out[f"{name}^2"] = out[name] ** 2
            else:
                out[f"{name}={value}"] = 1.0
        return out

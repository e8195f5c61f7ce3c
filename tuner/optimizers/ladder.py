"""`ladder` (the default): a search that knows the structure of serving.

Throughput mostly grows with the load (batch size, sequences at once, concurrency) until memory or
a latency limit stops it, and a change of layout (tensor parallel size, GPUs, KV dtype, ...)
costs an engine launch while a change of load often does not. So the search climbs a ladder:

- **A line search on the load in each layout.** Failures are monotone in the load: a point out
  of memory or over a limit rules out every larger load of its layout, and a point that counts
  says every smaller one would. After a broken limit, the next load is the one the limit's
  pressure (measured figure / limit, and how fast it grew along the line) says fits; after
  out-of-memory the search halves the gap (and where the catalogue says memory grows with the
  load, it goes half way up before it tries the largest). Where the figure falls as the load
  grows (a pipeline past its best batch), it looks below the best point. A layout is settled
  when the load one step above its best point is ruled out, or the figure fell there.
- **Layouts ranked by a model across layouts.** Each layout's best figure (per GPU figures made
  whole) is modelled on the log scale as a linear function of its knobs (log2 of numbers and
  its square, flags, choices), fitted by ridge regression to the layouts measured so far and
  shrunk towards coefficients fitted on the tuning half of other labs' tables
  (`ladder_priors.json`, `benchmarks/ladder_fit.py`). The next layout is the best one by
  that estimate (the nearest to the best so far on a tie). Under limits it starts at the best
  layout's boundary moved a load step per doubling of the GPUs; without, at the best layout's
  best load, climbing from there a step at a time.
- **Cheap moves first.** A layout's line is finished before another layout is launched, and a
  layout that cannot reach 80% of the best so far, by what it measured or by the model, is
  left.

Once every line is settled it measures the points next to the best ones, then anything left.
Every proposal is a point of the lattice (`tuner.optimizers.lattice`). With several objectives,
or no load knob to climb, it hands the search to SMAC's GP (`gp`). Its constants (`Params`) were
chosen on the tuning half of the imported tables (`reports/ladder-design.md`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.optimizers.base import Feedback, Losses, Proposal, SpaceExhausted
from tuner.optimizers.lattice import Lattice, Layout, key
from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace

#: Failures that rule out every larger load of the layout.
MONOTONE = ("oom", "limit")


@dataclass(frozen=True)
class Params:
    """The search's constants, chosen on the tuning half of the imported tables
    (`benchmarks/ladder_design.py` measures each of them)."""

    #: How the pressure on a limit grows with the load where the line does not show it yet:
    #: pressure ~ load ** pressure_power.
    pressure_power: float = 1.0
    #: The most a step along the line multiplies or divides the load, where the line does
    #: not show the pressure's growth yet.
    max_step: float = 4.0
    #: How a figure grows with the load below the boundary, on the log scale (log figure ~
    #: load_power * log load): what the loads left above a layout's best could add.
    load_power: float = 0.5
    #: Load steps a layout's boundary moves per doubling of the GPUs, under limits and
    #: without.
    gpu_shift: float = 1.0
    gpu_shift_free: float = 0.0
    #: Among the fresh layouts the model puts within this share of the most promising one,
    #: the nearest to the best so far goes first (1: the most promising first).
    near_share: float = 1.0
    #: A layout whose best, raised by what its open loads could add, stays below this share
    #: of the best so far is left; so is a fresh one the model puts there, once it has two
    #: layouts to go by (`prune_fresh`).
    hopeless: float = 0.8
    prune_fresh: bool = True
    #: After a broken limit, the largest load the pressure says fits (True), or the load
    #: nearest it (False).
    snap_below: bool = True
    #: Rank fresh layouts by the model (False: the nearest to the best so far first).
    model_layouts: bool = True
    #: On a fresh line started where another line peaked, climb a step at a time rather
    #: than try the largest load.
    climb: bool = True
    #: Where the catalogue says memory grows with the load (`backoff`), the first step up
    #: from a low load goes half way to the largest, not all the way.
    memory_halves: bool = True
    #: Look around a line's best point where the figure fell above it; halving the bracket
    #: (`bracket`) or a step at a time.
    peak_search: bool = True
    bracket: bool = False
    #: Step along a line as the limits' pressure says (False: halve the gap, as after
    #: out-of-memory).
    use_pressure: bool = True
    #: Finish the line of the layout worked on last before launching another (False: every
    #: layout's first point before any second one).
    finish_lines: bool = True
    #: Prior coefficients of the layout model (a knob's log2, or a flag, on the log of a
    #: layout's best figure, per GPU figures made whole), for studies with limits (`limits`)
    #: and without (`none`); and their spread.
    priors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    prior_sd: float = 0.3


@dataclass
class _Point:
    layout: str
    index: int
    failure: str | None
    merit: float | None  # log of the primary figure, larger better, counted or not
    pressure: float | None


class Ladder:
    """Line searches on the load, layouts ranked by a model across layouts."""

    #: The study adds no back-off trial after out-of-memory: stepping down is the line search's.
    steps_down = True

    def __init__(
        self,
        name: str,
        space: SearchSpace,
        *,
        budget: int,
        seed: int,
        output_dir: Path,
        starts: list[dict[str, Value]],
        objectives: int = 1,
        per_gpu: bool = False,
    ) -> None:
        self.params = PARAMS
        self.per_gpu = per_gpu
        self.lattice = Lattice.of(space)
        self.layouts: dict[str, Layout] = {}
        self._add_layouts(self.lattice.default_layout())
        self.points: dict[str, _Point] = {}
        self.pending: dict[str, tuple[str, int]] = {}
        self.current: str | None = None
        self.limited = False  # whether the study holds its trials to limits

    # -- what is known -------------------------------------------------------------------------

    def _add_layouts(self, around: Mapping[str, Value]) -> None:
        for layout in self.lattice.layouts(around):
            self.layouts.setdefault(self.lattice.layout_key(layout), layout)

    def _record(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None
    ) -> None:
        layout = self.lattice.layout_of(knobs)
        ident = self.lattice.layout_key(layout)
        self.layouts.setdefault(ident, layout)
        index = self.lattice.index_of(knobs)
        feedback = feedback or Feedback(None if losses else "failed")
        loss = feedback.loss if feedback.loss is not None else (losses[0] if losses else None)
        merit = _merit(loss)
        self.limited = self.limited or feedback.pressure is not None
        failure = None if losses and merit is not None else (feedback.failure or "failed")
        point = self.lattice.point(layout, index) or dict(knobs)
        self.points[key(point)] = _Point(ident, index, failure, merit, feedback.pressure)

    def _line(self, ident: str) -> list[_Point]:
        return sorted((p for p in self.points.values() if p.layout == ident), key=lambda p: p.index)

    def _top(self, ident: str) -> _Point | None:
        """The layout's point that counts at the largest load."""
        return next((p for p in reversed(self._line(ident)) if p.failure is None), None)

    def _ceiling(self, ident: str) -> _Point | None:
        """The layout's failure at the smallest load that rules out the loads above it."""
        return next((p for p in self._line(ident) if p.failure in MONOTONE), None)

    def _best(self, ident: str) -> float | None:
        merits = [p.merit for p in self._line(ident) if p.failure is None and p.merit is not None]
        return max(merits, default=None)

    def _incumbent(self) -> str | None:
        scored = [(m, ident) for ident in self.layouts if (m := self._best(ident)) is not None]
        return max(scored)[1] if scored else None

    def _open(self, ident: str) -> list[int]:
        """Load positions of the layout not measured, not running and not ruled out."""
        ceiling = self._ceiling(ident)
        limit = ceiling.index if ceiling is not None else len(self.lattice.loads)
        taken = {p.index for p in self._line(ident)}
        taken |= {i for lay, i in self.pending.values() if lay == ident}
        allowed = self.lattice.allowed(self.layouts[ident])
        return [i for i in allowed if i < limit and i not in taken]

    def _load(self, index: int) -> float:
        value = self.lattice.loads[index]
        return float(value) if isinstance(value, int | float) else 1.0

    # -- the line search -----------------------------------------------------------------------

    def _next_on_line(self, ident: str) -> int | None:
        """The line search's next load position in a layout; None once it is settled."""
        free = self._open(ident)
        if not free:
            return None
        if not self._line(ident):
            return self._start(ident, free)
        top = self._top(ident)
        if top is None:
            return self._step_down(ident, free)
        above = [i for i in free if i > top.index]
        if above and not self._fell(ident):
            return self._step_up(ident, top, above)
        return self._below_a_peak(ident, free) if self.params.peak_search else None

    def _fell(self, ident: str) -> bool:
        """Whether the figure fell from a counted load to a larger one on this line."""
        counted = [p for p in self._line(ident) if p.failure is None and p.merit is not None]
        best = max(counted, key=lambda p: p.merit, default=None)  # type: ignore[arg-type, return-value]
        return best is not None and any(p.index > best.index for p in counted)

    def _below_a_peak(self, ident: str, free: list[int]) -> int | None:
        """Where the figure fell from the line's best point to a load above it, the peak may
        lie lower (a pipeline past its best batch): the open loads around the best, bracketed
        by the counted points beside it, halved in the log of the load (`bracket`), or the next
        one down."""
        counted = [p for p in self._line(ident) if p.failure is None and p.merit is not None]
        if not counted:
            return None
        best = max(counted, key=lambda p: p.merit)  # type: ignore[arg-type, return-value]
        if not any(p.index > best.index for p in counted):
            return None
        lower = max((p.index for p in counted if p.index < best.index), default=-1)
        upper = min(p.index for p in counted if p.index > best.index)
        for side in ([i for i in free if lower < i < best.index],
                     [i for i in free if best.index < i < upper]):  # fmt: skip
            if side and self.params.bracket:
                middle = math.sqrt(self._load(min(side)) * self._load(max(side)))
                return self._nearest(middle, side, below=False)
            if side:
                return max(side) if side[0] < best.index else min(side)
        return None

    def _step_up(self, ident: str, top: _Point, above: list[int]) -> int:
        """Above the best counted load: as far as the limits' pressure says fits, half way to
        a load out of memory; else the largest open load where no line has shown where the
        figure peaks, the next one up where another line has (this line started there)."""
        ceiling = self._ceiling(ident)
        if self.params.use_pressure and top.pressure is not None and top.pressure > 0:
            power = self._power(ident, top)
            factor = min((1 / top.pressure) ** (1 / power), self.params.max_step)
            target = self._load(top.index) * max(factor, 1.0)
            return self._nearest(target, above, below=self.params.snap_below)
        if ceiling is None:
            shown = self.params.climb and any(
                self._top(i) is not None for i in self.layouts if i != ident
            )
            if shown:
                return min(above)
            if self.params.memory_halves and self.lattice.memory_bound:
                # Memory grows with this load: the largest one is likely out of it.
                middle = math.sqrt(self._load(top.index) * self._load(max(above)))
                return self._nearest(middle, above, below=False)
            return max(above)
        middle = math.sqrt(self._load(top.index) * self._load(ceiling.index))
        return self._nearest(middle, above, below=False)

    def _step_down(self, ident: str, free: list[int]) -> int:
        """Below the lowest failure, none counted yet: as far as the limit's pressure says,
        half way down after out-of-memory."""
        ceiling = self._ceiling(ident)
        if ceiling is None:  # crashes only: the next load down
            below = [i for i in free if i < max(p.index for p in self._line(ident))]
            return max(below) if below else max(free)
        if self.params.use_pressure and ceiling.pressure is not None and ceiling.pressure > 1:
            power = self._power(ident, ceiling)
            factor = max((1 / ceiling.pressure) ** (1 / power), 1 / self.params.max_step)
            target = self._load(ceiling.index) * factor
            return self._nearest(target, free, below=self.params.snap_below)
        low = min(free)
        middle = math.sqrt(self._load(low) * self._load(ceiling.index))
        return self._nearest(middle, free, below=False)

    def _power(self, ident: str, at: _Point) -> float:
        """How fast the pressure grows with the load near `at`, from the line's own points
        (the nearest other one with a pressure), else the prior."""
        others = [
            p
            for p in self._line(ident)
            if p.index != at.index and p.pressure is not None and p.pressure > 0
        ]
        if at.pressure is None or at.pressure <= 0 or not others:
            return self.params.pressure_power
        near = min(others, key=lambda p: abs(p.index - at.index))
        rise = math.log(at.pressure / near.pressure)  # type: ignore[operator]
        run = math.log(self._load(at.index) / self._load(near.index))
        slope = rise / run if run else 0.0
        return min(max(slope, 0.1), 10.0)

    def _nearest(self, load: float, candidates: list[int], *, below: bool) -> int:
        """The candidate position whose load is `load` or nearest it in log space; with
        `below`, the largest at most `load` where one is."""
        if below:
            fitting = [i for i in candidates if self._load(i) <= load * 1.0001]
            if fitting:
                return max(fitting)
        # A tie goes to the smaller load: the one more likely to fit.
        return min(candidates, key=lambda i: (round(abs(math.log(self._load(i) / load)), 9), i))

    def _start(self, ident: str, free: list[int]) -> int:
        """Where a fresh layout's line search starts: under limits, the best layout's boundary
        moved by the difference in GPUs (`gpu_shift` load steps a doubling), where a limit
        bounded it; without, the best layout's best load, moved likewise (`gpu_shift_free`);
        the largest load where nothing is known."""
        ref = self._incumbent()
        if ref is None:
            return max(free)
        top, ceiling = self._top(ref), self._ceiling(ref)
        doublings = math.log2(
            self.lattice.gpus(self.layouts[ident]) / self.lattice.gpus(self.layouts[ref])
        )
        if self.limited:
            if top is None or ceiling is None:
                return max(free)
            target = top.index + round(self.params.gpu_shift * doublings)
        else:
            counted = [p for p in self._line(ref) if p.failure is None and p.merit is not None]
            best = max(counted, key=lambda p: p.merit)  # type: ignore[arg-type, return-value]
            target = best.index + round(self.params.gpu_shift_free * doublings)
        fitting = [i for i in free if i <= target]
        return max(fitting) if fitting else min(free)

    # -- layouts -------------------------------------------------------------------------------

    def _raw(self, ident: str, merit: float) -> float:
        """A merit without the per-GPU division, where the objective is per GPU."""
        if not self.per_gpu:
            return merit
        return merit + math.log(self.lattice.gpus(self.layouts[ident]))

    def _predicted(self, ident: str, ref: str) -> float:
        """The layout's best log figure by the model across layouts, from the layouts
        measured so far (coefficients shrunk towards the priors)."""
        measured = {i: self._raw(i, m) for i in self.layouts if (m := self._best(i)) is not None}
        rows = [(self.lattice.features(self.layouts[i]), m) for i, m in measured.items()]
        priors = self.params.priors.get("limits" if self.limited else "none", {})
        coef = _ridge(rows, priors, self.params.prior_sd)
        here = self.lattice.features(self.layouts[ident])
        there = self.lattice.features(self.layouts[ref])
        shift = sum(
            coef.get(f, priors.get(f, 0.0)) * (here.get(f, 0.0) - there.get(f, 0.0))
            for f in {*here, *there}
        )
        raw = measured[ref] + shift
        if self.per_gpu:
            raw -= math.log(self.lattice.gpus(self.layouts[ident]))
        return raw

    def _distance(self, ident: str, ref: str) -> float:
        """How far a layout is from another: the knobs that differ, and the GPU doublings."""
        a, b = self.layouts[ident], self.layouts[ref]
        changed = sum(a.get(n) != b.get(n) for n in {*a, *b})
        gpus = abs(math.log2(self.lattice.gpus(a) / self.lattice.gpus(b)))
        return changed + gpus

    def _promising(self, ident: str, incumbent: float) -> bool:
        """Whether the layout could still reach the best so far: its best point, raised by
        what the open loads above it could add."""
        best, top = self._best(ident), self._top(ident)
        if best is None or top is None:
            return True
        above = [i for i in self._open(ident) if i > top.index]
        gain = 0.0
        if above:
            gain = self.params.load_power * math.log(self._load(max(above)) / self._load(top.index))
        return best + gain >= incumbent + math.log(self.params.hopeless)

    def _order(self) -> list[str]:
        """Layouts in the order the search takes them up: the one worked on last, the
        others already measured by their best, then the fresh ones by the model's estimate."""
        incumbent = self._incumbent()
        busy = {lay for lay, _ in self.pending.values()}
        tried = [i for i in self.layouts if self._line(i) and i not in busy]
        tried.sort(key=lambda i: (i != self.current, -(self._best(i) or -math.inf)))
        fresh = [i for i in self.layouts if not self._line(i) and i not in busy]
        if incumbent is None:
            return [*tried, *fresh]
        model = self.params.model_layouts
        predicted = {i: self._predicted(i, incumbent) if model else 0.0 for i in fresh}
        # Estimates within 0.1% of each other are a tie (the ridge's rounding is not a
        # preference): the nearest layout goes first.
        fresh.sort(key=lambda i: (-round(predicted[i], 3), self._distance(i, incumbent)))
        if fresh and self.params.near_share < 1:
            floor = predicted[fresh[0]] + math.log(self.params.near_share)
            near = [i for i in fresh if predicted[i] >= floor]
            near.sort(key=lambda i: self._distance(i, incumbent))
            fresh = near + [i for i in fresh if i not in near]
        measured = sum(self._best(i) is not None for i in self.layouts)
        if model and self.params.prune_fresh and measured >= 2:
            floor = (self._best(incumbent) or 0.0) + math.log(self.params.hopeless)
            fresh = [i for i in fresh if predicted[i] >= floor]
        return [*tried, *fresh] if self.params.finish_lines else [*fresh, *tried]

    # -- ask and tell --------------------------------------------------------------------------

    def ask(self) -> Proposal:
        incumbent = self._incumbent()
        if incumbent is not None:
            self._add_layouts(self.layouts[incumbent])
        best = self._best(incumbent) if incumbent is not None else None
        for ident in self._order():
            if best is not None and not self._promising(ident, best):
                continue
            index = self._next_on_line(ident)
            if index is not None:
                return self._propose(ident, index, "ladder")
        return self._refine()

    def _refine(self) -> Proposal:
        """Every line settled or left: the layouts not yet measured, the most promising first;
        then the open points beside each layout's best (a plateau's other end, a noisy peak),
        the best layouts first; then anything left."""
        busy = {lay for lay, _ in self.pending.values()}
        ranked = sorted(self.layouts, key=lambda i: self._best(i) or -math.inf, reverse=True)
        fresh = [i for i in self._order() if not self._line(i)]
        fresh += [i for i in ranked if not self._line(i) and i not in busy and i not in fresh]
        for ident in fresh:
            free = self._open(ident)
            if free:
                return self._propose(ident, self._start(ident, free), "refine")
        for near in (1, len(self.lattice.loads)):
            for ident in ranked:
                best = self._best_point(ident)
                taken = {p.index for p in self._line(ident)}
                taken |= {i for lay, i in self.pending.values() if lay == ident}
                allowed = self.lattice.allowed(self.layouts[ident])
                anchor = best.index if best is not None else max(allowed, default=0)
                free = [i for i in allowed if i not in taken and abs(i - anchor) <= near]
                if free:
                    return self._propose(ident, min(free, key=lambda i: (abs(i - anchor), -i)),
                                         "refine")  # fmt: skip
        raise SpaceExhausted("ladder has measured every point of its lattice")

    def _best_point(self, ident: str) -> _Point | None:
        counted = [p for p in self._line(ident) if p.failure is None and p.merit is not None]
        return max(counted, key=lambda p: p.merit, default=None)  # type: ignore[arg-type, return-value]

    def _propose(self, ident: str, index: int, origin: str) -> Proposal:
        knobs = self.lattice.point(self.layouts[ident], index)
        assert knobs is not None
        self.pending[key(knobs)] = (ident, index)
        self.current = ident
        return Proposal(knobs, origin, key(knobs))

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        ident, index = self.pending.pop(handle)
        self._record(self.lattice.point(self.layouts[ident], index) or {}, losses, feedback)

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        self._record(knobs, losses, feedback)


def ladder(
    name: str,
    space: SearchSpace,
    *,
    budget: int,
    seed: int,
    output_dir: Path,
    starts: list[dict[str, Value]],
    objectives: int = 1,
    per_gpu: bool = False,
) -> Any:
    """The `ladder` search over `space`; SMAC's GP where there are several objectives or no load
    knob to climb."""
    if objectives > 1 or Lattice.of(space).load is None:
        from tuner.optimizers.smac import SmacOptimizer

        return SmacOptimizer(
            "gp", space, budget=budget, seed=seed, output_dir=output_dir, starts=starts,
            objectives=objectives,
        )  # fmt: skip
    return Ladder(
        name, space, budget=budget, seed=seed, output_dir=output_dir, starts=starts,
        per_gpu=per_gpu,
    )  # fmt: skip


#: The prior coefficients of the layout model, fitted by `benchmarks/ladder_fit.py`.
PRIORS_FILE = Path(__file__).with_name("ladder_priors.json")


def shipped_priors() -> dict[str, dict[str, float]]:
    """The prior coefficients that ship with tuner, for studies with limits and without."""
    data = json.loads(PRIORS_FILE.read_text())
    return {kind: dict(data.get(kind, {})) for kind in ("limits", "none")}


#: The constants `ladder` runs with.
PARAMS = Params(priors=shipped_priors())


def _merit(loss: float | None) -> float | None:
    """A loss on the log scale, larger better: log(figure) for a figure to maximize (its loss is
    its negative), -log(figure) for one to minimize."""
    if loss is None or loss == 0 or not math.isfinite(loss):
        return None
    return math.log(-loss) if loss < 0 else -math.log(loss)


def _ridge(
    rows: list[tuple[dict[str, float], float]], prior: Mapping[str, float], sd: float
) -> dict[str, float]:
    """Coefficients of y ~ intercept + sum(coef * feature), each shrunk towards its `prior`
    with spread `sd` (the intercept free), by the normal equations."""
    import numpy as np

    names = sorted({f for features, _ in rows for f in features})
    x = np.array([[1.0, *(f.get(n, 0.0) for n in names)] for f, _ in rows])
    y = np.array([m for _, m in rows])
    mean = np.array([0.0, *(prior.get(n, 0.0) for n in names)])
    penalty = np.diag([0.0, *([1 / sd**2] * len(names))])
    # The intercept: centred on the data, so that it takes no share of the coefficients.
    a = x.T @ x + penalty + np.diag([1e-9, *([0.0] * len(names))])
    b = x.T @ y + penalty @ mean
    coef = np.linalg.solve(a, b)
    return {"": float(coef[0]), **{n: float(c) for n, c in zip(names, coef[1:], strict=True)}}

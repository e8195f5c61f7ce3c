"""`descend`: the procedure anyone could write, as a yardstick that knows one fact of serving.

For each layout (a setting of the knobs other than the load: tensor parallel size, GPUs, KV
dtype, ...), the largest load first, then one step down at a time until a point runs and keeps
the limits; then the next layout. The default layout comes first, the others in the order of
their knobs' values. Once every layout has a point that counts, it goes on down the best
layouts' lines. It is deterministic. Without a load knob it measures each layout once.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.optimizers.base import Feedback, Losses, Proposal, SpaceExhausted
from tuner.optimizers.lattice import Lattice, key
from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace


class Descend:
    """Largest load first, one step down until it counts, layout by layout."""

    #: The study adds no back-off trial after an out-of-memory one: stepping down is this
    #: optimizer's own move.
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
    ) -> None:
        self.lattice = Lattice.of(space)
        default = self.lattice.default_layout()
        layouts = self.lattice.layouts(default)
        first = self.lattice.layout_key(default)
        layouts.sort(key=lambda layout: self.lattice.layout_key(layout) != first)
        self.layouts = layouts
        self.losses: dict[str, float | None] = {}  # measured: key -> loss (None: it failed)
        self.pending: set[str] = set()

    def ask(self) -> Proposal:
        waiting = [layout for layout in self.layouts if not self._settled(layout)]
        # Every layout settled: on down the best layouts' lines.
        for layout in waiting or sorted(self.layouts, key=self._best):
            for knobs in self._line(layout):
                if key(knobs) not in self.losses and key(knobs) not in self.pending:
                    self.pending.add(key(knobs))
                    return Proposal(knobs, "descend", key(knobs))
        raise SpaceExhausted("descend has measured every point of its lattice")

    def _line(self, layout: Mapping[str, Value]) -> list[dict[str, Value]]:
        """The layout's allowed points, the largest load first."""
        points = (self.lattice.point(layout, i) for i in reversed(self.lattice.allowed(layout)))
        return [knobs for knobs in points if knobs is not None]

    def _settled(self, layout: Mapping[str, Value]) -> bool:
        """Whether the descent of the layout's line has reached a point that counts (every
        larger load measured), or is waiting for one."""
        for knobs in self._line(layout):
            if key(knobs) in self.pending or self.losses.get(key(knobs)) is not None:
                return True
            if key(knobs) not in self.losses:
                return False
        return False

    def _best(self, layout: Mapping[str, Value]) -> float:
        losses = [self.losses.get(key(k)) for k in self._line(layout)]
        return min((loss for loss in losses if loss is not None), default=float("inf"))

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        self.pending.discard(handle)
        self.losses[handle] = losses[0] if losses else None

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        point = self.lattice.point(self.lattice.layout_of(knobs), self.lattice.index_of(knobs))
        if point is not None:
            self.losses[key(point)] = losses[0] if losses else None

"""`random`: uniform random sampling over the search space, the yardstick.

Each searched knob is drawn on its own: a choice or an ordered value set uniformly, a range
uniformly (log-uniformly where the catalogue marks it `log`), in catalogue order so that a knob's
condition is decided before the knob is drawn. Forbidden combinations are left to the study,
which tells them back as failures. The catalogue's starting points are not proposed: random
search is the yardstick the model-based methods are measured against.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.optimizers.base import Feedback, Losses, Proposal
from tuner.specs.knobs import Value
from tuner.specs.space import Knob, SearchSpace


def draw(knob: Knob, rng: random.Random) -> Value:
    """One value of `knob`, uniformly (log-uniformly on a log range)."""
    if not knob.ranged:
        return rng.choice(knob.choices)
    assert knob.low is not None and knob.high is not None
    if knob.log and knob.low > 0:
        value = math.exp(rng.uniform(math.log(knob.low), math.log(knob.high)))
    else:
        value = rng.uniform(knob.low, knob.high)
    if knob.type == "int":
        return min(max(round(value), int(knob.low)), int(knob.high))
    return value


class RandomOptimizer:
    """Random search, seeded."""

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
        self.space = space
        self.rng = random.Random(seed)

    def ask(self) -> Proposal:
        values = {name: draw(knob, self.rng) for name, knob in self.space.knobs.items()}
        return Proposal(self.space.assemble(values), "random", None)

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        pass  # random search learns nothing

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        pass

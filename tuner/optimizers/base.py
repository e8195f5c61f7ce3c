"""The optimizer protocol: `ask()` a proposal, run it, `tell()` its loss.

In the spirit of SMAC's ask/tell and Optuna's samplers: the optimizer never runs a trial itself.
Losses are what the study's goal makes of a result, one per objective, lower being better;
`None` means the trial gave nothing to score (out of memory, a crash, a forbidden combination, a
broken constraint), and each adapter tells its library that in the library's own terms. Beside the
losses the study hands over `Feedback`: how a trial failed and how hard it pressed the limits,
which the optimizers that know serving (`descend`, `ladder`) read and the others ignore. With
several objectives the adapter's library searches for a Pareto front (SMAC's ParEGO, Optuna's
multi-objective TPE, random search); Hyperopt's TPE takes one objective only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace

#: One loss per objective, lower being better; None for a trial with nothing to score.
Losses = tuple[float, ...] | None


@dataclass(frozen=True)
class Feedback:
    """What a trial says beyond its losses.

    `failure` is None for a trial that counts, else `oom`, `crashed` or `timeout` (the trial's
    status), `limit` (it ran but broke a limit), `failed` (it ran but measured nothing to
    score) or `forbidden` (a combination the engine rejects: no trial ran). `pressure` is,
    under limits, the largest of the trial's figures over its limit (above 1: broken; None
    without limits or figures). `loss` is the primary objective as a loss whether or not the
    trial kept the limits (None where nothing was measured).
    """

    failure: str | None = None
    pressure: float | None = None
    loss: float | None = None


class SpaceExhausted(Exception):
    """The optimizer has no configuration left to propose (a small, discrete space)."""


@dataclass(frozen=True)
class Proposal:
    """A configuration to measure: its knobs, where it came from, and the optimizer's handle."""

    knobs: dict[str, Value]
    origin: str
    handle: Any
    budget: float | None = None


class Optimizer(Protocol):
    """What a study asks of an optimizer. One that searches the load itself sets a class
    attribute `steps_down = True`: the study then adds no back-off trial after an
    out-of-memory one."""

    def ask(self) -> Proposal:
        """The next configuration to measure; may be called again before earlier tells.
        Raises `SpaceExhausted` when there is none left."""
        ...

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        """The losses of a proposal (None: the trial gave nothing to score)."""
        ...

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        """A configuration measured without being asked for (the baseline, resumed trials)."""
        ...


def initial_design_size(space: SearchSpace, budget: int) -> int:
    """Random or space-filling points before a model-based method models: a quarter of the
    budget, at most five per searched knob, at least one (the same rule for every method)."""
    return max(1, min(5 * len(space.knobs), budget // 4))

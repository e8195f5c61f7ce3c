"""`optuna-tpe`: Optuna's TPESampler through its ask/tell interface (extra `optuna`).

The space is suggested define-by-run in catalogue order, so a conditional knob is suggested only
when its condition holds; an ordered value set is suggested as an index (ordered, as it should
be, rather than categorical). The sampler starts with `initial_design_size` random trials.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from tuner.optimizers.base import Feedback, Losses, Proposal, initial_design_size
from tuner.specs.knobs import Value
from tuner.specs.space import Knob, SearchSpace


def distribution(knob: Knob) -> Any:
    """The Optuna distribution of a knob (ordered value sets as indices)."""
    d = optuna.distributions
    if knob.ordinal:
        return d.IntDistribution(0, len(knob.choices) - 1)
    if knob.type == "int":
        return d.IntDistribution(int(knob.low or 0), int(knob.high or 0), log=knob.log)
    if knob.type == "float":
        return d.FloatDistribution(float(knob.low or 0), float(knob.high or 0), log=knob.log)
    return d.CategoricalDistribution(list(knob.choices))


def suggest(trial: Any, name: str, knob: Knob) -> Any:
    """The trial's value of a knob, by the suggestion that matches `distribution(knob)`."""
    if knob.ordinal:
        return trial.suggest_int(name, 0, len(knob.choices) - 1)
    if knob.type == "int":
        return trial.suggest_int(name, int(knob.low or 0), int(knob.high or 0), log=knob.log)
    if knob.type == "float":
        return trial.suggest_float(name, float(knob.low or 0), float(knob.high or 0), log=knob.log)
    return trial.suggest_categorical(name, list(knob.choices))


class OptunaTpe:
    """Optuna's TPE, minimizing the losses (multi-objective TPE with several); failures are
    told as failed trials."""

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
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.dists = {n: distribution(k) for n, k in space.knobs.items()}
        # constant_liar: trials still running count as bad ones, so that proposals made side by
        # side (a study on a fleet) spread out instead of piling on one point.
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=initial_design_size(space, budget), constant_liar=True
        )
        self.study = optuna.create_study(directions=["minimize"] * objectives, sampler=sampler)
        for start in starts:
            self.study.enqueue_trial(self._params(start))
        self.queued = len(starts)  # Optuna hands enqueued trials out first

    def _params(self, knobs: Mapping[str, Value]) -> dict[str, Any]:
        values = self.space.searched_values(knobs)
        return {
            n: self.space.knobs[n].choices.index(v) if self.space.knobs[n].ordinal else v
            for n, v in values.items()
        }

    def ask(self) -> Proposal:
        trial = self.study.ask()
        values: dict[str, Value] = {}
        for name, knob in self.space.knobs.items():
            state = {**self.space.fixed, **values}
            if any(state.get(p) not in allowed for p, allowed in knob.when):
                continue
            value = suggest(trial, name, knob)
            values[name] = knob.choices[int(value)] if knob.ordinal else value
        origin = "start" if self.queued > 0 else "tpe"
        self.queued -= 1
        return Proposal(self.space.assemble(values), origin, trial)

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        if losses is None:
            self.study.tell(handle, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(handle, list(losses))

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        params = self._params(knobs)
        state = optuna.trial.TrialState.FAIL if losses is None else optuna.trial.TrialState.COMPLETE
        self.study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={n: self.dists[n] for n in params},
                values=None if losses is None else list(losses),
                state=state,
            )
        )

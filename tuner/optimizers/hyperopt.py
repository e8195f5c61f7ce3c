"""`hyperopt-tpe`: Hyperopt's TPE (`tpe.suggest`), the method of the Martinez 2024 study (extra
`hyperopt`).

Hyperopt has no ask/tell interface of its own; this adapter drives the pieces `fmin` drives: a
`Domain` over the space, a `Trials` store, and `tpe.suggest` for each ask, whose trial document is
marked done with its loss (or failed) on the tell. The space is flat: choices are `hp.choice`,
ordered value sets an index on `hp.quniform` (so that TPE sees their order), integer ranges
`hp.quniform` or `hp.qloguniform`, float ranges `hp.uniform` or `hp.loguniform`. A knob whose
condition does not hold is drawn but left out of the configuration. The first
`initial_design_size` proposals are random (Hyperopt's `n_startup_jobs`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperopt import STATUS_FAIL, STATUS_OK, Trials, hp, space_eval, tpe
from hyperopt.base import JOB_STATE_DONE, JOB_STATE_ERROR, Domain
from hyperopt.fmin import generate_trial

from tuner.optimizers.base import Feedback, Losses, Proposal, initial_design_size
from tuner.specs.knobs import Value
from tuner.specs.space import Knob, SearchSpace


def expression(name: str, knob: Knob) -> Any:
    """The Hyperopt expression of a knob."""
    low, high = knob.low or 0.0, knob.high or 0.0
    if knob.ordinal:
        return hp.quniform(name, -0.5, len(knob.choices) - 0.5, 1)
    if knob.type == "int":
        if knob.log and low > 0:
            return hp.qloguniform(
                name, math.log(low - 0.5 if low > 1 else low), math.log(high + 0.5), 1
            )
        return hp.quniform(name, low - 0.5, high + 0.5, 1)
    if knob.type == "float":
        if knob.log and low > 0:
            return hp.loguniform(name, math.log(low), math.log(high))
        return hp.uniform(name, low, high)
    return hp.choice(name, list(knob.choices))


class HyperoptTpe:
    """Hyperopt's TPE, minimizing the loss; a failure is a trial with status `fail`."""

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
        self.expressions = {n: expression(n, k) for n, k in space.knobs.items()}
        self.domain = Domain(lambda _: 0.0, self.expressions)
        self.trials = Trials()
        self.rng = random.Random(seed)
        self.startup = initial_design_size(space, budget)
        self.starts = [dict(s) for s in starts]

    def _value(self, name: str, raw: Any) -> Value:
        knob = self.space.knobs[name]
        if knob.ordinal:
            return knob.choices[min(max(round(raw), 0), len(knob.choices) - 1)]
        if knob.type == "int":
            return min(max(round(raw), int(knob.low or 0)), int(knob.high or 0))
        return raw

    def _encode(self, knobs: Mapping[str, Value]) -> dict[str, Any]:
        # The space is flat: a knob left out (its condition does not hold) takes its default.
        values = {n: k.default for n, k in self.space.knobs.items()}
        values.update(self.space.searched_values(knobs))
        encoded: dict[str, Any] = {}
        for name, value in values.items():
            knob = self.space.knobs[name]
            if not knob.ranged:
                encoded[name] = knob.choices.index(value)
            else:
                encoded[name] = value
        return encoded

    def _insert(self, doc: dict[str, Any]) -> dict[str, Any]:
        self.trials.insert_trial_docs([doc])
        self.trials.refresh()
        return next(d for d in self.trials._dynamic_trials if d["tid"] == doc["tid"])

    def ask(self) -> Proposal:
        (tid,) = self.trials.new_trial_ids(1)
        if self.starts:
            knobs = self.starts.pop(0)
            return Proposal(
                dict(knobs), "start", self._insert(generate_trial(tid, self._encode(knobs)))
            )
        (doc,) = tpe.suggest(
            [tid],
            self.domain,
            self.trials,
            self.rng.randrange(2**31),
            n_startup_jobs=self.startup,
        )
        doc = self._insert(doc)
        drawn = {n: v[0] for n, v in doc["misc"]["vals"].items() if v}
        values = space_eval(self.expressions, drawn)
        origin = "random" if len(self.trials.trials) <= self.startup else "tpe"
        return Proposal(
            self.space.assemble({n: self._value(n, v) for n, v in values.items()}), origin, doc
        )

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        if losses is None:
            handle["state"] = JOB_STATE_ERROR
            handle["result"] = {"status": STATUS_FAIL}
        else:
            handle["state"] = JOB_STATE_DONE
            handle["result"] = {"status": STATUS_OK, "loss": losses[0]}
        self.trials.refresh()

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        (tid,) = self.trials.new_trial_ids(1)
        self.tell(self._insert(generate_trial(tid, self._encode(knobs))), losses)

"""The optimizers a study can ask: one small protocol, one adapter per library.

- `ladder` (default): a line search on the load in each layout, layouts ranked by a model across
  layouts with priors fitted on other labs' tables (`tuner.optimizers.ladder`).
- `gp`: Bayesian optimization with a Gaussian process and expected improvement,
  SMAC3's `BlackBoxFacade`; suited to a handful of knobs and tens of expensive trials.
- `rf`: Bayesian optimization with a random forest on log costs, SMAC3's
  `HyperparameterOptimizationFacade`; built for larger, more categorical spaces.
- `random`: uniform random sampling (log-uniform on log knobs), the yardstick.
- `optuna-tpe`: Optuna's tree-structured Parzen estimator (`TPESampler`; extra `optuna`).
- `hyperopt-tpe`: Hyperopt's TPE (`tpe.suggest`), the method of the Martinez 2024 study (extra
  `hyperopt`).
- `descend`: for each setting of the other knobs, the largest load first and one step down
  until a point counts: the procedure anyone could write, a yardstick.

Every adapter translates the search space itself, proposes through `ask()` and learns through
`tell()`; several asks may be outstanding before their tells. The registry holds lazy import paths,
so that naming an optimizer imports no library.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, get_args

from tuner.errors import TunerError
from tuner.optimizers.base import Optimizer, Proposal, SpaceExhausted, initial_design_size
from tuner.specs.space import SearchSpace

OptimizerName = Literal["ladder", "gp", "rf", "random", "optuna-tpe", "hyperopt-tpe", "descend"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
_ADAPTERS = {
    "ladder": "tuner.optimizers.ladder:ladder",
    "gp": "tuner.optimizers.smac:SmacOptimizer",
    "rf": "tuner.optimizers.smac:SmacOptimizer",
    "random": "tuner.optimizers.random:RandomOptimizer",
    "optuna-tpe": "tuner.optimizers.optuna:OptunaTpe",
    "hyperopt-tpe": "tuner.optimizers.hyperopt:HyperoptTpe",
    "descend": "tuner.optimizers.descend:Descend",
}
#: The library an optional optimizer needs, and the extra that installs it.
_NEEDS = {"optuna-tpe": "optuna", "hyperopt-tpe": "hyperopt"}
#: Optimizers that take one objective only.
_SINGLE_OBJECTIVE = ("hyperopt-tpe", "descend")
#: Optimizers whose acquisition a prior can weight (piBO).
GUIDED = ("gp", "rf")

__all__ = [
    "GUIDED",
    "OPTIMIZERS",
    "Optimizer",
    "OptimizerName",
    "Proposal",
    "SpaceExhausted",
    "check_available",
    "initial_design_size",
    "make_optimizer",
]


def check_available(name: str, objectives: int = 1) -> None:
    """One line when `name` is no optimizer, cannot search several objectives, or needs a
    library that is not installed; checked before a study starts, without importing it."""
    import importlib.util

    if name not in _ADAPTERS:
        raise TunerError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    if objectives > 1 and name in _SINGLE_OBJECTIVE:
        raise TunerError(
            f"{name} optimizes one objective; for a Pareto front use "
            f"{', '.join(n for n in OPTIMIZERS if n not in _SINGLE_OBJECTIVE)}"
        )
    needs = _NEEDS.get(name)
    if needs is not None and importlib.util.find_spec(needs) is None:
        raise TunerError(
            f"the {name} optimizer needs {needs}, which is not installed: "
            f"pip install 'tuner[{needs}]'"
        )


def make_optimizer(
    name: str,
    space: SearchSpace,
    *,
    budget: int,
    seed: int,
    output_dir: Path,
    starts: list[dict] | None = None,
    objectives: int | Sequence[str] = 1,
    prior: Callable[[dict], float] | None = None,
) -> Optimizer:
    """The optimizer `name` over `space` for a study of about `budget` trials.

    `starts` are points to propose first (the catalogue's starting points); `output_dir` is where
    an optimizer that keeps files (SMAC) keeps them; `objectives` is how many losses each
    tell carries, or their names (`ladder` reads whether the first is a figure per GPU);
    `prior`, a weight per configuration, guides the model-based optimizers' acquisition (piBO:
    `gp`, `rf`; the others take no prior).
    """
    names = [] if isinstance(objectives, int) else list(objectives)
    count = objectives if isinstance(objectives, int) else len(names)
    if count > 1:
        check_available(name, count)
    if name not in _ADAPTERS:
        raise TunerError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    module_name, _, attr = _ADAPTERS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        needs = _NEEDS.get(name)
        if needs is None or exc.name != needs:
            raise
        raise TunerError(
            f"the {name} optimizer needs {needs}, which is not installed: "
            f"pip install 'tuner[{needs}]'"
        ) from None
    cls = getattr(module, attr)
    guided: dict[str, object] = {"prior": prior} if prior is not None and name in GUIDED else {}
    if name == "ladder":
        guided["per_gpu"] = bool(names) and names[0].endswith("_per_gpu")
    return cls(
        name,
        space,
        budget=budget,
        seed=seed,
        output_dir=output_dir,
        starts=starts or [],
        objectives=count,
        **guided,
    )

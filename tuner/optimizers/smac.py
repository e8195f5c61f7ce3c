"""SMAC3 through ask/tell: `gp` (BlackBoxFacade) and `rf` (HyperparameterOptimizationFacade).

The search space becomes a ConfigSpace space here: ordered value sets as ordinal
hyperparameters, ranges as integers or floats (log where the catalogue says so), choices as
categoricals, conditions as ConfigSpace conditions and forbidden rules as forbidden clauses where
ConfigSpace can state them (the rest are checked on each proposal by the study).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.fmt import fmt_knobs
from tuner.optimizers.base import Feedback, Losses, Proposal, SpaceExhausted, initial_design_size
from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace


def configspace(space: SearchSpace, seed: int = 0) -> Any:
    """The searched knobs as a ConfigSpace space, defaults being the engine's defaults."""
    from ConfigSpace import (
        Categorical,
        ConfigurationSpace,
        EqualsCondition,
        Float,
        InCondition,
        Integer,
        OrdinalHyperparameter,
    )
    from ConfigSpace.exceptions import ForbiddenValueError
    from ConfigSpace.hyperparameters import Hyperparameter

    cs = ConfigurationSpace(seed=seed)
    params: dict[str, Hyperparameter] = {}
    for name, knob in space.knobs.items():
        if knob.ordinal:
            params[name] = OrdinalHyperparameter(
                name, list(knob.choices), default_value=knob.default
            )
        elif knob.type in ("int", "float"):
            assert knob.low is not None and knob.high is not None  # a ranged number knob
            default = float(knob.default)
            if knob.type == "int":
                bounds = (int(knob.low), int(knob.high))
                params[name] = Integer(name, bounds, default=int(default), log=knob.log)
            else:
                params[name] = Float(name, (knob.low, knob.high), default=default, log=knob.log)
        else:
            params[name] = Categorical(name, list(knob.choices), default=knob.default)
    cs.add(list(params.values()))
    for name, knob in space.knobs.items():
        for parent, allowed in knob.when:
            child, par = params[name], params[parent]
            if len(allowed) == 1:
                cs.add(EqualsCondition(child, par, allowed[0]))
            else:
                cs.add(InCondition(child, par, list(allowed)))
    # Rules ConfigSpace cannot state are checked on each proposal (`SearchSpace.violated`).
    # The clauses are added at once: one at a time, ConfigSpace rebuilds its condition tree
    # each time, which takes seconds for a recorded table with many points not run.
    clauses = [(rule, c) for rule in space.rules if (c := rule.clause(params)) is not None]
    try:
        cs.add([c for _, c in clauses])
    except ForbiddenValueError:
        centre = space.centre_knobs()
        because = next((r.because for r, _ in clauses if r.matches(centre)), "a rule")
        raise TunerError(
            f"{space.engine}: the search's centre {fmt_knobs(centre)} is itself forbidden "
            f"({because}); change the knobs' defaults"
        ) from None
    return cs


def knobs_of(space: SearchSpace, config: Any) -> dict[str, Value]:
    """Engine knobs for a ConfigSpace configuration: the searched values plus fixed ones."""
    return space.assemble(dict(config))


def config_of(space: SearchSpace, cs: Any, knobs: Mapping[str, Value]) -> Any:
    """The ConfigSpace configuration for engine knobs (fixed knobs left out). Searched knobs
    that `knobs` leave unset, or that hold a value outside the space, take the centre's."""
    from ConfigSpace import Configuration

    return Configuration(cs, values=space.searched_values(knobs))


def _never_called(config: Any, seed: int = 0) -> float:
    raise AssertionError("tuner drives SMAC through ask/tell only")


class SmacOptimizer:
    """A SMAC facade driven through ask/tell.

    Trials are deterministic to SMAC (tuner repeats runs itself) and each configuration is
    measured once. The initial design is a Sobol sample (`initial_design_size`), then `starts`:
    the catalogue's starting points (the largest batch, for `hf`). On the recorded landscapes
    they lifted SMAC's median pick at 5 trials from 0.50 to 0.85 (CPU table) and 0.51 to 0.82
    (H100 table) of the optimum (reports/search-efficiency.md of 2026-11-22). A trial with no
    loss (a crash, a broken constraint) is told as CRASHED at the worst loss seen so far, per
    objective (0 at worst: no tokens). With a `prior` (a weight in (0, 1] per configuration,
    `tuner.predict.prior.Belief`), the acquisition function is weighted by it as piBO does, the
    weight's power decaying as trials come in. Several objectives are searched with ParEGO (random
    weights scalarize the normalized costs anew at each step), SMAC's own multi-objective method.
    """

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
        prior: Callable[[dict[str, Value]], float] | None = None,
    ) -> None:
        from smac import BlackBoxFacade, HyperparameterOptimizationFacade, Scenario
        from smac.multi_objective.parego import ParEGO

        self.space = space
        self.cs = configspace(space, seed)
        facade = BlackBoxFacade if name == "gp" else HyperparameterOptimizationFacade
        names = [f"objective_{i}" for i in range(objectives)]
        scenario = Scenario(
            self.cs, deterministic=True, n_trials=max(budget, 2), seed=seed,
            output_directory=output_dir, objectives=names if objectives > 1 else "cost",
        )  # fmt: skip
        model = None
        if name == "gp":
            # Two restarts of the GP's hyperparameter fit, not SMAC's ten: the same picks within
            # noise in a fraction of the time (reports/search-variants.md).
            model = _gaussian_process(scenario)
        everything = all_configurations(space, self.cs)
        maximizer = None
        if everything is not None:
            maximizer = _exhaustive(self.cs, everything, seed)
        design = facade.get_initial_design(
            scenario,
            n_configs=initial_design_size(space, budget),
            additional_configs=[config_of(space, self.cs, s) for s in starts],
        )
        acquisition = None
        if prior is not None:
            acquisition = _prior_weighted(facade, scenario, space, prior)
        self.smac = facade(
            scenario,
            _never_called,
            model=model,
            acquisition_function=acquisition,
            acquisition_maximizer=maximizer,
            initial_design=design,
            intensifier=facade.get_intensifier(scenario, max_config_calls=1),
            multi_objective_algorithm=ParEGO(scenario, seed=seed) if objectives > 1 else None,
            overwrite=True,
            logging_level=40,
        )
        self.worst = [0.0] * objectives

    def ask(self) -> Proposal:
        from smac.main.exceptions import ConfigurationSpaceExhaustedException

        try:
            info = self.smac.ask()
        except (ConfigurationSpaceExhaustedException, StopIteration):
            # SMAC's intensifier ends its generator of trials once it has none left to offer.
            raise SpaceExhausted("SMAC has proposed every configuration of the space") from None
        return Proposal(knobs_of(self.space, info.config), _origin(info.config.origin), info)

    def tell(self, handle: Any, losses: Losses, feedback: Feedback | None = None) -> None:
        from smac.runhistory.dataclasses import TrialValue
        from smac.runhistory.enumerations import StatusType

        if losses is None:
            cost = list(self.worst)
            value = TrialValue(cost=cost if len(cost) > 1 else cost[0], status=StatusType.CRASHED)
        else:
            self.worst = [max(w, x) for w, x in zip(self.worst, losses, strict=True)]
            value = TrialValue(cost=list(losses) if len(losses) > 1 else losses[0])
        self.smac.tell(handle, value)

    def observe(
        self, knobs: Mapping[str, Value], losses: Losses, feedback: Feedback | None = None
    ) -> None:
        from smac.runhistory.dataclasses import TrialInfo

        self.tell(TrialInfo(config=config_of(self.space, self.cs, knobs), seed=0), losses)


#: The most configurations a space may hold for the acquisition function to be maximized over
#: every one of them, exactly, instead of by SMAC's local and random search: that search
#: samples thousands of configurations per proposal, and where a recorded table leaves points
#: out (forbidden clauses) ConfigSpace's sampling took seconds of each proposal.
EXHAUSTIVE_MAX = 4096


def all_configurations(space: SearchSpace, cs: Any) -> list[Any] | None:
    """Every allowed configuration of a finite space (each searched knob a set of values), as
    ConfigSpace configurations; None where a knob is a range or there are over
    `EXHAUSTIVE_MAX`."""
    points = space.enumerate(EXHAUSTIVE_MAX)
    if points is None:
        return None
    found: dict[Any, Any] = {}
    for assembled in points:
        try:
            config = config_of(space, cs, assembled)
            config.check_valid_configuration()
        except (ValueError, TunerError):  # forbidden by a clause, or outside a condition
            continue
        found.setdefault(config, config)
    return list(found) or None


def _exhaustive(cs: Any, configs: list[Any], seed: int) -> Any:
    """A SMAC acquisition maximizer that scores every configuration of `configs`."""
    from smac.acquisition.maximizer import AbstractAcquisitionMaximizer

    class Exhaustive(AbstractAcquisitionMaximizer):
        def _maximize(self, previous_configs: list[Any], n_points: int) -> list[Any]:
            return self._sort_by_acquisition_value(configs)[:n_points]

    return Exhaustive(cs, challengers=len(configs), seed=seed)


#: piBO's decay: the prior weight is raised to `budget * PIBO_BETA / (n + 1)` at the n-th
#: proposal after the initial design (SMAC's suggested default, and the paper's, is a tenth of
#: the trial budget).
PIBO_BETA = 0.1


def _prior_weighted(
    facade: Any, scenario: Any, space: SearchSpace, prior: Callable[[dict[str, Value]], float]
) -> Any:
    """The facade's acquisition function weighted by `prior` over whole configurations: SMAC's
    `PriorAcquisitionFunction` (piBO), whose own prior is a product of per-knob densities and
    cannot say that a combination of values is good."""
    import numpy as np
    from ConfigSpace import Configuration
    from smac.acquisition.function import PriorAcquisitionFunction

    memo: dict[bytes, float] = {}

    class JointPrior(PriorAcquisitionFunction):
        def _compute_prior(self, X: Any) -> Any:
            assert self.model is not None  # SMAC sets it before it asks for the acquisition
            cs = self.model._configspace
            for x in X:
                if x.tobytes() not in memo:
                    knobs = knobs_of(space, Configuration(cs, vector=x))
                    memo[x.tobytes()] = prior(knobs)
            return np.array([[memo[x.tobytes()]] for x in X])

    beta = scenario.n_trials * PIBO_BETA
    return JointPrior(facade.get_acquisition_function(scenario), decay_beta=beta)


#: Restarts of the GP's hyperparameter fit (L-BFGS), where SMAC's BlackBoxFacade makes ten.
GP_RESTARTS = 2


def _gaussian_process(scenario: Any) -> Any:
    """The BlackBoxFacade's Gaussian process (its kernel, normalized costs) with
    `GP_RESTARTS` restarts of its fit."""
    from smac import BlackBoxFacade
    from smac.model.gaussian_process import GaussianProcess

    return GaussianProcess(
        configspace=scenario.configspace,
        kernel=BlackBoxFacade.get_kernel(scenario=scenario),
        n_restarts=GP_RESTARTS,
        normalize_y=True,
        seed=scenario.seed,
    )


def _origin(text: str | None) -> str:
    """SMAC's origin strings, shortened: `sobol`, `local search`, `random search`, ..."""
    if not text:
        return "search"
    return text.split(":")[-1].strip().lower()

"""Variants of tuner's search on the Martinez 2024 tables: a quick way to try a change to the
search before the full benchmark (`search_efficiency.py --external`) judges it.

Each variant is the current code with a change patched in for the run (SMAC's facade settings,
the study's back-off); each study is the external benchmark's (`search_efficiency.
external_study`): tuner's own loop on a table's replay, baseline first, no confirmation, ended
once its pick is the table's best (the tables are noise-free, so the figures are the same).
Prints, per variant: the median ratio of the pick to the table's best, the
studies at 98% and at 95% of it, the median trials to 95% (a study that never got there
counts as never) and the CPU seconds a study took in its process.

    python benchmarks/search_variants.py VARIANT OPTIMIZER [--trials 10] [--seeds 3] \\
        [--every 1] [--jobs 2]

VARIANT is `current` or changes joined by `+`: `no-backoff` (an out-of-memory trial is not
followed by the next smaller batch), `restarts=N` (the GP's fit restarts; tuner's default is
`GP_RESTARTS`), `design=N` (SMAC's initial design points instead of a quarter of the
budget; SMAC itself caps them at a quarter of the budget, so only fewer take effect),
`log-costs` (costs told as sign(x) log(1 + |x|)), `interleave=P` (SMAC's random interleaving
probability, in percent), `challengers=N` (SMAC's acquisition challengers),
`largest-batch-first` (the largest batch, other knobs at their defaults, among the catalogue's
starting points, as `hf`'s catalogue has it; random search takes no starting points),
`starts-first` (the catalogue's starting points run by the study right after the baseline, as
warm starts are, instead of handed to the optimizer's initial design).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "benchmarks" / "data" / "external" / "martinez2024"


#: The variant this process runs (a worker runs many studies: patched once, not per study).
_APPLIED: list[str] = []


def patch(variant: str) -> None:
    """Applies `variant`'s changes to this process, once."""
    import tuner.optimizers.smac as smac_adapter
    from tuner.specs.space import SearchSpace

    if _APPLIED:
        assert [variant] == _APPLIED, (_APPLIED, variant)
        return
    _APPLIED.append(variant)
    for change in filter(None, variant.split("+")):
        name, _, value = change.partition("=")
        if change == "current":
            continue
        if name == "no-backoff":
            SearchSpace.backed_off = lambda self, knobs: None  # type: ignore[method-assign]
        elif name == "restarts":
            smac_adapter.GP_RESTARTS = int(value)
        elif name == "design":
            smac_adapter.initial_design_size = lambda space, budget, n=int(value): n
        elif name == "log-costs":
            tell = smac_adapter.SmacOptimizer.tell

            def log_tell(self: Any, handle: Any, losses: Any, tell: Any = tell) -> None:
                if losses is not None:
                    losses = tuple(math.copysign(math.log1p(abs(x)), x) for x in losses)
                tell(self, handle, losses)

            smac_adapter.SmacOptimizer.tell = log_tell  # type: ignore[method-assign]
        elif name == "interleave":
            from smac import BlackBoxFacade
            from smac.random_design.probability_design import ProbabilityRandomDesign

            share = int(value) / 100
            BlackBoxFacade.get_random_design = staticmethod(  # type: ignore[method-assign]
                lambda scenario, *, probability=share: ProbabilityRandomDesign(
                    probability=probability, seed=scenario.seed
                )
            )
        elif name == "largest-batch-first":
            initial = SearchSpace.initial_knobs

            def largest_first(self: Any, initial: Any = initial) -> list[dict[str, Any]]:
                from tuner.errors import TunerError

                knob = self.knobs.get("batch_size")
                for batch in sorted(knob.choices if knob else (), reverse=True):
                    try:  # the largest the space allows at the other knobs' defaults
                        return [self.complete({"batch_size": batch}), *initial(self)]
                    except TunerError:
                        continue
                return initial(self)

            SearchSpace.initial_knobs = largest_first  # type: ignore[method-assign]
        elif name == "starts-first":
            import tuner.study.study as study_module

            warm = study_module.warm_knobs

            def starts_first(space: Any, given: Any, warm: Any = warm) -> list[dict[str, Any]]:
                found = warm(space, given)
                return found + [k for k in space.initial_knobs() if k not in found]

            study_module.warm_knobs = starts_first  # type: ignore[assignment]
            study_module.Study._starts = lambda self: []  # type: ignore[method-assign]
        elif name == "challengers":
            from smac import BlackBoxFacade
            from smac.acquisition.maximizer import LocalAndSortedRandomSearch

            count = int(value)
            BlackBoxFacade.get_acquisition_maximizer = staticmethod(  # type: ignore[method-assign]
                lambda scenario, *, challengers=count: LocalAndSortedRandomSearch(
                    scenario.configspace, challengers=challengers, seed=scenario.seed
                )
            )
        else:
            raise SystemExit(f"unknown change {change!r}")


def one(job: tuple[str, str, str, int, int]) -> tuple[float, int | None, float]:
    """(ratio of the pick, trials to 95% or None, CPU seconds) of one study: the external
    benchmark's study (`harness.external_study`) under `variant`."""
    from harness import external_study, reach_at

    variant, optimizer, table, trials, seed = job
    patch(variant)
    started = time.process_time()
    found = external_study((table, optimizer, trials, seed))
    reached = reach_at(found, 0.95)
    return found["ratio"][-1], reached and reached[0], time.process_time() - started


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"  # SMAC's proposals depend on string hashing
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("optimizer")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="every Nth table only")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    tables = sorted(TABLES.glob("*.json"))[:: args.every]
    jobs = [
        (args.variant, args.optimizer, str(t.relative_to(ROOT)), args.trials, s)
        for t in tables
        for s in range(args.seeds)
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        found = list(pool.map(one, jobs))
    ratios = [ratio for ratio, _, _ in found]
    to95 = statistics.median(math.inf if n is None else n for _, n, _ in found)
    print(
        f"{args.variant} {args.optimizer}, {args.trials} trials, {len(tables)} tables x "
        f"{args.seeds} seeds: median ratio {statistics.median(ratios):.3f}, >= 0.98 "
        f"{sum(r >= 0.98 for r in ratios)}/{len(found)}, >= 0.95 "
        f"{sum(r >= 0.95 for r in ratios)}/{len(found)}, median trials to 95% "
        f"{'never' if math.isinf(to95) else f'{to95:g}'}, CPU s a study "
        f"{statistics.mean(cpu for _, _, cpu in found):.1f}"
    )


if __name__ == "__main__":
    main()

"""How `ladder` was designed: each of its parts, and the alternatives tried, measured on the
tuning half of the imported tables only.

    python benchmarks/ladder_design.py [--jobs 2]

Each variant is `ladder` with some of its constants (`tuner.optimizers.ladder.Params`) changed,
run by the study of `harness.external_study` (tuner's loop on the table's replay,
baseline first, ended once the pick is the table's best) at a budget of 10 trials. `ladder` is
deterministic, so one seed each. `descend`, `random` (10 seeds) and the shipped `ladder` are
the yardsticks. The test half is never read. Writes reports/ladder-design.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from harness import ROOT, SOURCES, external_study, fixed_hash_seed, reach_at, split_of

import tuner.optimizers.ladder as ladder_module
from tuner.optimizers.ladder import PARAMS, Params

OUT = ROOT / "reports" / "ladder-design.md"
BUDGET = 10
NONE: dict[str, dict[str, float]] = {"limits": {}, "none": {}}
#: The parts, added one at a time, then the alternatives tried on the whole.
STRUCTURE = Params(
    use_pressure=False, memory_halves=False, gpu_shift_free=1.0, climb=False,
    peak_search=False, model_layouts=False, priors=NONE, prune_fresh=False,
)  # fmt: skip


def _with(**changes: Any) -> Params:
    return dataclasses.replace(STRUCTURE, **changes)


STEPS: list[tuple[str, Params]] = [
    ("structure: a line search on the load per layout (the largest load first, then halving "
     "the gap to a failure), the layout worked on finished first, fresh layouts nearest the "
     "best first, started at its boundary moved a load step per GPU doubling", STRUCTURE),
    ("+ feasibility: steps along a line by the limits' pressure and its growth",
     _with(use_pressure=True)),
    ("+ memory: half way up first where memory grows with the load (`backoff`)",
     _with(use_pressure=True, memory_halves=True)),
    ("+ without limits, a fresh line starts at the best line's peak and climbs a step at a "
     "time", _with(use_pressure=True, memory_halves=True, gpu_shift_free=0.0, climb=True)),
    ("+ a look below a line's best where the figure fell above it",
     _with(use_pressure=True, memory_halves=True, gpu_shift_free=0.0, climb=True,
           peak_search=True)),
    ("+ a model across layouts (ridge on the layouts' knobs, no prior)",
     _with(use_pressure=True, memory_halves=True, gpu_shift_free=0.0, climb=True,
           peak_search=True, model_layouts=True)),
    ("+ transfer: prior coefficients fitted on the tuning half (benchmarks/ladder_fit.py)",
     _with(use_pressure=True, memory_halves=True, gpu_shift_free=0.0, climb=True,
           peak_search=True, model_layouts=True, priors=PARAMS.priors)),
    ("+ fresh layouts the model puts below 80% of the best left (= the shipped ladder)",
     PARAMS),
]  # fmt: skip
ALTERNATIVES: list[tuple[str, Params]] = [
    ("cost: every layout's first point before any second (breadth first)",
     dataclasses.replace(PARAMS, finish_lines=False)),
    ("under limits, a layout's boundary moves 2 load steps per GPU doubling (not 1)",
     dataclasses.replace(PARAMS, gpu_shift=2.0)),
    ("after a broken limit, the load nearest the pressure's estimate (not the largest below)",
     dataclasses.replace(PARAMS, snap_below=False)),
    ("around a line's peak, the gap halved (not a step at a time)",
     dataclasses.replace(PARAMS, bracket=True)),
    ("layouts left below 90% of the best (not 80%)", dataclasses.replace(PARAMS, hopeless=0.9)),
    ("layouts left below 60% of the best", dataclasses.replace(PARAMS, hopeless=0.6)),
    ("prior coefficients held loosely (spread 1, not 0.3)",
     dataclasses.replace(PARAMS, prior_sd=1.0)),
    ("prior coefficients held tightly (spread 0.1)", dataclasses.replace(PARAMS, prior_sd=0.1)),
    ("steps along a line of up to 8x (not 4x) before its pressure's growth is known",
     dataclasses.replace(PARAMS, max_step=8.0)),
    ("cost: among fresh layouts the model puts within 80% of the most promising, the nearest "
     "(fewest GPUs changed) first", dataclasses.replace(PARAMS, near_share=0.8)),
]  # fmt: skip


def run(job: tuple[Params | None, str, str, int]) -> dict[str, Any]:
    """One study; `params` replace the shipped ladder's constants in this worker."""
    params, table, optimizer, seed = job
    ladder_module.PARAMS = params or PARAMS
    return external_study((table, optimizer, BUDGET, seed))


def cells(studies: list[dict[str, Any]]) -> list[str]:
    reached = [reach_at(f, 0.95) for f in studies]
    trials = [r[0] if r else math.inf for r in reached]
    gpu_s = [r[1] if r else math.inf for r in reached]
    median = statistics.median(trials)
    return [
        f"{sum(r is not None for r in reached)}/{len(studies)}",
        "not reached" if math.isinf(median) else f"{median:g}",
        f"{statistics.fmean(min(t, BUDGET + 1) for t in trials):.2f}",
        _fmt(statistics.median(gpu_s)),
        f"{statistics.fmean(f['launches'][-1] for f in studies):.1f}",
    ]


def _fmt(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:,.0f}"


def main() -> int:
    fixed_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    tuning = [t for t, half in split_of().items() if half == "tuning"]
    variants: list[tuple[str, Params | None, str, int]] = [
        ("descend (the procedure)", None, "descend", 1),
        ("random", None, "random", 10),
        *((label, p, "ladder", 1) for label, p in STEPS + ALTERNATIVES),
    ]
    jobs = [
        (p, table, optimizer, seed)
        for _, p, optimizer, seeds in variants
        for table in tuning
        for seed in range(seeds)
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        found = dict(zip(range(len(jobs)), pool.map(run, jobs, chunksize=8), strict=True))
    by_job = {i: f for i, f in found.items()}
    lines = [
        "# How ladder was designed, measured on the tuning half",
        "",
        "Generated by `python benchmarks/ladder_design.py`. Each row is a variant of `ladder` "
        "(its constants, `tuner.optimizers.ladder.Params`) run by the benchmark's study "
        "(`benchmarks/search_efficiency.py --external`: tuner's loop on each table's replay, "
        f"baseline first, ended once the pick is the table's best) at {BUDGET} trials on the "
        f"{len(tuning)} tables of the tuning half (`benchmarks/data/external/split.json`); "
        "the test half is not read. The parts are added one at a time, then alternatives to "
        "the shipped choices are tried one at a time. `ladder` is deterministic: one seed; "
        "random search: 10 seeds. Trials and GPU-seconds to 95% of the best feasible point "
        "count the baseline (launches at the stated default, as in the report). The order "
        "of the work was not this clean: the parts were built and looked at table by table "
        "on this half, and this table measures them afterwards.",
        "",
    ]
    for source, label in SOURCES.items():
        lines += [
            f"## {label}",
            "",
            "| variant | studies >= 95% within 10 | median trials to 95% | mean trials to 95% "
            "(11 if not reached) | median GPU-s to 95% | launches per study |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        start = 0
        for name, _, _, seeds in variants:
            count = len(tuning) * seeds
            studies = [
                by_job[i]
                for i in range(start, start + count)
                if Path(jobs[i][1]).parent.name == source
            ]
            start += count
            lines.append(f"| {name} | " + " | ".join(cells(studies)) + " |")
        lines.append("")
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

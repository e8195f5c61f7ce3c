"""Predict, then measure, judged on real measurements: AIConfigurator's performance model as
tuner's prior, on the imported silicon tables (NVIDIA's measurements of vLLM) and the Martinez
tables it covers.

Per table, the goal of the external benchmark (`search_efficiency.external_goal`: tok/s per GPU
within a TPOT and TTFT limit on the silicon tables, output tok/s on Martinez's), and four ways
to choose a configuration, at `--budget` trials, `--seeds` seeds:

- the model alone: its predicted best configuration that keeps the limits, measured on the
  table (one trial, the same for every seed);
- tuner cold: today's default search (`gp`), baseline first;
- tuner with the prior: the same, `--prior aiconfigurator` (its 3 best run first, then the
  baseline);
- tuner with the prior and piBO: the same, `--pibo` too (the predictions also weight the
  acquisition function; `tuner.predict.prior.Belief`);
- tuner with the prior, started only from configurations predicted to keep each limit by 20%
  (`tuner.predict.prior.with_margin`): the model's TTFT error is 16-62% on these tables;
- random search.

Reported: trials to 95% of the best feasible point (median over seeds, then over tables; a
study that never got there counts as never), the final ratio, and the model's prediction error
on each table (median absolute percentage error over the table's points, per figure). NVIDIA's
model is judged here on NVIDIA's own measurements, which its kernel data come from: expect it
to be near them; on measurements it was not built from it is likely to be further off.

    python benchmarks/prior_benchmark.py [--seeds 10] [--budget 10] [--jobs 2] \\
        [--cache FILE] [--predictions FILE] [--out reports/prior.md]

Needs the `plan` extra (AIConfigurator). Predictions take about a second a configuration on 2
cores; `--predictions FILE` keeps them (JSON lines) for the next run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from datetime import date
from pathlib import Path
from typing import Any

from jobs import fixed_hash_seed, run_jobs
from search_efficiency import EXTERNAL, ROOT, external_goal, median_reach, reach_at, table_study

from tuner.errors import TunerError
from tuner.measure.objective import prediction_error
from tuner.measure.trial import PriorPlan
from tuner.predict.prior import load_prior, prior_plan, rerank, with_margin
from tuner.replay.replay import load_replay
from tuner.study.prepare import prepare

REPORT = ROOT / "reports" / "prior.md"
METHODS = {
    "tuner cold (gp)": ("gp", False),
    "tuner + prior": ("gp", True),
    "tuner + prior + piBO": ("gp", "pibo"),
    "tuner + prior, 20% margin": ("gp", "margin"),
    "random": ("random", False),
}
#: The "margin" method starts from configurations predicted to keep each limit by this share.
MARGIN = 0.2
FIGURES = ("output_tokens_per_s_per_gpu", "output_tokens_per_s", "ttft_p99_ms", "itl_p99_ms")


def predict(job: tuple[str]) -> dict[str, Any]:
    """A table's prior plan from AIConfigurator, or why it has none."""
    path = ROOT / job[0]
    setup = prepare(f"replay:{path}", "", "")
    said: list[str] = []
    try:
        prior = load_prior("aiconfigurator", setup, said.append)
    except TunerError as exc:
        return {"plan": None, "why": str(exc)}
    if prior is None:
        return {"plan": None, "why": "; ".join(said)}
    plan = prior_plan(prior, setup, external_goal(setup.replay.table), said.append)
    return {"plan": plan.model_dump(mode="json"), "why": "; ".join(said) or None}


def one_study(job: tuple[str, str, int, int, bool | str, str]) -> dict[str, Any]:
    """One study; `with_prior` is False (cold), True (the prior's starts) or "pibo" (its
    starts, and its weight in the acquisition)."""
    table, optimizer, budget, seed, with_prior, predictions = job
    plan = None
    if with_prior:
        plan = PriorPlan.model_validate(_plans(Path(predictions))[table]["plan"])
    if with_prior == "margin":
        target = external_goal(load_replay(f"replay:{ROOT / table}").table)
        plan = rerank(plan, with_margin(target, MARGIN))
    return table_study(table, optimizer, budget, seed, plan, pibo=with_prior == "pibo")


def _plans(path: Path) -> dict[str, Any]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {table: found for (table,), found in lines}


def main() -> None:
    fixed_hash_seed()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tables", nargs="*", help="imported tables (default: all)")
    parser.add_argument("--cache", type=Path, help="the studies' results (JSON lines)")
    parser.add_argument(
        "--predictions", type=Path, default=Path("prior-predictions.jsonl"),
        help="the predictions (JSON lines), kept for the next run",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    names = args.tables or [str(p.relative_to(ROOT)) for p in sorted(EXTERNAL.glob("*/*.json"))]
    plans = run_jobs(predict, [(n,) for n in names], args.jobs, args.predictions)
    covered = [n for n in names if plans[(n,)]["plan"] is not None]
    jobs = [
        (n, optimizer, args.budget, seed, with_prior, str(args.predictions.resolve()))
        for n in covered
        for optimizer, with_prior in METHODS.values()
        for seed in range(args.seeds)
    ]
    done = run_jobs(one_study, jobs, args.jobs, args.cache)
    args.out.write_text(report(args, names, plans, done))
    print(f"wrote {args.out}")


def _model_alone(table_path: str, plan: PriorPlan) -> float:
    """The ratio to the best feasible point of the model's predicted best, measured."""
    table = load_replay(f"replay:{ROOT / table_path}").table
    target = external_goal(table)
    top = target.value(table.optimum(target)) or 1.0
    if not plan.starts:
        return 0.0
    point = table.point(plan.starts[0])
    return (target.value(point) or 0.0) / top if target.feasible(point) is None else 0.0


def _errors(table_path: str, plan: PriorPlan) -> dict[str, float]:
    table = load_replay(f"replay:{ROOT / table_path}").table
    beside = [
        p.model_copy(update={"prediction": plan.prediction(p.knobs)})
        for p in table.points
        if p.status == "ok"
    ]
    return prediction_error(beside, FIGURES)


def report(args: argparse.Namespace, names: list[str], plans: dict, done: dict) -> str:
    covered: dict[str, Any] = {}
    uncovered: list[tuple[str, str]] = []
    for name in names:
        found = plans[(name,)]
        plan = PriorPlan.model_validate(found["plan"]) if found["plan"] else None
        if plan is None or not plan.predicted:
            # No plan, or one whose every prediction was refused: the study starts cold.
            uncovered.append((name, found["why"]))
            continue
        studies = {
            label: [
                done[(name, optimizer, args.budget, s, with_prior, _path(args))]
                for s in range(args.seeds)
            ]
            for label, (optimizer, with_prior) in METHODS.items()
        }
        covered[name] = (_model_alone(name, plan), _errors(name, plan), studies)
    lines = [
        "# Predict, then measure: AIConfigurator as tuner's prior",
        "",
        f"Generated by `python benchmarks/prior_benchmark.py --seeds {args.seeds} --budget "
        f"{args.budget}` (PYTHONHASHSEED=0) on {date.today():%Y-%m-%d}. The method is in the "
        "script's docstring; the tables are `benchmarks/data/external/` (each keeps its "
        "source: repository, commit, file).",
        "",
        "NVIDIA's model is judged here on NVIDIA's own silicon measurements, from which its "
        "kernel data come: its error on them is a floor, not what to expect on other "
        "machines, models or engine versions. Every study measures the engine's defaults "
        "(the baseline), and a method's trials to 95% count it: the cold methods run it "
        "first, the prior methods right after the prior's 3 best predicted configurations.",
        "",
        *_summary(covered, args),
        *_per_table(covered, args),
        "## Not covered",
        "",
        f"{len(uncovered)} of {len(names)} tables: AIConfigurator has nothing to say of them "
        "(an engine, GPU or model it does not cover, or a combination its database lacks for "
        "every configuration), and `--prior aiconfigurator` starts such a study cold.",
        "",
        "| table | why |",
        "| --- | --- |",
        *(f"| {Path(n).stem} | {why} |" for n, why in uncovered),
        "",
    ]
    return "\n".join(lines)


def _reach(studies: list[dict[str, Any]]) -> float:
    """A table's median over seeds of the trials to 95% (inf: not reached)."""
    return statistics.median(r[0] if (r := reach_at(f, 0.95)) else math.inf for f in studies)


def _final(studies: list[dict[str, Any]]) -> float:
    return statistics.median(f["ratio"][-1] for f in studies)


def _shown(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:g}"


def _summary(covered: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Over the covered tables: each method's median trials to 95% and final ratio, and the
    issue's goal checked."""
    alone = {n: a for n, (a, _, _) in covered.items()}
    reach = {label: [_reach(st[label]) for _, _, st in covered.values()] for label in METHODS}
    reach["model alone"] = [1.0 if a >= 0.95 else math.inf for a in alone.values()]
    finals = {label: [_final(st[label]) for _, _, st in covered.values()] for label in METHODS}
    finals["model alone"] = list(alone.values())
    lines = [
        f"## Trials to 95% of the best feasible point ({len(covered)} covered tables)",
        "",
        "Each table's median over seeds, then the median over tables (a study that never got "
        f"there within {args.budget} trials counts as never; the model alone: 1 trial where "
        "its pick reached 95%, else never). Final ratio: the pick after the budget, as a share "
        "of the table's best feasible point.",
        "",
        "| method | median trials to 95% | tables reached | median final ratio "
        "| worst final ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label in ["model alone", *METHODS]:
        values = reach[label]
        lines.append(
            f"| {label} | {_shown(statistics.median(values))} | "
            f"{sum(not math.isinf(v) for v in values)}/{len(values)} | "
            f"{statistics.median(finals[label]):.3f} | {min(finals[label]):.3f} |"
        )
    within = {label: sum(v <= 3 for v in values) for label, values in reach.items()}
    broke = sum(a == 0.0 for a in alone.values())
    lines += [
        "",
        "Tables where the median seed reached 95% within 3 trials: "
        + ", ".join(f"{label} {n}" for label, n in within.items())
        + f". The model's own pick broke a limit (ratio 0) on {broke} of {len(alone)} tables.",
    ]
    for label in ("tuner + prior", "tuner + prior + piBO", "tuner + prior, 20% margin"):
        with_prior, cold = (
            statistics.median(reach[label]),
            statistics.median(reach["tuner cold (gp)"]),
        )
        worse = [
            Path(n).stem
            for n, (a, _, st) in covered.items()
            if min(f["ratio"][-1] for f in st[label]) < a - 1e-9
        ]
        lines += [
            "",
            f"Goal, {label}: 95% within 3 trials in the median: "
            f"{'met' if with_prior <= 3 else 'not met'} ({_shown(with_prior)}); at most half "
            f"the cold search's trials: {'met' if with_prior <= cold / 2 else 'not met'} "
            f"({_shown(with_prior)} against {_shown(cold)}); never worse than the model alone "
            "(every seed's final pick at least the model's pick): "
            + ("met" if not worse else f"not met on {len(worse)} tables ({', '.join(worse)})")
            + ".",
        ]
    lines.append("")
    return lines


def _per_table(covered: dict[str, Any], args: argparse.Namespace) -> list[str]:
    header = [
        "table", "prediction error (median abs. %)", "model alone: ratio",
        *(f"{label}: trials to 95%" for label in METHODS),
    ]  # fmt: skip
    lines = [
        "## Per table",
        "",
        'Trials to 95%: the median over seeds ("not reached" where half or more did not).',
        "",
        "| " + " | ".join(header) + " |",
        "| --- | --- | " + " | ".join(["---:"] * (len(header) - 2)) + " |",
    ]
    for name, (alone, errors, studies) in covered.items():
        cells = [Path(name).stem]
        cells.append(", ".join(f"{_SHORT[k]} {v:.1f}%" for k, v in errors.items()) or "-")
        cells.append(f"{alone:.3f}")
        for label in METHODS:
            reached = [r[0] if (r := reach_at(f, 0.95)) else None for f in studies[label]]
            cells.append(median_reach(reached, ".0f"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


_SHORT = {
    "output_tokens_per_s_per_gpu": "tok/s/GPU",
    "output_tokens_per_s": "tok/s",
    "ttft_p99_ms": "TTFT p99",
    "itl_p99_ms": "ITL p99",
}


def _path(args: argparse.Namespace) -> str:
    return str(args.predictions.resolve())


if __name__ == "__main__":
    main()

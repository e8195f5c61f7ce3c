"""Trials side by side on Dask workers, measured on a recorded landscape: wall-clock time and the
configuration picked, with 1, 2 and 4 local workers; and whether a warm start from another GPU
model's profile helps a study on a new model.

Part 1. A replay study (tuner's own loop, the default `gp` optimizer, baseline first, no
confirmation trials) of a recorded table runs on a local Dask cluster of N workers, each trial
sleeping its recorded GPU-seconds times a scale in the worker (the stand-in for measuring). For
each N and seed: the study's wall-clock time, and the recorded tok/s of its pick over the table's
optimum. The same seeds in process (no Dask) give Dask's own overhead.

Part 2. Warm start: a study on table B is started from the best configuration of a study on
table A (another GPU model, same engine, model and workload), against the same study started
cold, at small budgets over many seeds (in process, no sleep).

    python benchmarks/parallel_trials.py [--seeds 5] [--trials 16] [--scale 0.5]

Writes reports/parallel-trials.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tuner.execution.fleet import FleetSpec, open_fleet
from tuner.replay.replay import load_replay
from tuner.study.prepare import prepare
from tuner.study.study import replay_study, warm_knobs

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
REPORT = ROOT / "reports" / "parallel-trials.md"
WORKERS = (1, 2, 4)
WARM_PAIRS = (
    ("h100-hf-tiny-llama-humaneval.json", "cpu-hf-tiny-llama-humaneval.json"),
    ("cpu-hf-tiny-llama-humaneval.json", "h100-hf-tiny-llama-humaneval.json"),
)
WARM_BUDGETS = (4, 6, 10)


def ratio_of(table: Any, knobs: dict[str, Any]) -> float:
    """The recorded tok/s of `knobs` over the table's optimum."""
    return (table.point(knobs).output_tokens_per_s or 0.0) / (
        table.optimum().output_tokens_per_s or 1.0
    )


def part1(path: Path, args: argparse.Namespace, tmp: Path) -> str:
    table = load_replay(f"replay:{path}").table
    runs: dict[str, list[tuple[float, float, float]]] = {}  # label -> (wall, gpu_s, ratio)

    def study(label: str, seed: int, fleet: Any) -> None:
        start = time.perf_counter()
        outcome = replay_study(
            path,
            trials=args.trials,
            seed=seed,
            run_dir=tmp / f"{label}-{seed}",
            confirm=0,
            fleet=fleet,
            replay_time_scale=args.scale,
        )
        wall = time.perf_counter() - start
        assert len(outcome.results) == args.trials
        pick = ratio_of(table, outcome.best.knobs) if outcome.best else 0.0
        runs.setdefault(label, []).append((wall, outcome.gpu_s, pick))
        print(f"{label} seed {seed}: {wall:.1f} s, pick {pick:.3f}", flush=True)

    # In process: the study's own evaluator sleeps; no Dask at all.
    for seed in range(args.seeds):
        study("in process", seed, None)
    for n in WORKERS:
        with open_fleet(FleetSpec(workers=n)) as fleet:
            for seed in range(args.seeds):
                study(f"{n} worker{'s' if n > 1 else ''}", seed, fleet)

    one = statistics.median(w for w, _, _ in runs["1 worker"])
    lines = [
        f"## {path.name}: {args.trials} trials, sleep {args.scale:g} x recorded GPU-seconds",
        "",
        "| trials run on | wall-clock s (median) | speed-up over 1 worker | speed-up / workers "
        "| recorded GPU-s (median) | workers busy | pick / optimum: median | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, rows in runs.items():
        wall = statistics.median(w for w, _, _ in rows)
        n = int(label.split()[0]) if label[0].isdigit() else 1
        picks = [p for _, _, p in rows]
        # The share of the workers' time spent in trials (sleeping their scaled GPU-seconds).
        busy = statistics.median(g * args.scale / (w * n) for w, g, _ in rows)
        lines.append(
            f"| {label} | {wall:.1f} | {one / wall:.2f}x | {one / wall / n:.2f} | "
            f"{statistics.median(g for _, g, _ in rows):,.0f} | {busy:.2f} | "
            f"{statistics.median(picks):.3f} | {min(picks):.3f} | {max(picks):.3f} |"
        )
    lines += ["", "Per seed (wall-clock s, recorded GPU-s, pick / optimum):", ""]
    for label, rows in runs.items():
        cells = ", ".join(f"{w:.1f} s ({g:.0f} GPU-s) {p:.3f}" for w, g, p in rows)
        lines.append(f"- {label}: {cells}")
    return "\n".join(lines) + "\n"


def part2(args: argparse.Namespace, tmp: Path) -> str:
    lines = [
        "## Warm start from another GPU model's profile",
        "",
        f"The source study: {args.trials} trials and 2 confirmations on table A (seed s); its "
        "pick (the profile's best) goes first in the initial design of a study on table B "
        f"(seed s). Pick / optimum of table B, median over {args.warm_seeds} seeds "
        "(min-max in brackets).",
        "",
        "| A -> B | trials | cold | warm | seeds whose warm start is new to B's starts |",
        "|---|---:|---:|---:|---:|",
    ]
    for source_name, target_name in WARM_PAIRS:
        source, target = DATA / source_name, DATA / target_name
        table = load_replay(f"replay:{target}").table
        space = prepare(f"replay:{target}", "", "").space
        new = 0
        cold: dict[int, list[float]] = {}
        warm: dict[int, list[float]] = {}
        for seed in range(args.warm_seeds):
            best = replay_study(
                source, trials=args.trials, seed=seed, run_dir=tmp / f"src-{source.stem}-{seed}"
            ).best
            assert best is not None
            # The warm configuration as B's space holds it: new, or one of B's own starts?
            new += any(k not in space.initial_knobs() for k in warm_knobs(space, [best.knobs]))
            for budget in WARM_BUDGETS:
                for kind, warm_from in (("cold", []), ("warm", [best.knobs])):
                    outcome = replay_study(
                        target,
                        trials=budget,
                        seed=seed,
                        confirm=0,
                        warm_start=warm_from,
                        run_dir=tmp / f"{kind}-{target.stem}-{budget}-{seed}",
                    )
                    pick = ratio_of(table, outcome.best.knobs) if outcome.best else 0.0
                    (cold if kind == "cold" else warm).setdefault(budget, []).append(pick)
        for budget in WARM_BUDGETS:
            lines.append(
                f"| {source.stem.split('-')[0]} -> {target.stem.split('-')[0]} | {budget} | "
                f"{_spread(cold[budget])} | {_spread(warm[budget])} | {new} of {args.warm_seeds} |"
            )
        print(f"warm start {source.stem} -> {target.stem} done", flush=True)
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # SMAC's proposals depend on Python's string hashing: fix it, so that the report repeats.
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--warm-seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--table", type=Path, default=DATA / "h100-hf-tiny-llama-humaneval.json")
    parser.add_argument("--skip-parallel", action="store_true")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sections = [] if args.skip_parallel else [part1(args.table, args, tmp)]
        sections.append(part2(args, tmp))
    header = (
        "# Trials side by side on Dask\n\n"
        f"`python benchmarks/parallel_trials.py --seeds {args.seeds} --trials {args.trials} "
        f"--scale {args.scale:g}`, run {started} on this repository's 2-core CPU machine "
        f"({os.cpu_count()} cores seen). Local Dask clusters (`tuner.execution.fleet`, a "
        "`LocalCluster` of single-threaded worker processes); each trial is a replay of the "
        "recorded table that sleeps its recorded GPU-seconds times the scale on its worker.\n\n"
    )
    REPORT.write_text(header + "\n".join(sections))
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()

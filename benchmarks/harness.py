"""What the search benchmarks share: many replay studies at once, each kept in a cache as it
finishes; the imported tables, their halves and goals, and one study on one of them; and the
reach metrics (after each trial, the pick's share of the best; when it first reached a share).

    from harness import run_jobs, table_study, reach_at  # beside the scripts, run from this folder

A job is a tuple of JSON values; with a cache (JSON lines of job and result) those already there
are read back and each new one is appended as it finishes, so that a stopped run goes on.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tuner.measure.objective import THROUGHPUT, Goal, goal
from tuner.measure.trial import TrialResult
from tuner.replay.replay import load_replay
from tuner.specs.knobs import Value
from tuner.study.study import replay_study

ROOT = Path(__file__).resolve().parent.parent
#: The tables imported from elsewhere (`tools/import_external.py`), and their halves.
EXTERNAL = ROOT / "benchmarks" / "data" / "external"
SPLIT = EXTERNAL / "split.json"
SOURCES = {"martinez2024": "Martinez 2024", "aiconfigurator-silicon": "AIConfigurator silicon"}
HALVES = ("test", "tuning")
PER_GPU = "output_tokens_per_s_per_gpu"
#: The silicon tables' TPOT limit, as a share of the unconstrained best point's TPOT.
TPOT_SHARE = 0.9
#: Their TTFT limit: this quantile of the table's TTFTs (the slowest quarter breaks it).
TTFT_QUANTILE = 0.75


# -- jobs and their cache --------------------------------------------------------------------------

Job = tuple[Any, ...]


def run_jobs(
    work: Callable[[Job], Any],
    jobs: list[Job],
    workers: int,
    cache: Path | None,
    normalize: Callable[[list[Any]], Job] = tuple,
) -> dict[Job, Any]:
    """`work(job)` for every job, on `workers` processes; `normalize` turns a cached job (a
    JSON list) back into the job's tuple."""
    done: dict[Job, Any] = {}
    if cache is not None and cache.is_file():
        lines = cache.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            try:
                job, found = json.loads(line)
            except json.JSONDecodeError:
                if n < len(lines):
                    raise
                # A run stopped while writing its last line: drop it (that study runs again),
                # so that the next line is not appended to it.
                cache.write_text("".join(f"{kept}\n" for kept in lines[:-1]))
            done[normalize(job)] = found
    todo = [j for j in dict.fromkeys(jobs) if j not in done]
    print(f"{len(jobs)} studies, {len(jobs) - len(todo)} of them cached", flush=True)
    with ProcessPoolExecutor(workers) as pool:
        futures = {pool.submit(work, j): j for j in todo}
        for n, future in enumerate(as_completed(futures), 1):
            job, found = futures[future], future.result()
            done[job] = found
            if cache is not None:
                with cache.open("a") as f:
                    f.write(json.dumps([list(job), found]) + "\n")
            if n % 50 == 0:
                print(f"{n} of {len(todo)} studies", flush=True)
    return done


def fixed_hash_seed() -> None:
    """Runs the script again with PYTHONHASHSEED=0 unless it is set so: SMAC's proposals for a
    seed depend on Python's string hashing."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])


# -- the imported tables ---------------------------------------------------------------------------


def split_of() -> dict[str, str]:
    """Each imported table (its path in the repository) and its half: `tuning` or `test`
    (benchmarks/data/external/split.json, split by model)."""
    halves = json.loads(SPLIT.read_text())["sources"]
    found = {}
    for path in sorted(EXTERNAL.glob("*/*.json")):
        model = json.loads(path.read_text())["model"]
        for half, models in halves[path.parent.name].items():
            if model in models:
                found[str(path.relative_to(ROOT))] = half
    return found


def external_goal(table: Any) -> Goal:
    """Output tok/s for a table without latency (Martinez's); for one with (silicon), tok/s per
    GPU within a TPOT limit (`TPOT_SHARE` of the unconstrained best's, so that it breaks it)
    and a TTFT limit (the `TTFT_QUANTILE` of the table's), the TTFT limit left out where both
    would keep fewer than 3 points."""
    fastest = table.optimum(goal([PER_GPU]))
    itl = goal(constraints=["itl_p99_ms<=1"]).constraints[0].metric
    ttft = goal(constraints=["ttft_p99_ms<=1"]).constraints[0].metric
    fastest_tpot = itl.of(fastest.measurement)
    if fastest_tpot is None:
        return THROUGHPUT
    tpot = float(f"{TPOT_SHARE * fastest_tpot:.2g}")
    ok = [p for p in table.points if p.status == "ok" and p.measurement is not None]
    ttfts = sorted(ttft.of(p.measurement) for p in ok)
    slow = float(f"{ttfts[int(TTFT_QUANTILE * (len(ttfts) - 1))]:.2g}")
    both = goal([PER_GPU], [f"itl_p99_ms<={tpot:g}", f"ttft_p99_ms<={slow:g}"])
    if sum(both.feasible(p) is None for p in ok) >= 3:
        return both
    return goal([PER_GPU], [f"itl_p99_ms<={tpot:g}"])


def external_study(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """One study on an imported table (path relative to the repository): after each trial, the
    pick's recorded ratio to the best feasible point, the GPU-seconds and engine launches spent,
    and whether the pick keeps the limit. The tables hold one noise-free figure per point, so a
    pick that is the best point stays the pick: the study stops there and the rest is that
    figure."""
    return table_study(*job)


def table_study(
    table_path: str,
    optimizer: str,
    budget: int,
    seed: int,
    prior: Any = None,
    pibo: bool = False,
    calibrate: bool = True,
) -> dict[str, Any]:
    """`external_study` of one table, optionally started from a prior's plan
    (`tuner.measure.trial.PriorPlan`; `pibo`: that also weights the acquisition; `calibrate`:
    its starts chosen one by one from predictions corrected by the trials)."""
    path = ROOT / table_path
    table = load_replay(f"replay:{path}").table
    target = external_goal(table)
    top = target.value(table.optimum(target)) or 1.0

    def truth(knobs: dict[str, Value]) -> float:
        point = table.point(knobs)
        return (target.value(point) or 0.0) / top if target.feasible(point) is None else 0.0

    def found_best(results: Any) -> bool:
        pick = target.best(results)
        return pick is not None and truth(pick.knobs) >= 1.0

    noise_free = all(
        target.primary.spread(p.measurement) == 0 for p in table.points if p.status == "ok"
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = replay_study(
            path, trials=budget, seed=seed, run_dir=Path(tmp) / "run", optimizer=optimizer,
            confirm=0, objectives=[o.name for o in target.objectives],
            constraints=[c.text for c in target.constraints],
            until=found_best if noise_free else None, prior=prior, pibo=pibo,
            calibrate=calibrate,
        ).results  # fmt: skip
    ratios = curve(results, truth, target)
    spent = list(itertools.accumulate(r.gpu_s for r in results))
    launches = list(itertools.accumulate(int(not r.reused_model) for r in results))
    picks = [target.best(results[:n]) for n in range(1, len(results) + 1)]
    kept = [p is not None and target.feasible(table.point(p.knobs)) is None for p in picks]
    return {"ratio": ratios, "gpu_s": spent, "launches": launches, "kept": kept}


# -- reach -----------------------------------------------------------------------------------------


def curve(
    results: list[TrialResult],
    truth: Callable[[dict[str, Value]], float],
    target: Goal = THROUGHPUT,
) -> list[float]:
    """After each trial: the recorded ratio to the optimum of the configuration the study would
    pick so far (its goal's winner, noise included)."""
    out = []
    for n in range(1, len(results) + 1):
        pick = target.best(results[:n])
        out.append(truth(pick.knobs) if pick is not None else 0.0)
    return out


def reach(results: list[TrialResult], ratios: list[float], target: float) -> tuple[int, float]:
    """Trials and recorded GPU-seconds spent when the pick first reached `target`."""
    cost = 0.0
    for n, (r, ratio) in enumerate(zip(results, ratios, strict=True), 1):
        cost += r.gpu_s
        if ratio >= target:
            return n, cost
    return 0, cost


def reach_at(found: dict[str, Any], share: float) -> tuple[int, float, int] | None:
    """Trials, GPU-seconds and launches when a study's pick first reached `share` of the
    best."""
    for n, ratio in enumerate(found["ratio"]):
        if ratio >= share:
            return n + 1, found["gpu_s"][n], found.get("launches", [0] * (n + 1))[n]
    return None


def median_reach(reached: list[float | None], fmt: str) -> str:
    """The median, a study that never reached counting as never: "not reached" when half or
    more did not."""
    median = statistics.median(math.inf if r is None else r for r in reached)
    return "not reached" if math.isinf(median) else format(median, fmt)


def median_of(reached: list[float | None]) -> float:
    """The median, a study that never reached counting as infinite."""
    return statistics.median(math.inf if r is None else r for r in reached)

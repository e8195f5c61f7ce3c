"""Fit the `ladder` search's prior coefficients on the tuning half of the imported tables.

    python benchmarks/ladder_fit.py

For every table of the tuning half (benchmarks/data/external/split.json), each layout's best
figure that keeps the table's limits (`harness.external_goal`), per GPU figures made
whole again, on the log scale, is regressed on the layout's knobs as `ladder` sees them
(`Lattice.features`: log2 of a number, a flag, a choice) with one intercept per table, by ridge
regression. Tables with limits and tables without are fitted apart. Writes
tuner/optimizers/ladder_priors.json, which `ladder` reads; the test half is never read.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from harness import EXTERNAL, ROOT, external_goal, split_of

from tuner.optimizers.lattice import Lattice
from tuner.replay.replay import load_replay
from tuner.study.prepare import prepare

OUT = ROOT / "tuner" / "optimizers" / "ladder_priors.json"
#: The ridge penalty on each coefficient (the tables' intercepts are free).
PENALTY = 0.1


def layout_bests(path: Path) -> tuple[bool, list[tuple[dict[str, float], float]]]:
    """Whether the table holds limits, and each layout's features and best log figure."""
    table = load_replay(f"replay:{path}").table
    target = external_goal(table)
    per_gpu = target.primary.name.endswith("_per_gpu")
    lattice = Lattice.of(prepare(f"replay:{path}", "", "").space)
    best: dict[str, tuple[dict[str, float], float]] = {}
    for point in table.points:
        if target.feasible(point) is not None:
            continue
        layout = lattice.layout_of(point.knobs)
        merit = math.log(target.value(point) or 0.0)
        if per_gpu:
            merit += math.log(lattice.gpus(layout))
        ident = lattice.layout_key(layout)
        if ident not in best or merit > best[ident][1]:
            best[ident] = (lattice.features(layout), merit)
    return bool(target.constraints), list(best.values())


def fit(tables: list[list[tuple[dict[str, float], float]]]) -> dict[str, float]:
    """Coefficients shared by the tables, each table with an intercept of its own."""
    names = sorted({f for rows in tables for features, _ in rows for f in features})
    x, y = [], []
    for t, rows in enumerate(tables):
        for features, merit in rows:
            own = [1.0 if u == t else 0.0 for u in range(len(tables))]
            x.append([*(features.get(n, 0.0) for n in names), *own])
            y.append(merit)
    a, b = np.array(x), np.array(y)
    penalty = np.diag([PENALTY] * len(names) + [1e-9] * len(tables))
    coef = np.linalg.solve(a.T @ a + penalty, a.T @ b)
    return {n: round(float(c), 4) for n, c in zip(names, coef, strict=False)}


def main() -> int:
    split = split_of()
    grouped: dict[str, list[Any]] = {"limits": [], "none": []}
    used = []
    for path in sorted(EXTERNAL.glob("*/*.json")):
        if split.get(str(path.relative_to(ROOT))) != "tuning":
            continue
        limited, rows = layout_bests(path)
        grouped["limits" if limited else "none"].append(rows)
        used.append(path.stem)
    priors = {kind: fit(tables) for kind, tables in grouped.items() if tables}
    OUT.write_text(
        json.dumps(
            {
                "about": (
                    "Prior coefficients of the ladder search's layout model: a knob's log2 (or "
                    "flag) on the log of a layout's best figure (per GPU figures made whole), "
                    "for studies with limits and without. Fitted by benchmarks/ladder_fit.py "
                    "on the tuning half of the imported tables "
                    "(benchmarks/data/external/split.json); the test half was not read."
                ),
                "penalty": PENALTY,
                "tables": used,
                **priors,
            },
            indent=1,
        )
        + "\n"
    )
    print(json.dumps(priors))
    print(f"wrote {OUT.relative_to(ROOT)} from {len(used)} tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())

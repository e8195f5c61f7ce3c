"""The plots of a study's report, drawn with matplotlib into PNG files.

Each function takes finished trials and a path, draws one figure, and returns the path, or None
with nothing written when the trials hold nothing to plot (no energy figures on a CPU, say).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.hardware.telemetry import SERIES_POINTS
from tuner.measure.objective import THROUGHPUT, Goal, Metric
from tuner.measure.trial import TrialResult

OK, FAILED, BEST, FRONT = "#1f77b4", "#d62728", "#ff7f0e", "#2ca02c"
INFEASIBLE = "#9467bd"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def best_so_far(results: Sequence[TrialResult], path: Path, goal: Goal = THROUGHPUT) -> Path | None:
    """The best feasible figure of the goal so far against trial number and against
    GPU-seconds spent; infeasible trials drawn apart, failed ones at zero."""
    if not any(goal.value(r) for r in results):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    spent, best, seconds, curve = 0.0, None, [], []
    pick = max if goal.maximize else min
    for r in results:
        spent += r.wall_s
        score = goal.score(r)
        if score is not None:
            best = score if best is None else pick(best, score)
        seconds.append(spent)
        curve.append(best)
    numbers = [r.number for r in results]
    for ax, xs, label in ((axes[0], numbers, "trial"), (axes[1], seconds, "GPU-seconds spent")):
        drawn = [(x, c) for x, c in zip(xs, curve, strict=True) if c is not None]
        ax.step([x for x, _ in drawn], [c for _, c in drawn], where="post", color=BEST,
                label="best so far")  # fmt: skip
        kinds: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in "oif"}
        for x, r in zip(xs, results, strict=True):
            value = goal.value(r)
            kind = "f" if value is None else "o" if goal.feasible(r) is None else "i"
            kinds[kind][0].append(x)
            kinds[kind][1].append(value or 0.0)
        ax.scatter(*kinds["o"], s=18, color=OK, label="trial")
        if kinds["i"][0]:
            ax.scatter(*kinds["i"], s=24, marker="x", color=INFEASIBLE, label="infeasible")
        if kinds["f"][0]:
            ax.scatter(*kinds["f"], marker="x", color=FAILED, label="failed")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{goal.label} (median)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    axes[1].set_title("trial wall time, loads included", fontsize=9)
    return _save(fig, path)


def _is_numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def per_knob(
    results: Sequence[TrialResult],
    path: Path,
    best: TrialResult | None,
    goal: Goal = THROUGHPUT,
) -> Path | None:
    """The goal's first figure against each knob: a scatter for numbers, a strip per value
    otherwise; `best` (the study's winner) marked, infeasible trials apart."""
    names: list[str] = []
    for r in results:
        names += [n for n in r.knobs if n not in names]
    if not names or not any(goal.value(r) for r in results):
        return None
    plt = _pyplot()
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    jitter = random.Random(0)
    for ax, name in zip(axes.flat, names, strict=False):
        points = [(r.knobs[name], r) for r in results if name in r.knobs]
        values = [v for v, _ in points]
        if _is_numeric(values):
            xs = [float(v) for v in values]
            if min(xs) > 0 and max(xs) / min(xs) >= 8:
                ax.set_xscale("log")
        else:
            labels = sorted({str(v).lower() for v in values})
            xs = [labels.index(str(v).lower()) + jitter.uniform(-0.15, 0.15) for v in values]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        if _is_numeric(values) and len(set(values)) <= 4 and ax.get_xscale() == "linear":
            ax.set_xticks(sorted(set(xs)))
        kinds: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in "obif"}
        for x, (_, r) in zip(xs, points, strict=True):
            value = goal.value(r)
            kind = "f" if value is None else "b" if r is best else "o"
            if kind == "o" and goal.feasible(r) is not None:
                kind = "i"
            kinds[kind][0].append(x)
            kinds[kind][1].append(value or 0.0)
        ax.scatter(*kinds["o"], s=22, color=OK)
        ax.scatter(*kinds["b"], s=22, color=BEST)
        if kinds["i"][0]:
            ax.scatter(*kinds["i"], s=26, marker="x", color=INFEASIBLE)
        if kinds["f"][0]:
            ax.scatter(*kinds["f"], marker="x", color=FAILED)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(goal.label)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (tok/s, J/token) points no other point beats on both (faster and no more energy, or
    as fast with less), sorted by tok/s."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)]
    return sorted(set(front))


def speed_energy(results: Sequence[TrialResult], path: Path) -> Path | None:
    """Output tok/s against joules per output token, with the Pareto front."""
    points = [
        (r.output_tokens_per_s, r.measurement.energy.joules_per_output_token.median)
        for r in results
        if r.measurement and r.measurement.energy and r.output_tokens_per_s
    ]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter([p[1] for p in points], [p[0] for p in points], s=22, color=OK, label="trial")
    front = pareto_front(points)
    ax.plot([p[1] for p in front], [p[0] for p in front], "o-", color=FRONT, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("joules per output token (lower is better)")
    ax.set_ylabel("output tok/s (higher is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def _windows(result: TrialResult) -> list[tuple[str, Any]]:
    m = result.measurement
    if m is None:
        return []
    runs = [("warm-up", m.cold)] + [(f"run {i}", r) for i, r in enumerate(m.runs, 1)]
    return [(label, run.telemetry) for label, run in runs if run.telemetry is not None]


def power_memory(result: TrialResult, path: Path) -> tuple[Path | None, str]:
    """Power and GPU memory over the warm-up and timed runs of one trial, back to back.

    Uses the sampled series where the trial has them; an older trial (no series kept) is drawn
    from each window's average power and peak memory instead, and the caption says so."""
    windows = _windows(result)
    if not windows:
        return None, "no GPU telemetry for this trial"
    sampled = all(t.series is not None for _, t in windows)
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    offset = 0.0
    for label, t in windows:
        if sampled:
            xs = [offset + x for x in t.series.t_s]
            top.plot(xs, t.series.power_w, color=BEST, lw=1)
            bottom.plot(xs, t.series.memory_mib, color=OK, lw=1)
        else:
            xs = [offset, offset + t.window_s]
            top.plot(xs, [t.avg_power_w] * 2, color=BEST, lw=2)
            if t.peak_power_w is not None:
                top.plot(xs, [t.peak_power_w] * 2, color=BEST, lw=1, ls=":")
            bottom.plot(xs, [t.peak_memory_mib] * 2, color=OK, lw=2)
        top.axvline(offset, color="grey", lw=0.5)
        top.text(offset, 1.01, label, transform=top.get_xaxis_transform(), fontsize=7)
        offset += t.window_s
    top.set_ylabel("power W")
    bottom.set_ylabel("GPU memory MiB")
    bottom.set_xlabel("seconds of measurement (windows back to back)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    how = (
        f"sampled power and memory, at most {SERIES_POINTS} points a window"
        if sampled
        else "per window: average power (solid), sampled peak (dotted), peak memory; this "
        "study's tuner kept no time series"
    )
    return _save(fig, path), how


def _split(
    results: Sequence[TrialResult], goal: Goal, x: Metric, y: Metric
) -> dict[str, tuple[list[float], list[float]]]:
    """(x, y) of every measured trial: feasible, infeasible (measured but outside a limit or
    with failed requests)."""
    kinds: dict[str, tuple[list[float], list[float]]] = {"ok": ([], []), "out": ([], [])}
    for r in results:
        if r.status != "ok" or r.measurement is None:
            continue
        xv, yv = x.of(r.measurement), y.of(r.measurement)
        if xv is None or yv is None:
            continue
        kind = "ok" if goal.feasible(r) is None else "out"
        kinds[kind][0].append(xv)
        kinds[kind][1].append(yv)
    return kinds


def _scatter(ax: Any, kinds: dict[str, tuple[list[float], list[float]]]) -> None:
    ax.scatter(*kinds["ok"], s=22, color=OK, label="feasible")
    if kinds["out"][0]:
        ax.scatter(*kinds["out"], s=26, marker="x", color=INFEASIBLE, label="infeasible")


def limits(
    results: Sequence[TrialResult], goal: Goal, best: TrialResult | None, path: Path
) -> Path | None:
    """The goal's first objective against each limited figure (a latency percentile, power,
    memory), feasible and infeasible trials apart, the limit drawn as a line."""
    if not goal.constraints:
        return None
    plt = _pyplot()
    n = len(goal.constraints)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    drawn = False
    for ax, c in zip(axes[0], goal.constraints, strict=True):
        kinds = _split(results, goal, c.metric, goal.primary)
        drawn = drawn or bool(kinds["ok"][0] or kinds["out"][0])
        _scatter(ax, kinds)
        if best is not None and best.measurement is not None:
            bx, by = c.metric.of(best.measurement), goal.value(best)
            if bx is not None and by is not None:
                ax.scatter([bx], [by], s=60, color=BEST, label="chosen", zorder=3)
        ax.axvline(c.limit, color=FAILED, ls="--", lw=1, label=f"limit {c.text}")
        ax.set_xlabel(f"{c.metric.label} ({c.metric.unit})")
        ax.set_ylabel(goal.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if not drawn:
        _pyplot().close(fig)
        return None
    return _save(fig, path)


def front(results: Sequence[TrialResult], goal: Goal, path: Path) -> Path | None:
    """The first two objectives of a several-objective study, and the Pareto front it
    optimized (`Goal.front`: over feasible trials, the one the profile keeps)."""
    if not goal.multi:
        return None
    a, b = goal.objectives[:2]
    kinds = _split(results, goal, b, a)
    if not kinds["ok"][0]:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    _scatter(ax, kinds)
    points = sorted((b.of(r.measurement), a.of(r.measurement)) for r in goal.front(results))
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=FRONT, label="Pareto front")
    ax.set_xlabel(f"{b.label} ({'higher' if b.maximize else 'lower'} is better)")
    ax.set_ylabel(f"{a.label} ({'higher' if a.maximize else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def predicted_measured(results: Sequence[TrialResult], goal: Goal, path: Path) -> Path | None:
    """Each measured trial's figures against what the prior predicted for it, one panel per
    figure of the goal (objectives, then limited figures), the line of perfect prediction
    drawn; None where no trial has both."""
    metrics = list(dict.fromkeys([*goal.objectives, *(c.metric for c in goal.constraints)]))
    pairs = {
        m: [
            (p, v)
            for r in results
            if r.prediction is not None
            and (p := m.of(r.prediction.measurement)) is not None
            and (v := m.of(r.measurement)) is not None
        ]
        for m in metrics
    }
    pairs = {m: xy for m, xy in pairs.items() if xy}
    if not pairs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.5), squeeze=False)
    for ax, (metric, xy) in zip(axes[0], pairs.items(), strict=True):
        ax.scatter([p for p, _ in xy], [v for _, v in xy], s=24, color=OK, label="trial")
        top = max(max(p, v) for p, v in xy) * 1.05
        ax.plot([0, top], [0, top], ls="--", lw=1, color=FAILED, label="measured = predicted")
        ax.set_xlabel(f"predicted {metric.label} ({metric.unit})")
        ax.set_ylabel(f"measured {metric.label} ({metric.unit})")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)

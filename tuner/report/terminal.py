"""What tuner draws on a terminal with rich: live progress of studies (`StudyView`, an `Observer`
for `tuner.entrypoints.run_studies` and `Bench.run`) and the tables of trials, profiles, machines
and plans. The command line prints them; a script or a notebook may too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuner.fmt import fmt_engine_metrics, fmt_knobs, fmt_rate, fmt_value
from tuner.hardware.machine import Hardware
from tuner.measure.measurement import Measurement
from tuner.measure.objective import Goal
from tuner.measure.trial import TrialResult, of_speed_of_light
from tuner.profiles.profile import Profile, TrafficRecord
from tuner.profiles.store import Row
from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace

STATUS_STYLE = {"ok": "green", "oom": "yellow", "crashed": "red", "timeout": "magenta"}


def study_progress(console: Console) -> Progress:
    """The live area of `StudyView`s: one row per study, one per trial in flight."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[title]}"),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )


class StudyView:
    """Live progress of a study (an `Observer`): trials done of N and the best so far, then a
    row for each trial in flight (where it runs, elapsed, its stage and knobs). Studies run
    side by side share one `progress`, each view with its `label`."""

    def __init__(
        self,
        console: Console,
        total: int | None,
        done: int = 0,
        *,
        label: str = "",
        progress: Progress | None = None,
    ) -> None:
        self.console = console
        self.owned = progress is None
        self.progress = progress or study_progress(console)
        self.label = f"{label} " if label else ""
        self.total_text = total or "?"
        self.done = done
        self.task = self.progress.add_task(
            "best -",
            total=total,
            completed=done,
            title=f"{self.label}trials".strip(),
            count=f"{done}/{self.total_text}",
        )
        self.rows: dict[int, Any] = {}
        self.knobs: dict[int, str] = {}
        self.where: dict[int, str] = {}

    def __enter__(self) -> StudyView:
        if self.owned:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.owned:
            self.progress.stop()

    def _row(self, number: int, stage: str) -> None:
        where = self.where.get(number)
        text = " · ".join(x for x in (where, stage, self.knobs.get(number)) if x)
        self.progress.update(self.rows[number], description=escape(text))

    def trial_started(self, number: int, origin: str, knobs: dict[str, Value]) -> None:
        self.knobs[number] = fmt_knobs(knobs)
        self.rows[number] = self.progress.add_task(
            "", total=None, title=f"  {self.label}#{number}", count=origin
        )
        self._row(number, "starting")

    def trial_running(self, number: int, where: str) -> None:
        if number in self.rows:
            self.where[number] = where
            self.progress.reset(self.rows[number], total=None)  # elapsed from its start there
            self._row(number, "starting")

    def trial_progress(self, number: int, text: str) -> None:
        if number in self.rows:
            self._row(number, text)

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None:
        row = self.rows.pop(result.number, None)
        if row is not None:
            self.progress.remove_task(row)
        self.knobs.pop(result.number, None)
        where = self.where.pop(result.number, None)
        style = STATUS_STYLE[result.status]
        figure = (
            f"{fmt_rate(result.output_tokens_per_s)} tok/s"
            if result.measurement
            else escape(result.reason or "")
        )
        place = f", {escape(where.removeprefix('on '))}" if where else ""
        self.console.print(
            f"{escape(self.label)}#{result.number:<3} [{style}]{result.status:<7}[/] "
            f"{figure:>14}  {fmt_knobs(result.knobs)}  "
            f"[dim]({result.origin}, {result.wall_s:.1f} s{place})[/]",
            highlight=False,
        )
        self.progress.advance(self.task)
        self.done += 1
        best_text = (
            f"best {fmt_rate(best.output_tokens_per_s)} tok/s (#{best.number})"
            if best
            else "best -"
        )
        self.progress.update(
            self.task, description=best_text, count=f"{self.done}/{self.total_text}"
        )


#: Below this many columns the trials table leaves out the cold run and the load time.
WIDE = 120


def trials_table(
    results: Sequence[TrialResult],
    best: TrialResult | None,
    width: int = WIDE,
    goal: Goal | None = None,
) -> Table:
    """One row per trial: status, median tok/s with its spread, and its knobs in one column that
    wraps (`name=value ...`), so that the table stays readable at 80 columns (CI logs). On a
    terminal of `WIDE` columns or more it also shows the trial's origin, the cold run and the
    model load. With a `goal` other than output tok/s, a column per objective, and under the
    knobs why a measured trial is infeasible."""
    extra = [o for o in goal.objectives if o.name != "output_tokens_per_s"] if goal else []
    wide = width >= WIDE
    table = Table(title="trials (* best)", title_justify="left", width=width if not wide else None)
    energy = any(r.measurement and r.measurement.energy for r in results)
    columns = ["#", "origin", "status"] if wide else ["#", "status"]
    columns += ["out tok/s", "cv", "cold tok/s", "load s"] if wide else ["out tok/s", "cv"]
    columns += ["J/tok"] if energy else []
    predicted = any(r.prediction is not None for r in results)
    bound = any(r.prediction and r.prediction.speed_of_light_tokens_per_s for r in results)
    columns += (["predicted"] if predicted else []) + (["of SOL"] if bound else [])
    columns += [o.name for o in extra if o.name != "joules_per_token" or not energy]
    for col in columns:
        table.add_column(
            col, justify="left" if col in ("origin", "status") else "right", no_wrap=True
        )
    # As wide as the longest name=value, so that a wrapped row never breaks one apart.
    longest = max((len(w) for r in results for w in fmt_knobs(r.knobs).split()), default=0)
    table.add_column("knobs", overflow="fold", ratio=1, min_width=min(longest, 48))
    for r in results:
        m = r.measurement
        mark = "*" if best is not None and r.number == best.number else ""
        figures = [fmt_rate(r.output_tokens_per_s), f"{m.output_tokens_per_s.cv:.1%}" if m else "-"]
        if wide:
            figures.append(fmt_rate(m.cold.output_tokens_per_s) if m else "-")
            figures.append(
                "reused" if r.reused_model else (f"{r.load_s:.1f}" if r.load_s is not None else "-")
            )
        if energy:
            e = m.energy if m else None
            figures.append(f"{e.joules_per_output_token.median:.3g}" if e else "-")
        figures += _prediction_cells(r, predicted, bound)
        for o in extra:
            if o.name != "joules_per_token" or not energy:
                value = o.of(m)
                figures.append(f"{value:,.4g}" if value is not None else "-")
        knobs = escape(fmt_knobs(r.knobs))
        if m is not None and m.request_rate:
            knobs += f" [dim]at {m.request_rate:.2f} req/s[/]"
        if m is not None and m.engine_metrics:
            knobs += f"\n[dim]server: {escape(fmt_engine_metrics(m.engine_metrics))}[/]"
        why = goal.feasible(r, robust=True) if goal is not None and m is not None else None
        if not m and r.reason:
            knobs += f"\n[dim]{escape(r.reason)}[/]"
        elif why:
            knobs += f"\n[yellow]infeasible: {escape(why)}[/]"
        first = [f"{r.number}{mark}", r.origin] if wide else [f"{r.number}{mark}"]
        table.add_row(*first, f"[{STATUS_STYLE[r.status]}]{r.status}[/]", *figures, knobs)
    return table


def _prediction_cells(result: TrialResult, predicted: bool, bound: bool) -> list[str]:
    """The prior's predicted output tok/s (`oom` where it predicted no fit) and the measured
    tok/s as a share of the speed-of-light bound."""
    p = result.prediction
    cells = []
    if predicted:
        cells.append(
            "-" if p is None else "oom" if p.status == "oom" else fmt_rate(p.output_tokens_per_s)
        )
    if bound:
        share = result.of_speed_of_light
        cells.append(f"{share:.0%}" if share is not None else "-")
    return cells


def measurement_table(result: TrialResult) -> Table:
    """The figures of one measured configuration (for `tuner bench`)."""
    table = Table(show_header=False, title=fmt_knobs(result.knobs), title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("status", f"[{STATUS_STYLE[result.status]}]{result.status}[/]")
    if result.reason:
        table.add_row("reason", escape(result.reason))
    if result.load_s is not None:
        table.add_row("load", f"{result.load_s:.2f} s")
    m = result.measurement
    if m is not None:
        s = m.output_tokens_per_s
        table.add_row("output tok/s (median)", fmt_rate(s.median))
        table.add_row("output tok/s (min..max)", f"{s.min:,.1f} .. {s.max:,.1f}")
        table.add_row("coefficient of variation", f"{s.cv:.1%}")
        table.add_row("total tok/s (median)", fmt_rate(m.total_tokens_per_s.median))
        table.add_row("cold run output tok/s", fmt_rate(m.cold.output_tokens_per_s))
        table.add_row("runs", " ".join(f"{r.elapsed_s:.2f}s" for r in m.runs))
        done = m.runs[-1]
        table.add_row("per run", f"{done.requests} requests, {done.output_tokens:,} tokens out")
        if m.failed_requests:
            table.add_row(
                "failed requests",
                f"[red]{m.failed_requests}[/] over the timed runs: {escape('; '.join(m.failures))}",
            )
        if m.truncated:
            table.add_row("note", "runs hit the time limit; scored from completed work")
        if m.remeasured:
            table.add_row("re-measured", f"{m.remeasured} more set(s) of repeats")
        for label, value in energy_rows(m):
            table.add_row(label, value)
    table.add_row("wall", f"{result.wall_s:.1f} s")
    return table


def energy_rows(m: Measurement) -> list[tuple[str, str]]:
    """Energy, power, memory and throttling of a measurement, as table rows."""
    e = m.energy
    if e is None:
        return [("energy", f"[dim]{escape(m.energy_note or 'not measured')}[/]")]
    peak_w = f"{e.peak_power_w:,.0f} W" if e.peak_power_w is not None else "-"
    memory = f"{e.peak_memory_mib:,.0f} MiB" if e.peak_memory_mib is not None else "-"
    return [
        ("J / output token", f"{e.joules_per_output_token.median:.4g} ({e.energy_source})"),
        ("output tok/s per W", f"{e.output_tokens_per_s_per_w.median:,.2f}"),
        ("power avg / peak", f"{e.avg_power_w.median:,.0f} W / {peak_w}"),
        ("peak GPU memory", memory),
        ("throttled", "[red]yes[/]" if m.throttled else "no"),
    ]


def traffic_text(t: TrafficRecord) -> str:
    """`prompts 512 / 576 / 640 tokens (p10 / p50 / p90), ...`: a traffic shape on one line."""
    arrivals: str = t.arrivals.kind
    if t.arrivals.rate_per_s:
        arrivals += f", {t.arrivals.rate_per_s:g} req/s"
    if t.arrivals.gap_cv is not None and t.arrivals.kind == "trace":
        arrivals += f", gaps cv {t.arrivals.gap_cv:g}"
    i, o = t.input_tokens, t.output_tokens
    return (
        f"prompts {i.p10:,} / {i.p50:,} / {i.p90:,} tokens, outputs {o.p10:,} / {o.p50:,} / "
        f"{o.p90:,} (p10 / p50 / p90); {t.shared_prefix_share:.0%} of prompt tokens in shared "
        f"prefixes; arrivals {arrivals}"
    )


def profile_table(profile: Profile) -> Table:
    """A profile's identity, best knobs and figures."""
    table = Table(show_header=False, title=profile.key, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    gpu = profile.gpu
    table.add_row("gpu", gpu.name + (f" x{gpu.count}" if gpu.count > 1 else ""))
    if gpu.driver_version:
        table.add_row("driver / cuda", f"{gpu.driver_version} / {gpu.cuda_version}")
    table.add_row(
        "engine",
        f"{profile.engine.name} "
        + " ".join(f"{k} {v}" for k, v in profile.engine.versions.items()),
    )
    table.add_row("model", f"{profile.model.ref} ({profile.model.source})")
    w = profile.workload
    shape = f"{w.requests} requests, {w.mean_input_tokens:g} in / {w.mean_output_tokens:g} out"
    table.add_row("workload", f"{w.name}: {shape}")
    if w.traffic is not None:
        table.add_row("traffic", escape(traffic_text(w.traffic)))
    goal = ", ".join(profile.objectives)
    if profile.constraints:
        goal += " within " + ", ".join(profile.constraints)
    table.add_row("tuned for", goal + (f" (replay of {profile.replay})" if profile.replay else ""))
    table.add_row("best knobs", fmt_knobs(profile.best.knobs))
    objectives = profile.goal().objectives
    for i, point in enumerate(profile.front):
        figures = ", ".join(
            f"{o.name} {figure:,.4g}"
            for o in objectives
            if (figure := o.of(point.measurement)) is not None
        )
        table.add_row(f"front [{i}]", f"{figures}  ({fmt_knobs(point.knobs)})")
    if profile.best.measurement:
        s = profile.best.measurement.output_tokens_per_s
        table.add_row("best output tok/s", f"{s.median:,.1f} (cv {s.cv:.1%})")
        for label, value in energy_rows(profile.best.measurement):
            table.add_row(f"best {label}", value)
    base = profile.baseline
    if base is not None:
        shown = (
            f"{base.measurement.output_tokens_per_s.median:,.1f}"
            if base.measurement
            else f"{base.status}: {escape(str(base.reason))}"
        )
        table.add_row("baseline", f"{shown}  ({fmt_knobs(base.knobs)})")
    if profile.speedup is not None:
        table.add_row("speed-up", f"{profile.speedup:.2f}x")
    for label, value in prior_rows(profile):
        table.add_row(label, value)
    counts = ", ".join(f"{n} {s}" for s, n in profile.trials.by_status.items() if n)
    table.add_row("trials", f"{profile.trials.total} ({counts}), {profile.trials.wall_s:.0f} s")
    table.add_row(
        "search",
        f"{profile.optimizer}, seed {profile.seed}; tuner {profile.tuner_version}, "
        f"{profile.created_at:%Y-%m-%d %H:%M} UTC",
    )
    return table


def prior_rows(profile: Profile) -> list[tuple[str, str]]:
    """The prior a profile's study started from, its error, and the best's share of its
    speed-of-light bound."""
    rows = []
    if profile.prior is not None:
        errors = ", ".join(f"{k} {v:.1f}%" for k, v in profile.prior.error_pct.items())
        rows.append(("prior", f"{profile.prior.by}; {profile.prior.starts} starts"))
        rows.append(("prior error", (errors or "no measured trial to judge it") + " (median abs.)"))
    share = of_speed_of_light(profile.best.measurement, profile.best.prediction)
    if share is not None:
        rows.append(("of speed of light", f"{share:.0%} of the bound's output tok/s"))
    return rows


def profiles_table(rows: Sequence[tuple[str, Profile | str]]) -> Table:
    table = Table()
    for col in ("gpu", "engine", "model", "workload", "best tok/s", "speed-up", "date", "path"):
        table.add_column(col, justify="right" if col in ("best tok/s", "speed-up") else "left")
    for path, p in rows:
        if isinstance(p, str):
            table.add_row(
                "[red]unreadable[/]", "", "", "", "", "", "", f"{path}\n[dim]{escape(p)}[/]"
            )
            continue
        m = p.best.measurement
        table.add_row(
            p.gpu.slug,
            p.engine.name,
            p.model.slug,
            p.workload.name,
            fmt_rate(m.output_tokens_per_s.median if m else None),
            f"{p.speedup:.2f}x" if p.speedup else "-",
            f"{p.created_at:%Y-%m-%d}",
            path,
        )
    return table


def hardware_table(hw: Hardware) -> Table:
    table = Table(title="this machine", title_justify="left")
    for col in ("#", "device", "memory", "compute", "power limit", "uuid"):
        table.add_column(col)
    for g in hw.gpus:
        table.add_row(
            str(g.index),
            g.name,
            f"{g.memory_mib:,} MiB",
            g.compute_capability,
            f"{g.power_limit_w:.0f} W" if g.power_limit_w else "-",
            g.uuid,
        )
    table.add_row("cpu", hw.cpu_model, f"{hw.memory_mib:,} MiB", f"{hw.cpu_cores} cores", "-", "")
    caption = f"profile folder: {hw.slug}"
    if hw.gpus:
        caption += f" · driver {hw.driver_version} · CUDA {hw.cuda_version}"
    else:
        caption += f" · no GPU: {escape(str(hw.no_gpu_reason))}"
    table.caption = caption
    return table


def knobs_table(space: SearchSpace) -> Table:
    table = Table(title=f"{space.engine}: {space.catalogue.summary}", title_justify="left")
    for col in ("knob", "stage", "values here", "default", "applies when / why not", "about"):
        table.add_column(col)
    for name, spec in space.catalogue.knobs.items():
        if name in space.knobs:
            k = space.knobs[name]
            when = " and ".join(f"{p}={'|'.join(map(str, a))}" for p, a in k.when)
            default = "engine picks" if k.engine_default else fmt_value(k.default)
            table.add_row(name, k.stage, k.describe_values(), default, when, k.help)
        elif name in space.fixed:
            table.add_row(name, spec.stage, f"{space.fixed[name]} (fixed)", "", "", spec.help)
        else:
            table.add_row(
                f"[dim]{name}[/]",
                spec.stage,
                "[dim]-[/]",
                "",
                f"[dim]{space.dropped[name]}[/]",
                spec.help,
            )
    for rule in space.rules:
        table.add_row(
            "[dim]forbidden[/]",
            "",
            " and ".join(
                [f"{n}={'|'.join(map(fmt_value, a))}" for n, a in rule.values]
                + ([rule.text] if rule.expr is not None else [])
            ),
            "",
            rule.because,
            "",
        )
    return table


def diff_table(rows: Sequence[Row], a: str, b: str) -> Table:
    """Two profiles side by side; differences in bold, figures with B / A."""
    table = Table(title=f"A {a}\nB {b}", title_justify="left")
    for col in ("", "", "A", "B", "B / A"):
        table.add_column(col, justify="right" if col in ("A", "B", "B / A") else "left")
    section = ""
    for r in rows:
        style = "bold" if r.differs else "dim"
        table.add_row(
            r.section if r.section != section else "",
            r.name,
            f"[{style}]{escape(r.a)}[/]",
            f"[{style}]{escape(r.b)}[/]",
            f"{r.ratio:.3f}" if r.ratio is not None else "",
        )
        section = r.section
    return table


def plan_table(ranked: Sequence[TrialResult], goal: Goal, gpus: int, top: int) -> Table:
    """A plan's predictions, best first: output tok/s in all and per GPU, TTFT and time per
    output token, the goal's other figures, and the GPUs each configuration uses (of `gpus`:
    the rest can hold more copies of it)."""
    table = Table(
        title=f"predicted (not measured), best first; {gpus} GPU" + ("s" if gpus > 1 else ""),
        title_justify="left",
    )
    shown = ("output_tokens_per_s", "output_tokens_per_s_per_gpu")
    extra = [o for o in goal.objectives if o.name not in shown]
    for col in ["#", "tok/s", "tok/s/GPU", "TTFT ms", "TPOT ms", *(o.name for o in extra), "GPUs"]:
        table.add_column(col, justify="right", no_wrap=True)
    longest = max((len(w) for r in ranked[:top] for w in fmt_knobs(r.knobs).split()), default=0)
    table.add_column("knobs", overflow="fold", ratio=1, min_width=min(longest, 40))
    for i, r in enumerate(ranked[:top], 1):
        m = r.measurement
        latency = m.latency if m is not None else None
        cells = [fmt_rate(r.output_tokens_per_s)]
        cells.append(fmt_rate(m.cold.output_tokens_per_s_per_gpu) if m else "-")
        cells.append(f"{latency.ttft.p99_ms:,.1f}" if latency and latency.ttft else "-")
        cells.append(f"{latency.itl.p99_ms:,.2f}" if latency and latency.itl else "-")
        cells += [f"{v:,.4g}" if (v := o.of(m)) is not None else "-" for o in extra]
        cells.append(str(r.gpus))
        why = goal.feasible(r)
        knobs = escape(fmt_knobs(r.knobs)) + (f"\n[yellow]{escape(why)}[/]" if why else "")
        table.add_row(str(i), *cells, knobs)
    return table

"""A study's report: `report.md` and a self-contained `report.html` (plots inlined as PNG).

Read from a run directory alone (`study.json`, `trials.jsonl`, and `machine.json` where the
study recorded its machine), so a report can be made again anywhere, without the model.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from tuner.errors import TunerError
from tuner.files import read_text
from tuner.fmt import fmt_engine_metrics, fmt_knobs, fmt_rate
from tuner.hardware.records import Machine
from tuner.measure.objective import Goal, prediction_error, winner
from tuner.measure.trial import TrialResult
from tuner.profiles.profile import PRIOR_FIGURES
from tuner.report import plots
from tuner.specs.knobs import describe
from tuner.study.rundir import MACHINE_FILE, TRIALS_FILE, StudySpec, read_spec, read_trials
from tuner.version import __version__


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path
    caption: str


@dataclass
class Doc:
    """A report as blocks (a heading or paragraph as `("h"|"p", text)`, a table, an image),
    written out both as Markdown and as HTML."""

    blocks: list[tuple[str, str] | Table | Image] = field(default_factory=list)

    def h(self, text: str) -> None:
        self.blocks.append(("h", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(Table(list(header), [list(r) for r in rows]))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(Image(path, caption))

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", ""]
        for block in self.blocks:
            if isinstance(block, Table):
                header = block.header
                lines.append("| " + " | ".join(header) + " |")
                lines.append("| " + " | ".join("---" for _ in header) + " |")
                lines += [
                    "| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in block.rows
                ]
                lines.append("")
            elif isinstance(block, Image):
                path, caption = block.path, block.caption
                lines += [f"![{caption}]({path.name})", "", f"*{caption}*", ""]
            else:
                kind, text = block
                lines += [f"## {text}" if kind == "h" else text, ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
        ]
        for block in self.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in block.rows
                )
                parts.append(f"<table><tr>{head}</tr>{body}</table>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.path.read_bytes()).decode()
                caption = html.escape(block.caption)
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' "
                    f"alt='{caption}'><figcaption>{caption}</figcaption></figure>"
                )
            else:
                kind, text = block
                tag = "h2" if kind == "h" else "p"
                parts.append(f"<{tag}>{html.escape(text)}</{tag}>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;"
    "text-align:right}th{background:#f3f3f3}img{max-width:100%}figcaption{font-size:12px;"
    "color:#555}"
)


@dataclass(frozen=True)
class Written:
    """Where a report went."""

    markdown: Path
    html: Path
    images: list[Path]

    def as_json(self) -> dict[str, object]:
        return {
            "markdown": str(self.markdown),
            "html": str(self.html),
            "images": [str(p) for p in self.images],
        }


def read_run(run_dir: Path) -> tuple[StudySpec, list[TrialResult], Machine | None]:
    """A run directory's study, trials and machine; one line when it is not a run directory."""
    spec = read_spec(run_dir)
    results = read_trials(run_dir / TRIALS_FILE)
    if not results:
        raise TunerError(f"{run_dir} holds no finished trial yet")
    machine = None
    if (run_dir / MACHINE_FILE).is_file():
        try:
            machine = Machine.model_validate_json(
                read_text(run_dir / MACHINE_FILE, "machine record")
            )
        except ValidationError as exc:
            raise TunerError(f"{run_dir / MACHINE_FILE}: {describe(exc)}") from None
    return spec, results, machine


def build(run_dir: Path, out_dir: Path) -> tuple[Doc, str, list[Path]]:
    """The report's blocks and title, with its plots drawn into `out_dir`."""
    spec, results, machine = read_run(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    goal = spec.goal()
    best = winner(goal, results)
    gpu = machine.gpu.name if machine else "machine not recorded"
    title = f"{spec.engine} · {spec.model} · {spec.workload.name} on {gpu}"
    doc = Doc()
    for text in _overview(run_dir, spec, results, machine, goal):
        doc.p(text)
    if best is None and any(r.status == "ok" for r in results):
        doc.p("No configuration kept every limit: there is no best configuration.")
    if best is not None:
        doc.h("Best configuration")
        baseline = next((r for r in results if r.origin == "baseline"), None)
        doc.table(["", ""], _best_rows(best, baseline, goal))
    if spec.prior is not None:
        doc.p(_prior_paragraph(spec, results, goal))
    doc.h("Plots")
    figures = _Figures(doc, out_dir)
    _search_plots(figures, results, goal, best)
    _goal_plots(figures, spec, results, goal, best)
    doc.h("Trials")
    doc.table(*_trials_table(results, goal, best))
    doc.p(f"Made by tuner {__version__} on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.")
    return doc, title, figures.images


def _overview(
    run_dir: Path,
    spec: StudySpec,
    results: list[TrialResult],
    machine: Machine | None,
    goal: Goal,
) -> list[str]:
    """The report's opening paragraphs: the study, the machine, the versions, the goal."""
    counts = Counter(r.status for r in results)
    gpu_s = sum(r.wall_s for r in results)
    w = spec.workload
    said = [
        f"Run directory {run_dir.name}: {len(results)} trials "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}), {gpu_s:,.0f} s of trials with "
        f"loads; optimizer {spec.optimizer}, seed {spec.seed}. Workload {w.name}"
        + (f", {w.requests} requests" if w.requests else ", all its requests")
        + (f" x {w.output_tokens} tokens out" if w.output_tokens else "")
        + f". Each trial: a warm-up, then {spec.protocol.repeats} timed runs (more while they "
        f"spread over {spec.protocol.max_cv:.0%}); figures are medians."
    ]
    if machine is not None:
        g, h = machine.gpu, machine.host
        said.append(
            f"Machine: {g.name}"
            + (f" x{g.count}, driver {g.driver_version}, CUDA {g.cuda_version}" if g.count else "")
            + f"; {h.cpu}, {h.cores} cores."
        )
    versions = next((r.versions for r in reversed(results) if r.versions), {})
    if versions:
        said.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    if goal.constraints or goal.primary.name != "output_tokens_per_s" or goal.multi:
        limits = ", ".join(c.text for c in goal.constraints)
        said.append(
            "Tuned for: "
            + ", ".join(o.label for o in goal.objectives)
            + (" (a Pareto front)" if goal.multi else "")
            + (f", within {limits}" if goal.constraints else "")
            + f". {sum(goal.feasible(r) is None for r in results)} of {len(results)} trials "
            "were feasible (ran cleanly" + (" and kept every limit)." if goal.constraints else ").")
        )
    return said


def _best_rows(best: TrialResult, baseline: TrialResult | None, goal: Goal) -> list[list[str]]:
    """The best configuration's table: its knobs, the goal's figures, energy and the prior."""
    m = best.measurement
    assert m is not None
    rows = [["trial", f"#{best.number} ({best.origin})"], ["knobs", fmt_knobs(best.knobs)]]
    if m.max_request_rate is not None:
        rate = (
            f"{m.request_rate:.2f} req/s (Poisson) of {m.max_request_rate:.2f} at once"
            if m.request_rate
            else f"every request at once ({m.max_request_rate:.2f} req/s)"
        )
        rows.append(["request rate", rate])
    for metric in [*goal.objectives, *(c.metric for c in goal.constraints)]:
        value = metric.of(m)
        if metric.name != "output_tokens_per_s" and value is not None:
            rows.append([metric.label, metric.fmt(value)])
    speed = m.output_tokens_per_s
    rows.append(["output tok/s", f"{fmt_rate(speed.median)} (cv {speed.cv:.1%})"])
    if baseline is not None and baseline.output_tokens_per_s:
        rows.append(
            [
                "baseline (engine defaults)",
                f"{fmt_rate(baseline.output_tokens_per_s)}: "
                f"{speed.median / baseline.output_tokens_per_s:.2f}x",
            ]
        )
    e = m.energy
    if e is not None:
        rows.append(["J / output token", f"{e.joules_per_output_token.median:.4g}"])
        rows.append(["average power", f"{e.avg_power_w.median:,.0f} W"])
        if e.peak_memory_mib is not None:
            rows.append(["peak GPU memory", f"{e.peak_memory_mib:,.0f} MiB"])
    else:
        rows.append(["energy", m.energy_note or "not measured"])
    return rows + _prior_rows(best)


@dataclass
class _Figures:
    """The report's plots, drawn into `out_dir` and placed in `doc` as they come."""

    doc: Doc
    out_dir: Path
    images: list[Path] = field(default_factory=list)

    def add(self, path: Path | None, caption: str, missing: str) -> None:
        """A drawn plot with its caption, or one line on why there is none."""
        if path is None:
            self.doc.p(f"No plot of {missing}.")
        else:
            self.images.append(path)
            self.doc.image(path, caption)


def _search_plots(
    figures: _Figures, results: list[TrialResult], goal: Goal, best: TrialResult | None
) -> None:
    """How the search went: the best so far, each knob, speed against energy."""
    out = figures.out_dir
    figures.add(
        plots.best_so_far(results, out / "best-so-far.png", goal),
        f"Best feasible {goal.label} so far, against trial number and against GPU-seconds "
        "spent (trial wall time, loads included); infeasible trials as purple crosses, failed "
        "trials at zero.",
        "progress: no trial succeeded",
    )
    figures.add(
        plots.per_knob(results, out / "knobs.png", best, goal),
        f"{goal.label} against each knob; the best trial in orange, infeasible trials as "
        "purple crosses, failed trials at zero.",
        "knobs: no trial succeeded",
    )
    same_pair = {o.name for o in goal.objectives} == {"output_tokens_per_s", "joules_per_token"}
    if not same_pair:  # else the optimized front (`_goal_plots`) is this plot
        figures.add(
            plots.speed_energy(results, out / "speed-energy.png"),
            "Output tok/s against joules per output token; the green line is the Pareto front.",
            "speed against energy: no trial has energy figures (no GPU telemetry)",
        )


def _goal_plots(
    figures: _Figures,
    spec: StudySpec,
    results: list[TrialResult],
    goal: Goal,
    best: TrialResult | None,
) -> None:
    """The goal's own plots: its limits, its front, the prior's predictions, the best's power."""
    out = figures.out_dir
    if goal.constraints:
        figures.add(
            plots.limits(results, goal, best, out / "limits.png"),
            f"{goal.label} against each limited figure; crosses broke a limit, the dashed line "
            "is the limit, the chosen configuration in orange.",
            "the limits: no measured trial has the limited figures",
        )
    if goal.multi:
        figures.add(
            plots.front(results, goal, out / "front.png"),
            f"{goal.objectives[0].label} against {goal.objectives[1].label}: the Pareto front "
            "the study optimized (feasible trials only); crosses are infeasible.",
            "the front: no feasible trial",
        )
        figures.doc.table(*_front_table(results, goal))
    if spec.prior is not None:
        figures.add(
            plots.predicted_measured(results, goal, out / "predicted-measured.png"),
            f"Measured against predicted ({spec.prior.by}), per figure of the goal; on the "
            "dashed line the prediction was exact.",
            "predicted against measured: no measured trial has a prediction",
        )
    if best is not None:
        path, how = plots.power_memory(best, out / "power-memory.png")
        figures.add(
            path,
            f"Power and GPU memory over the best trial's warm-up and timed runs ({how}).",
            f"power and memory over time: {how}",
        )


def _front_table(results: list[TrialResult], goal: Goal) -> tuple[list[str], list[list[str]]]:
    header = ["front", "trial", *(o.label for o in goal.objectives), "knobs"]
    rows = [
        [
            str(i),
            f"#{r.number}",
            *(o.fmt(v) if (v := o.of(r.measurement)) is not None else "-"
              for o in goal.objectives),
            fmt_knobs(r.knobs),
        ]
        for i, r in enumerate(goal.front(results))
    ]  # fmt: skip
    return header, rows


def _trials_table(
    results: list[TrialResult], goal: Goal, best: TrialResult | None
) -> tuple[list[str], list[list[str]]]:
    """Every trial: its figures, the goal's, its share of the bound, and why it failed."""
    energy = any(r.measurement and r.measurement.energy for r in results)
    header = ["#", "origin", "status", "out tok/s", "cv"] + (["J/tok"] if energy else [])
    shown = [
        o for o in goal.objectives if o.name not in ("output_tokens_per_s", "joules_per_token")
    ]
    shown += [c.metric for c in goal.constraints if c.metric not in shown]
    bound = any(r.of_speed_of_light is not None for r in results)
    server = any(r.measurement and r.measurement.engine_metrics for r in results)
    header += [m.name for m in shown] + (["of SOL"] if bound else [])
    header += (["server"] if server else []) + ["wall s", "knobs / reason"]
    rows = []
    for r in results:
        m = r.measurement
        row = [
            f"{r.number}{' *' if best is not None and r.number == best.number else ''}",
            r.origin,
            r.status,
            fmt_rate(r.output_tokens_per_s),
            f"{m.output_tokens_per_s.cv:.1%}" if m else "-",
        ]
        if energy:
            row.append(f"{m.energy.joules_per_output_token.median:.3g}" if m and m.energy else "-")
        row += [f"{v:,.4g}" if (v := o.of(m)) is not None else "-" for o in shown]
        if bound:
            row.append(f"{share:.0%}" if (share := r.of_speed_of_light) is not None else "-")
        if server:
            row.append(fmt_engine_metrics(m.engine_metrics if m else None) or "-")
        why = goal.feasible(r, robust=True) if r.status == "ok" else None
        note = f" ({r.reason})" if r.reason else f" (infeasible: {why})" if why else ""
        row += [f"{r.wall_s:.1f}", fmt_knobs(r.knobs) + note]
        rows.append(row)
    return header, rows


def _prior_rows(best: TrialResult) -> list[list[str]]:
    """What the prior predicted for the best configuration, and its share of the bound."""
    p = best.prediction
    if p is None:
        return []
    said = (
        "out of memory" if p.status == "oom" else f"{fmt_rate(p.output_tokens_per_s)} output tok/s"
    )
    rows = [["predicted", f"{said} ({p.by})"]]
    if (share := best.of_speed_of_light) is not None:
        rows.append(
            ["of speed of light", f"{share:.0%} of {fmt_rate(p.speed_of_light_tokens_per_s)}"]
        )
    return rows


def _prior_paragraph(spec: StudySpec, results: Sequence[TrialResult], goal: Goal) -> str:
    """The prior the study started from, how it was used, and its error."""
    assert spec.prior is not None
    names = list(dict.fromkeys([*(o.name for o in goal.objectives), *PRIOR_FIGURES]))
    errors = prediction_error(results, names)
    how = "its best predicted configurations first" + (
        ", and its predictions weighting the optimizer's acquisition (piBO)" if spec.pibo else ""
    )
    said = ", ".join(f"{k} {v:.1f}%" for k, v in errors.items())
    return (
        f"Prior: {spec.prior.by}; the search ran {how} ({len(spec.prior.starts)} starts). Its "
        "error over the measured trials (median absolute percentage): "
        + (said or "none could be judged")
        + ". The measurement decided."
    )


def write_report(run_dir: Path, out_dir: Path) -> Written:
    """Writes `report.md`, `report.html` and the plots' PNG files into `out_dir`."""
    try:
        doc, title, images = build(run_dir, out_dir)
        md = out_dir / "report.md"
        md.write_text(doc.markdown(title))
        page = out_dir / "report.html"
        page.write_text(doc.html(title))
    except OSError as exc:
        raise TunerError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from None
    return Written(md, page, images)

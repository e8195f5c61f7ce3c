"""What a `tuner ci` run found (`CiOutcome`, its `Verdict`), written as a Markdown summary,
JUnit XML and JSON (`summary_markdown`, `junit_xml`, `write_outputs`, `outcome_json`)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tuner.ci.config import CiConfig
from tuner.errors import TunerError
from tuner.fmt import fmt_knobs, fmt_rate
from tuner.profiles.profile import (
    Profile,
)
from tuner.study.study import StudyOutcome

Verdict = Literal["pass", "regression", "slo breach", "failed", "new profile", "replaced"]


def held_figure(profile: Profile | None) -> float | None:
    """The held profile's figure under the goal it was tuned for."""
    return profile.goal().of(profile.best.measurement) if profile else None


@dataclass
class CiOutcome:
    """What a CI run found."""

    verdict: Verdict
    held: Profile | None
    held_path: Path
    measured: float | None
    ratio: float | None
    tolerance: float
    study: StudyOutcome
    run_dir: Path
    written: Path | None
    gpu: str
    breaches: list[str] = field(default_factory=list)
    label: str = "output tok/s"  # what `measured` counts: the goal's first objective
    #: How this run's traffic differs from the held profile's (`TrafficRecord.differences`).
    traffic: list[str] = field(default_factory=list)

    @property
    def traffic_warning(self) -> str | None:
        """One line where the traffic differs from the profile's, else None."""
        if not self.traffic:
            return None
        return (
            f"{self.held_path} was tuned on other traffic ({'; '.join(self.traffic)}): its "
            "figures may not hold for this run's"
        )

    @property
    def held_rate(self) -> float | None:
        return held_figure(self.held)

    @property
    def failing(self) -> bool:
        """Whether the verdict fails the job or needs a look (exit 3, 1)."""
        return self.verdict in ("failed", "regression", "slo breach")

    def lines(self) -> list[str]:
        """What the verdict rests on, a line each: the breached limits, the measured figure
        against the profile's, the profile written."""
        lines = [f"  {breach}" for breach in self.breaches]
        if self.ratio is not None:
            lines.append(
                f"{self.measured:,.1f} {self.label}, {self.ratio:.3f} of the profile's "
                f"{self.held_rate:,.1f} (tolerance {self.tolerance:.0%})"
            )
        if self.written is not None:
            lines.append(f"profile written: {self.written}")
        return lines

    @property
    def exit_code(self) -> int:
        codes = {"pass": 0, "new profile": 0, "replaced": 0, "failed": 1, "regression": 3}
        return codes.get(self.verdict, 3)


HEADLINE = {
    "pass": "PASS",
    "regression": "REGRESSION",
    "failed": "FAILED: no configuration ran to the end",
    "new profile": "NEW PROFILE: nothing to hold yet",
    "replaced": "PROFILE REPLACED: below the tolerance, and asked to write the new profile",
    "slo breach": "SLO BREACH: the configuration no longer keeps the profile's limits",
}


def summary_markdown(o: CiOutcome) -> str:
    """The verdict and its figures, for a CI job's summary."""
    best = o.study.best
    lines = [f"## tuner ci: {HEADLINE[o.verdict]}", ""]
    if o.traffic_warning:
        lines += [f"> Warning: {o.traffic_warning}.", ""]
    if o.breaches:
        lines += [f"- {b}" for b in o.breaches] + [""]
    if o.ratio is not None:
        floor = 1 - o.tolerance
        lines += [
            f"Measured {fmt_rate(o.measured)} {o.label} against the profile's "
            f"{fmt_rate(o.held_rate)}: {o.ratio:.3f} of it (at least {floor:.2f} passes).",
            "",
        ]
    lines += ["| | held profile | this run |", "| --- | --- | --- |"]
    held = o.held
    m = best.measurement if best else None
    hm = held.best.measurement if held else None
    rows = [
        ("GPU", held.gpu.name if held else "-", o.gpu),
        (o.label, fmt_rate(o.held_rate), fmt_rate(o.measured)),
        (
            "cv",
            f"{hm.output_tokens_per_s.cv:.1%}" if hm else "-",
            f"{m.output_tokens_per_s.cv:.1%}" if m else "-",
        ),
        (
            "J / output token",
            f"{hm.energy.joules_per_output_token.median:.4g}" if hm and hm.energy else "-",
            f"{m.energy.joules_per_output_token.median:.4g}" if m and m.energy else "-",
        ),
        (
            "knobs",
            fmt_knobs(held.best.knobs) if held else "-",
            fmt_knobs(best.knobs) if best else "-",
        ),
        ("versions", _versions(held.engine.versions) if held else "-", _versions(o.study.versions)),
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"Profile: `{o.held_path}`. Run directory: `{o.run_dir}`."]
    if o.written is not None:
        lines.append(f"Profile written: `{o.written}`.")
    failed = [r for r in o.study.results if r.status != "ok"]
    for r in failed:
        lines.append(f"Trial {r.number} {r.status}: {r.reason}")
    return "\n".join(lines) + "\n"


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"


def junit_xml(o: CiOutcome) -> str:
    """Two test cases: the measurement ran, and throughput held within the tolerance."""
    suite = ET.Element("testsuite", name="tuner ci", tests="2")
    ran = ET.SubElement(suite, "testcase", classname="tuner.ci", name="measurement")
    throughput = ET.SubElement(suite, "testcase", classname="tuner.ci", name="throughput")
    failures = skipped = 0
    if o.verdict == "failed":
        reasons = "; ".join(f"{r.status}: {r.reason}" for r in o.study.results)
        ET.SubElement(ran, "failure", message="no configuration ran to the end").text = reasons
        ET.SubElement(throughput, "skipped", message="nothing was measured")
        failures, skipped = 1, 1
    elif o.verdict == "new profile":
        ET.SubElement(throughput, "skipped", message=f"no profile to hold at {o.held_path}")
        skipped = 1
    elif o.verdict == "replaced":
        ET.SubElement(
            throughput,
            "skipped",
            message=f"{o.ratio:.3f} of the old profile; the new profile replaced it",
        )
        skipped = 1
    elif o.verdict == "slo breach":
        ET.SubElement(throughput, "failure", message="; ".join(o.breaches))
        failures = 1
    elif o.verdict == "regression":
        ET.SubElement(
            throughput,
            "failure",
            message=f"{fmt_rate(o.measured)} {o.label} is {o.ratio:.3f} of the profile's "
            f"{fmt_rate(o.held_rate)}, below {1 - o.tolerance:.2f}",
        )
        failures = 1
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    wall = o.study.gpu_s
    suite.set("time", f"{wall:.3f}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_outputs(o: CiOutcome, config: CiConfig) -> None:
    """The summary (also appended to GitHub's step summary when there is one) and the JUnit."""
    summary = summary_markdown(o)
    try:
        for path, text in ((config.summary, summary), (config.junit, junit_xml(o))):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a") as f:
                f.write(summary)
    except OSError as exc:
        raise TunerError(f"cannot write the CI outputs: {exc}") from None


def outcome_json(o: CiOutcome) -> dict[str, object]:
    """The verdict for scripts (`tuner ci --json`)."""
    return {
        "verdict": o.verdict,
        "exit_code": o.exit_code,
        "measured_output_tokens_per_s": o.measured,
        "profile_output_tokens_per_s": o.held_rate,
        "ratio": o.ratio,
        "tolerance": o.tolerance,
        "breaches": o.breaches,
        "traffic_differences": o.traffic,
        "profile": str(o.held_path),
        "profile_written": str(o.written) if o.written else None,
        "run_dir": str(o.run_dir),
    }

"""Which Hugging Face engine serves fastest here: `hf` (generate on padded static batches),
`hf-cb` (continuous batching, `generate_batch`'s manager) and `hf-server` (`transformers serve
--continuous-batching` under streamed load), on the same requests, in one run.

Each engine is measured at the configuration its committed profile chose (tuned), at the best
point of its recorded landscape (benchmarks/data/cpu-<engine>-tiny-llama-humaneval.json) and at
its own defaults, with tuner's trial protocol (a warm-up, then timed runs), each in a fresh
worker process; the rounds alternate the engines so that drift of the machine falls on all of
them. Ratios are output tok/s over the tuned `hf`'s, per round, then their median.

    python benchmarks/hf_engines.py [--rounds 3]

Writes reports/hf-engines.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from tuner.execution.executor import bench
from tuner.fmt import fmt_knobs
from tuner.measure.measurement import MeasurementProtocol
from tuner.profiles.profile import read_profile
from tuner.replay.landscape import read_landscape
from tuner.specs.workloads import load_workload
from tuner.study.prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent.parent / "reports" / "hf-engines.md"
PROFILES = ROOT / "profiles" / "cpu"
TUNED = {
    "hf": PROFILES / "hf" / "synthetic-tiny-llama--humaneval-64x16.json",
    "hf-cb": PROFILES / "hf-cb" / "synthetic-tiny-llama--humaneval-64x16.json",
    "hf-server": PROFILES / "hf-server" / "synthetic-tiny-llama--humaneval-64x16.json",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workload = load_workload("humaneval", requests=64, output_tokens=16)
    protocol = MeasurementProtocol(
        repeats=3, run_time_limit_s=60, warmup_time_limit_s=180, max_remeasures=1
    )
    cases = []
    for engine, path in TUNED.items():
        setup = prepare(engine, "synthetic:tiny-llama", workload)
        tuned = read_profile(path).best.knobs
        table = read_landscape(
            ROOT / "benchmarks" / "data" / f"cpu-{engine}-tiny-llama-humaneval.json"
        )
        cases.append((engine, "tuned", setup, tuned))
        cases.append((engine, "recorded best", setup, table.optimum().knobs))
        cases.append((engine, "defaults", setup, setup.space.default_knobs()))
    rates: dict[tuple[str, str], list[float]] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as logs:
        for round_ in range(args.rounds):
            for engine, which, setup, knobs in cases:
                result = bench(
                    partial(setup.task, protocol=protocol), knobs, 900, Path(logs) / engine
                )
                rate = result.output_tokens_per_s or 0.0
                rates.setdefault((engine, which), []).append(rate)
                print(f"round {round_ + 1}: {engine} {which}: {rate:,.1f} tok/s", flush=True)
    base = rates[("hf", "tuned")]
    lines = [
        "# Hugging Face engines on this machine: static batches, continuous batching, server",
        "",
        f"`python benchmarks/hf_engines.py --rounds {args.rounds}`, run {started}: the synthetic "
        "tiny Llama, 64 HumanEval prompts x 16 output tokens, every request at once (the "
        "server: at each configuration's concurrency), on this repository's 2-core CPU "
        "machine. Output tok/s, median of each configuration's timed runs; ratio to the tuned "
        "`hf` in the same round, then the median over rounds.",
        "",
        "| engine | configuration | knobs | output tok/s per round | ratio to tuned hf |",
        "|---|---|---|---|---:|",
    ]
    for engine, which, _, knobs in cases:
        got = rates[(engine, which)]
        ratio = statistics.median(g / b for g, b in zip(got, base, strict=True) if b)
        cells = ", ".join(f"{r:,.1f}" for r in got)
        knob_text = fmt_knobs(knobs).replace("|", "\\|")  # paged|eager inside a table cell
        lines.append(f"| {engine} | {which} | {knob_text} | {cells} | {ratio:.2f} |")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

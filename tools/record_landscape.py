"""Record a landscape: measure every point of a small grid of knobs with the full trial protocol.

Run on the GPU the table is for. Each point is a trial in tuner's worker (warm-up, repeats,
re-measures, telemetry); points that share a model load reuse it. The table goes to
benchmarks/data/ and is what `--engine replay:<table.json>` and search_efficiency.py read.

    python tools/record_landscape.py --engine hf --model synthetic:llama-1b \\
        --workload humaneval --requests 64 --output-tokens 64 \\
        --grid batch_size=1,4,16,64 --grid attn_implementation=sdpa,eager \\
        --grid cache_implementation=dynamic,static --grid dtype=bfloat16,float16 \\
        --set torch_compile=false --out benchmarks/data/NAME.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from tuner.errors import TunerError
from tuner.measure.measurement import MeasurementProtocol
from tuner.replay.landscape import parse_grid, record, write_landscape
from tuner.specs.workloads import load_workload
from tuner.study.prepare import prepare
from tuner.study.rundir import StudySpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", default="hf")
    p.add_argument("--model", required=True)
    p.add_argument("--workload", default="humaneval")
    p.add_argument("--requests", type=int)
    p.add_argument("--output-tokens", type=int)
    p.add_argument("--grid", action="append", default=[], help="name=v1,v2,... (repeatable)")
    p.add_argument("--set", action="append", default=[], help="name=value held in every point")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run-time-limit", type=float, default=5.0)
    p.add_argument("--warmup-time-limit", type=float, default=20.0)
    p.add_argument("--max-cv", type=float, default=0.10)
    p.add_argument("--max-remeasures", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    try:
        workload = load_workload(
            args.workload, requests=args.requests, output_tokens=args.output_tokens
        )
        setup = prepare(args.engine, args.model, workload, set_pairs=args.set)
        grid = parse_grid(args.grid, setup.space)
        protocol = MeasurementProtocol(
            repeats=args.repeats,
            run_time_limit_s=args.run_time_limit,
            warmup_time_limit_s=args.warmup_time_limit,
            max_cv=args.max_cv,
            max_remeasures=args.max_remeasures,
        )
        spec = StudySpec(engine=args.engine, model=args.model, workload=workload, protocol=protocol)

        def say(number: int, total: int, r) -> None:  # type: ignore[no-untyped-def]
            rate = f"{r.output_tokens_per_s:,.1f} tok/s" if r.output_tokens_per_s else r.reason
            knobs = " ".join(f"{k}={v}" for k, v in r.knobs.items())
            print(f"[{number + 1}/{total}] {r.status} {rate} {r.wall_s:.1f}s  {knobs}", flush=True)

        with tempfile.TemporaryDirectory() as tmp:
            table = record(
                setup,
                grid,
                protocol,
                spec.timeout_s(),
                Path(tmp),
                command=shlex.join(["python", *sys.argv]),
                on_point=say,
            )
        write_landscape(table, args.out)
    except TunerError as exc:
        sys.exit(f"error: {exc}")
    best = table.optimum()
    print(
        f"wrote {args.out}: {len(table.points)} points, optimum "
        f"{best.output_tokens_per_s:,.1f} tok/s at {best.knobs}"
    )


if __name__ == "__main__":
    main()

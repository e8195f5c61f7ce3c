"""Prefix caching on the CPU vLLM server, from the server's own metrics.

Two workloads of the same lengths (64 requests, 576 prompt tokens, 64 out): `shared-prefix`
(each prompt starts with one of 4 shared 512-token prefixes) and its control `unshared` (576
random tokens each, written next to the output). Each is measured with vLLM's
`enable_prefix_caching` on and off (`tuner bench`), then searched by the same small study
(`tuner tune`, the default optimizer): prefix caching, chunked prefill and the client's
concurrency searched, the other knobs held. Each trial's prefix-cache hit rate, preemptions and
queue time come from the server's `/metrics`.

    python benchmarks/prefix_caching.py [--trials 8] [--out reports/cpu-vllm-server-prefix-caching]

Writes `results.md` (the tables) and `unshared.yaml` under `--out`; the run directories go to a
temporary folder. It takes about 15 minutes on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODEL = "synthetic:tiny-llama"
#: Knobs held in the study (CPU-safe eager mode; the rest at vLLM's CPU defaults), so that it
#: searches what shared prefixes bear on: prefix caching, chunked prefill, and the load.
HELD = [
    "enforce_eager=true",
    "gpu_memory_utilization=0.2",
    "block_size=128",
    "max_num_seqs=256",
    "max_num_batched_tokens=4096",
    "kv_cache_dtype=auto",
    "scheduling_policy=fcfs",
]
UNSHARED = {
    "schema_version": 1,
    "name": "unshared",
    "description": "the shared-prefix workload's lengths, nothing shared: its control",
    "source": "synthetic",
    "requests": 64,
    "input_tokens": 576,
    "output_tokens": 64,
    "seed": 0,
}


def tuner(*args: str) -> dict[str, Any]:
    """Runs `python -m tuner ARGS --json`; its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", "tuner", *args, "--json"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"tuner {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout)


def server_figures(measurement: dict[str, Any]) -> dict[str, Any]:
    """Median figures of the timed runs, the server's own among them."""
    runs = measurement["runs"]
    found = [r.get("engine_metrics") or {} for r in runs]

    def median(key: str) -> float | None:
        values = sorted(f[key] for f in found if f.get(key) is not None)
        return values[len(values) // 2] if values else None

    latency = measurement.get("latency") or {}
    ttft = latency.get("ttft") or {}
    return {
        "tok_s": measurement["output_tokens_per_s"]["median"],
        "cv": measurement["output_tokens_per_s"]["cv"],
        "ttft_p50": ttft.get("p50_ms"),
        "ttft_p99": ttft.get("p99_ms"),
        "hit_rate": median("prefix_cache_hit_rate"),
        "preemptions": median("preemptions"),
        "queue_ms": median("queue_time_mean_ms"),
    }


def cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def row(workload: str, setting: str, f: dict[str, Any]) -> str:
    return (
        f"| {workload} | {setting} | {f['tok_s']:,.0f} (cv {f['cv']:.0%}) | "
        f"{cell(f['ttft_p50'], ',.0f')} / {cell(f['ttft_p99'], ',.0f')} | "
        f"{cell(f['hit_rate'], '.1%')} | {cell(f['preemptions'], 'g')} | "
        f"{cell(f['queue_ms'], ',.1f')} |"
    )


HEADER = [
    "| workload | knobs | output tok/s | TTFT p50 / p99 ms | prefix-cache hits | preemptions "
    "| queue ms (mean) |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "reports" / "cpu-vllm-server-prefix-caching"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    unshared = args.out / "unshared.yaml"
    unshared.write_text(yaml.safe_dump(UNSHARED, sort_keys=False))
    workloads = {"shared-prefix": "shared-prefix", "unshared": str(unshared)}
    started = time.perf_counter()
    lines = [
        "# Prefix caching on the CPU vLLM server: measured figures",
        "",
        f"Made on {date.today()} by `python benchmarks/prefix_caching.py --trials {args.trials}` "
        f"on {platform.machine()} ({platform.processor() or 'cpu'}), {MODEL}; every figure is "
        "the median of 3 timed runs after a warm-up, each run with its own vLLM `cache_salt`.",
        "",
        "## One configuration, prefix caching on and off (`tuner bench`)",
        "",
        *HEADER,
    ]
    common = ["--engine", "vllm-server", "--model", MODEL, "--max-remeasures", "0"]
    for name, ref in workloads.items():
        for on in ("true", "false"):
            found = tuner(
                "bench", *common, "--workload", ref,
                "--set", "enforce_eager=true", "--set", f"enable_prefix_caching={on}",
            )  # fmt: skip
            lines.append(
                row(name, f"enable_prefix_caching={on}", server_figures(found["measurement"]))
            )
    with tempfile.TemporaryDirectory() as tmp:
        for name, ref in workloads.items():
            held = [a for h in HELD for a in ("--set", h)]
            found = tuner(
                "tune", *common, "--workload", ref, "--trials", str(args.trials), *held,
                "--run-dir", f"{tmp}/{name}", "--profiles-dir", f"{tmp}/profiles",
            )  # fmt: skip
            lines += study_section(name, found, Path(tmp) / name / "trials.jsonl")
    lines += ["", f"Wall time of the whole script: {time.perf_counter() - started:,.0f} s.", ""]
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


def study_section(name: str, found: dict[str, Any], trials_file: Path) -> list[str]:
    """A study's trials with their server figures, and its pick."""
    best = found["best"]
    lines = [
        "",
        f"## The study on {name} (`tuner tune`, {len(found['trials'])} trials)",
        "",
        f"Picked: `{fmt(best['knobs'], searched_only=True)}` "
        f"(trial {best['number']}), {found['wall_s']:,.0f} s of trials.",
        "",
        *HEADER,
    ]
    for line in trials_file.read_text().splitlines():
        trial = json.loads(line)
        if trial.get("measurement") is None:
            lines.append(f"| #{trial['number']} | {fmt(trial['knobs'], True)} | "
                         f"{trial['status']}: {trial.get('reason')} | | | | |")  # fmt: skip
            continue
        figures = server_figures(trial["measurement"])
        lines.append(row(f"#{trial['number']}", fmt(trial["knobs"], True), figures))
    return lines


def fmt(knobs: dict[str, Any], searched_only: bool = False) -> str:
    held = {h.split("=")[0] for h in HELD} if searched_only else set()
    return " ".join(f"{k}={v}" for k, v in sorted(knobs.items()) if k not in held)


if __name__ == "__main__":
    main()

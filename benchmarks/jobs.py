"""Many replay studies at once, in worker processes, each result kept as it finishes.

    from jobs import run_jobs  # beside the benchmark scripts, which run from this folder

A job is a tuple of JSON values; with a cache (JSON lines of job and result) those already there
are read back and each new one is appended as it finishes, so that a stopped run goes on.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

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

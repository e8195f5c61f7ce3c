"""Split the imported tables once, by model, into a tuning half and a test half.

    python tools/split_external.py

Every design choice of the search is made on the tuning half; reports give both halves
(`benchmarks/search_efficiency.py --external`). A model's tables all fall in one half, so a
method tuned on one half has never seen the other half's models. Per source, the models are
shuffled with a fixed seed and dealt in that order to whichever half holds fewer tables so far.
Writes benchmarks/data/external/split.json; run it again only to add a source (the split of the
sources already in it must not change: check the diff).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL = ROOT / "benchmarks" / "data" / "external"
SPLIT = EXTERNAL / "split.json"
SEED = 2026


def split(tables_by_model: dict[str, list[str]], seed: int = SEED) -> dict[str, list[str]]:
    """Models dealt into `tuning` and `test` halves, balanced by their tables' count."""
    models = sorted(tables_by_model)
    random.Random(seed).shuffle(models)
    halves: dict[str, list[str]] = {"tuning": [], "test": []}
    count = {"tuning": 0, "test": 0}
    for model in models:
        half = "tuning" if count["tuning"] <= count["test"] else "test"
        halves[half].append(model)
        count[half] += len(tables_by_model[model])
    return {half: sorted(names) for half, names in halves.items()}


def main() -> None:
    sources: dict[str, dict[str, list[str]]] = {}
    for path in sorted(EXTERNAL.glob("*/*.json")):
        model = json.loads(path.read_text())["model"]
        sources.setdefault(path.parent.name, {}).setdefault(model, []).append(path.stem)
    out = {
        "about": (
            "Imported tables split by model (tools/split_external.py, seed "
            f"{SEED}): the search is designed on the tuning half and reported on both."
        ),
        "sources": {name: split(models) for name, models in sources.items()},
    }
    SPLIT.write_text(json.dumps(out, indent=1) + "\n")
    for name, halves in out["sources"].items():
        counts = {h: sum(len(sources[name][m]) for m in ms) for h, ms in halves.items()}
        print(
            f"{name}: "
            + ", ".join(f"{h} {len(ms)} models, {counts[h]} tables" for h, ms in halves.items())
        )


if __name__ == "__main__":
    main()

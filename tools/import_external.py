"""Import measurements made by others as replay tables (benchmarks/data/external/).

    python tools/import_external.py martinez2024 [--from ../shared/external/martinez2024]
    python tools/import_external.py aiconfigurator [--from PATH/silicon_sample.csv]

`martinez2024` reads the Martinez 2024 appendix (UPCBarcelonaTech/infpop, RQ2/tables and
allData.csv); `aiconfigurator` reads `silicon_sample.csv` from the installed `aiconfigurator-core`
package (pip install -e ".[aiconfigurator]") or the file given. Each table keeps its source:
repository, version, files, row ids, the knob mapping and what was derived (see
tuner.replay.external).
Replay one with `tuner tune --engine replay:benchmarks/data/external/...json`.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata, resources
from pathlib import Path

from tuner.errors import TunerError
from tuner.replay.external import martinez_tables, silicon_tables
from tuner.replay.landscape import write_landscape

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "data" / "external"
MARTINEZ = ROOT.parent / "shared" / "external" / "martinez2024"


def silicon_csv() -> tuple[Path, str]:
    """The installed package's silicon_sample.csv and the package's version."""
    try:
        version = metadata.version("aiconfigurator-core")
    except metadata.PackageNotFoundError:
        raise TunerError(
            "aiconfigurator-core is not installed: pip install -e '.[aiconfigurator]', or give "
            "--from PATH/silicon_sample.csv"
        ) from None
    path = Path(str(resources.files("aiconfigurator_core") / "systems" / "silicon_sample.csv"))
    return path, version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=["martinez2024", "aiconfigurator"])
    parser.add_argument("--from", dest="path", type=Path, help="the source's folder or file")
    parser.add_argument("--version", help="the package version of a --from silicon file")
    parser.add_argument("--out", type=Path, help="folder for the tables")
    args = parser.parse_args()
    try:
        if args.source == "martinez2024":
            tables = martinez_tables(args.path or MARTINEZ)
            out = args.out or OUT / "martinez2024"
        else:
            path, version = (args.path, args.version or "unknown") if args.path else silicon_csv()
            tables = silicon_tables(path, version)
            out = args.out or OUT / "aiconfigurator-silicon"
        out.mkdir(parents=True, exist_ok=True)
        for name, table in tables.items():
            write_landscape(table, out / name, indent=None)
    except TunerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(tables)} tables in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

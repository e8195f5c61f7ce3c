"""tuner: find the fastest way to serve a large language model on a given GPU, by measurement.

Importing this package imports neither torch nor any inference engine; those load inside the
worker process that runs a trial. Its Python entry point (`tuner.entrypoints`, what the command
line calls) is here by name: `tune`, `resume`, `bench`, `TuneRequest`, `BenchRequest`.
"""

from __future__ import annotations

from typing import Any

from tuner.version import __version__

_ENTRY_POINTS = ("BenchRequest", "Finished", "TuneRequest", "bench", "resume", "tune")
__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    """The entry points, imported when first named (so that `import tuner` stays light)."""
    if name in _ENTRY_POINTS:
        from tuner import entrypoints

        return getattr(entrypoints, name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")

"""Recorded landscapes and their replay: a study answered from measurements made before.

- `landscape`: a table of measured configurations and its source (`Landscape`, `record`,
  `read_landscape`);
- `replay`: `--engine replay:<table.json>`, the table as a study's search space and evaluator
  (`Replay`, `load_replay`);
- `external`: tables built from others' published measurements, with their source kept
  (`martinez_tables`, `silicon_tables`).
"""

from tuner.replay.external import martinez_tables, silicon_tables
from tuner.replay.landscape import Landscape, read_landscape, record, write_landscape
from tuner.replay.replay import REPLAY_PREFIX, Replay, is_replay, load_replay

__all__ = [
    "REPLAY_PREFIX",
    "Landscape",
    "Replay",
    "is_replay",
    "load_replay",
    "martinez_tables",
    "read_landscape",
    "record",
    "silicon_tables",
    "write_landscape",
]

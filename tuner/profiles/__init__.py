"""Tuned profiles: a study's best configuration on one GPU model, as JSON, and what reads them.

- `profile`: the record and its JSON Schema (`Profile`, `read_profile`, `write_profile`,
  `profile_path`); a finished study builds its own (`tuner.study.profile.build_profile`);
- `store`: the profiles under a folder, and the one that fits this machine (`read_store`,
  `resolve_profile`, `for_machine`, `diff`);
- `formats`: a profile exported in a form an engine takes (`export`, `FORMATS`).
"""

from tuner.profiles.formats import FORMATS, export
from tuner.profiles.profile import (
    SCHEMA_FILE,
    Profile,
    profile_path,
    read_profile,
    write_profile,
)
from tuner.profiles.store import diff, for_machine, read_store, resolve_profile

__all__ = [
    "FORMATS",
    "SCHEMA_FILE",
    "Profile",
    "diff",
    "export",
    "for_machine",
    "profile_path",
    "read_profile",
    "read_store",
    "resolve_profile",
    "write_profile",
]

"""What can be tuned, and under what load: read from the declarative specs.

- `paths`: where the specs are (`engines/` and `workloads/` in a checkout, `tuner/_specs/` in a
  wheel), and reading them;
- `knobs`: an engine's knob catalogue (`Catalogue`, `KnobSpec`, `Value`);
- `rules`: the constraint expressions a catalogue's knobs carry;
- `space`: a catalogue narrowed to this machine, model and pins (`SearchSpace`, `resolve`);
- `workloads`: the requests a trial serves (`WorkloadSpec`, `load_workload`, `build_requests`).
"""

from tuner.specs.knobs import Catalogue, KnobSpec, Value
from tuner.specs.paths import read_yaml, spec_dir, spec_names
from tuner.specs.space import Knob, SearchSpace, resolve
from tuner.specs.workloads import Request, WorkloadSpec, build_requests, load_workload

__all__ = [
    "Catalogue",
    "Knob",
    "KnobSpec",
    "Request",
    "SearchSpace",
    "Value",
    "WorkloadSpec",
    "build_requests",
    "load_workload",
    "read_yaml",
    "resolve",
    "spec_dir",
    "spec_names",
]

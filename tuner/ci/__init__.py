"""`tuner ci` as a library: hold a committed profile's throughput, and its limits, in
continuous integration.

A small config file names the engine, model and workload, a bounded job (`bench`: measure the
profile's configuration once; `tune`: a short study) and a tolerance. The job runs as a study in
a run directory of its own (its report and trials are CI artifacts) under the goal the profile was
tuned for (its objectives and limits), its best figure is compared with the profile committed for
the GPU it ran on, and the verdict is written as a Markdown summary and a JUnit XML file. A
regression beyond the tolerance, or a held configuration that now breaks the profile's limits
(an SLO), is exit code 3; `update_profile` writes the new profile instead (a regression then
replaces the profile, exit 0). A run on another workload shape than the held profile's is bad
input (exit 2), not a regression: the figures would not compare.

- `config`: the config file (`CiConfig`, `load_config`);
- `run`: the job and its verdict (`run_ci`);
- `outcome`: what it found and how it is written (`CiOutcome`, `summary_markdown`, `junit_xml`,
  `write_outputs`, `outcome_json`, `HEADLINE`).

The command (`tuner ci`, in `tuner.cli.app`) reads its options and calls these.
"""

from tuner.ci.config import CiConfig, load_config
from tuner.ci.outcome import (
    HEADLINE,
    CiOutcome,
    junit_xml,
    outcome_json,
    summary_markdown,
    write_outputs,
)
from tuner.ci.run import run_ci

__all__ = [
    "HEADLINE",
    "CiConfig",
    "CiOutcome",
    "junit_xml",
    "load_config",
    "outcome_json",
    "run_ci",
    "summary_markdown",
    "write_outputs",
]

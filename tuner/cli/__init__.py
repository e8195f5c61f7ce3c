"""The command line: thin commands over the library.

- `app`: the typer application, one function per command (`app`, `main`: the `tuner` script);
  `tuner ci`, the container entrypoint, calls `tuner.ci`;
- `options`: the options `tune`, `bench` and `plan` share, and the groups the library takes;
- `study_commands`: `tune` and `bench`: the library's requests run, with progress and tables
  (`tuner.report.terminal`);
- `profile_commands`: `tuner profile ...`;
- `common`: what the commands share: the consoles, the bad-input guard, JSON output.
"""

from tuner.cli.app import app, main

__all__ = ["app", "main"]

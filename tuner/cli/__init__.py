"""The command line: thin commands over the library, and the console they print to.

- `app`: the typer application, one function per command (`app`, `main`: the `tuner` script);
  `tuner ci`, the container entrypoint, calls `tuner.ci`;
- `options`: the options `tune`, `bench` and `ci` share, as argument groups;
- `study_commands`: `tune` and `bench`, from their arguments to the studies run;
- `profile_commands`: `tuner profile ...`;
- `common`: what the commands share: the consoles, the bad-input guard, JSON output;
- `console`: what the commands print (rich tables, progress).
"""

from tuner.cli.app import app, main

__all__ = ["app", "main"]

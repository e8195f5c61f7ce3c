"""A server's command template (`--server-cmd`): `{model}`, `{port}`, `{host}`, `{args}` and
`{python}` filled in.

The template is split into arguments as a POSIX shell splits a line (shlex) before anything is
filled in, so that a value is never split or unquoted again: a model path holding spaces,
quotes or `$(...)` stays one argument, and no shell sees it. `{args}`, the trial's flags, must
stand alone as one word; it becomes one argument per flag and value. Inside the script of a
shell (`sh -c '...'`, `bash -lc '...'`), where the text is shell code, every value is filled in
shell-quoted instead (and `{args}` as shell-quoted words), so that it is still one word there
and never code. Literal braces are doubled, `{{` and `}}`, as in Python's format strings (a
JSON flag value: `--compilation-config '{{"level": 3}}'`).
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping, Sequence
from pathlib import PurePath

from tuner.errors import TunerError

PLACEHOLDERS = ("model", "port", "host", "args", "python")
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash"})


def _fields(word: str) -> list[tuple[str, str | None]]:
    """A word as (literal text, placeholder or None) pieces; one line when it is malformed."""
    try:
        parsed = list(string.Formatter().parse(word))
    except ValueError as exc:
        raise TunerError(
            f"--server-cmd: cannot read {word!r} ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    pieces = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (name not in PLACEHOLDERS or spec or conversion):
            raise TunerError(
                f"--server-cmd: {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} is not a placeholder; known: "
                f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)} (write a literal brace as "
                "{{ or }})"
            )
        pieces.append((literal, name))
    return pieces


def _shell_scripts(words: Sequence[str]) -> set[int]:
    """Indices of the words that are a shell's `-c` script."""
    scripts = set()
    for i, word in enumerate(words):
        if PurePath(word).name not in SHELLS:
            continue
        for j in range(i + 1, len(words) - 1):
            option = words[j]
            if not option.startswith("-") or option == "--":
                break
            if not option.startswith("--") and "c" in option[1:]:
                scripts.add(j + 1)
                break
    return scripts


def split(template: str) -> list[str]:
    """The template's words, checked: one line for an unbalanced quote, an unknown
    placeholder, a stray brace, or `{args}` inside a word outside a shell script."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise TunerError(
            f"--server-cmd: cannot split {template!r} into arguments ({exc})"
        ) from None
    if not words:
        raise TunerError("--server-cmd is empty")
    scripts = _shell_scripts(words)
    for i, word in enumerate(words):
        pieces = _fields(word)
        if i not in scripts and any(n == "args" for _, n in pieces) and word != "{args}":
            raise TunerError(
                f"--server-cmd: {{args}} stands for several arguments, so it must be a word of "
                f"its own, not part of {word!r}"
            )
    return words


def fill(template: str, values: Mapping[str, str], args: Sequence[str]) -> list[str]:
    """The command's arguments: each placeholder replaced by its value as one argument (or,
    in a shell's script, shell-quoted), `{args}` by `args`."""
    words = split(template)
    scripts = _shell_scripts(words)
    argv: list[str] = []
    for i, word in enumerate(words):
        if word == "{args}" and i not in scripts:
            argv.extend(args)
            continue
        quote = shlex.quote if i in scripts else str
        text = []
        for literal, name in _fields(word):
            text.append(literal)
            if name == "args":
                text.append(" ".join(shlex.quote(a) for a in args))
            elif name is not None:
                text.append(quote(values[name]))
        argv.append("".join(text))
    return argv

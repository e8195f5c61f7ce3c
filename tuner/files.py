"""Files tuner reads and writes: read as UTF-8 with one line when that fails, written whole or
not at all (a temporary file beside the target, synced, renamed over it; removed on failure)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from tuner.errors import TunerError

#: The errors of a disk that has no room left (for a file, or for this user).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_atomic(path: Path, text: str) -> Path:
    """Writes `text` to `path` so that a reader sees the old file or the whole new one; on
    failure nothing is left behind and the `OSError` is raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp's file is private (0600): the new file gets the old one's mode, or 0644.
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def cache_root() -> Path:
    """tuner's own cache (synthetic models, predictions): `$TUNER_CACHE` or `~/.cache/tuner`."""
    env = os.environ.get("TUNER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tuner"


def read_text(path: Path, what: str) -> str:
    """A file's UTF-8 text; one `TunerError` line when it is missing, unreadable or not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TunerError(f"no {what} at {path}") from None
    except OSError as exc:
        raise TunerError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TunerError(f"the {what} {path} is not UTF-8 text (byte {exc.start})") from None


def os_error(exc: OSError) -> str:
    """An OS error in words: `the disk is full (No space left on device)`."""
    text = exc.strerror or str(exc)
    return f"the disk is full ({text})" if exc.errno in DISK_FULL else text


def check_writable(folder: Path, what: str) -> None:
    """One line unless files can be created in `folder`, or, where it does not exist yet, in
    the folder that would hold it (nothing is created here)."""
    existing = folder.absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        with tempfile.TemporaryFile(prefix=".tuner-write-check-", dir=existing):
            pass
    except OSError as exc:
        raise TunerError(f"cannot write to the {what} {folder}: {os_error(exc)}") from None

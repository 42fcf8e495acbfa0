"""Writing files so that a reader never sees half of one: the one home of dzsr's atomic writes.

Every output (images, checkpoints, manifests, reports, training state) is written to a temporary file
``.NAME.<hex>.tmp`` next to its target, synced, then renamed over the target; the folder is synced so the
rename survives a power cut. New files get the usual permissions (``0666`` less the umask, i.e. ``0644``),
not ``mkstemp``'s ``0600``. The writer holds an advisory lock on its temporary file, so that a later run can
tell a temporary file left by a killed run (removed by :func:`remove_stale_temps`) from one being written
right now. Failures to write (permissions, read-only or full disk, torch's ``RuntimeError`` wrapping of a
failed write) become :class:`dzcli.errors.OutputError` naming the target, never the hidden temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dzcli.errors import OutputError

try:  # POSIX only; elsewhere a temporary file counts as stale once it is an hour old
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "check_output",
    "open_atomic",
    "remove_stale_temps",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

_STALE_AGE_S = 3600.0
"""Without advisory locks (Windows), how old a temporary file must be to count as left by a killed run."""


def _describe(exc: BaseException) -> str:
    """The problem in a few words: ``no space left on device``, ``permission denied``, ..."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    text = str(exc)
    if "No space left" in text or "errno 28" in text.lower():
        return "no space left on device"
    return text.splitlines()[0] if text else type(exc).__name__


def _is_write_failure(exc: BaseException) -> bool:
    """OSError, or the RuntimeError that torch.save / safetensors raise when the underlying write fails."""
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(s in text for s in ("No space left", "write", "Write"))
    return False


def _lock(fh: BinaryIO) -> None:
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _claim_temp(path: Path) -> Path:
    """Create ``.NAME.<hex>.tmp`` next to ``path`` exclusively (mode 0666 less the umask)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
            return tmp
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the data itself is already synced
    finally:
        os.close(fd)


def _prepare_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: cannot write, {path.parent} is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create its folder {path.parent}: {_describe(exc)}") from None


@contextlib.contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file object (with a ``.name``) whose content replaces ``path`` when the block ends.

    On an exception inside the block, or a failure to write, nothing at ``path`` changes and the temporary
    file is removed; write failures are raised as :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    _prepare_folder(path)
    try:
        tmp = _claim_temp(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
    try:
        with open(tmp, "r+b") as fh:  # by name: tifffile wants a file object with a path name
            _lock(fh)
            try:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            except BaseException as exc:
                if _is_write_failure(exc):
                    raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
                raise
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on a fresh temporary file next to ``path``, sync it, then rename it over ``path``."""
    with open_atomic(path) as fh:
        write(fh)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (and a final newline) to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _stale(tmp: Path) -> bool:
    """Whether no live writer holds ``tmp`` (its lock is free; without locks: an hour old)."""
    if fcntl is None:  # pragma: no cover - Windows
        import time

        return time.time() - tmp.stat().st_mtime > _STALE_AGE_S
    try:
        with open(tmp, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except BlockingIOError:
        return False


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left next to ``path`` (``.NAME.<hex>.tmp``); return them."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        hexpart = tmp.name[len(path.name) + 2 : -4]
        if len(hexpart) != 12 or any(c not in "0123456789abcdef" for c in hexpart):
            continue
        with contextlib.suppress(OSError):
            if _stale(tmp):
                tmp.unlink()
                removed.append(tmp)
    return removed


def check_output(path: str | Path, need_bytes: int = 0) -> None:
    """Before a long computation: ``path`` can be written (its folder exists or can be made, is writable,
    has ``need_bytes`` free); temporary files left there by a killed run are removed.

    Raises:
        OutputError: naming ``path`` and the problem.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file to write")
    _prepare_folder(path)
    remove_stale_temps(path)
    try:
        tmp = _claim_temp(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
    tmp.unlink()
    if need_bytes > 0:
        free = shutil.disk_usage(path.parent).free
        if free < need_bytes:
            raise OutputError(
                f"{path}: not enough free space on its disk ({free / 2**20:.0f} MiB free, about "
                f"{need_bytes / 2**20:.0f} MiB needed)"
            )

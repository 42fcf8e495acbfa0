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
import glob
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
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
        try:
            fh = open(tmp, "r+b")  # noqa: SIM115 (closed below, also when a write failed; tifffile wants a name)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
        try:
            _lock(fh)
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, path)  # still locked: no other run takes it for a killed run's temp meanwhile
        except BaseException as exc:
            if _is_write_failure(exc):
                raise OutputError(f"{path}: cannot write: {_describe(exc)}") from None
            raise
        finally:  # flushed already, or a write failed and what is left in the buffer cannot be written either
            with contextlib.suppress(OSError):
                fh.close()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
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


def _remove_stale(candidates: Iterable[Path]) -> list[Path]:
    """Remove those of ``candidates`` named ``.NAME.<12 hex>.tmp`` that no live writer holds; return them."""
    removed = []
    for tmp in candidates:
        hexpart = tmp.name[:-4].rpartition(".")[2]
        if len(hexpart) != 12 or any(c not in "0123456789abcdef" for c in hexpart):
            continue
        with contextlib.suppress(OSError):
            if _stale(tmp):
                tmp.unlink()
                removed.append(tmp)
    return removed


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left next to ``path`` (``.NAME.<hex>.tmp``); return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return _remove_stale(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def remove_stale_temps_in(folder: str | Path) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder``, whatever their target; return them."""
    folder = Path(folder)
    return _remove_stale(folder.glob(".*.tmp")) if folder.is_dir() else []


def _size(n: float) -> str:
    """``n`` bytes for a person: ``512 KiB``, ``3.1 MiB``, ``12 GiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.0f} {units[i]}" if n >= 10 or i == 0 else f"{n:.1f} {units[i]}"


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
                f"{path}: not enough free space on its disk ({_size(free)} free, about {_size(need_bytes)} "
                "needed)"
            )

"""Third-party chatter kept off the terminal: what C libraries print to stderr, and OpenCV's own log.

libjpeg, libpng and LibRaw print their warnings about damaged files (``Corrupt JPEG data: 50 extraneous
bytes before marker 0xd9``, ``libpng warning: iCCP: too short``, ``x.dng: Unexpected end of file``) with
``fprintf(stderr, ...)``, past ``sys.stderr`` and logging, and OpenCV prints its log (``[ WARN:0@0.1]
global grfmt_tiff.cpp:123 TIFF_Warning ...``) the same way. :func:`c_stderr_to_log` takes the first
into dzsr's debug log around the calls that decode files; :func:`set_opencv_log_level` sets the second
(the CLI shows it only with ``--verbose``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["c_stderr_to_log", "set_opencv_log_level"]

_REDIRECT_LOCK = threading.RLock()  # file descriptor 2 is shared by every thread of the process
_OPENCV_SILENT, _OPENCV_WARNING = 0, 3  # cv::utils::logging::LogLevel values


@contextlib.contextmanager
def c_stderr_to_log(log: logging.Logger, source: object) -> Iterator[None]:
    """Capture what is written to file descriptor 2 during the block, and log it at debug level, one
    record a line (``{source}: {line}``), also when the block raises.

    Python's ``sys.stderr`` is flushed first, so only what is written inside the block is captured. Lines
    with terminal control codes are not logged: they are a progress bar that another thread redrew
    meanwhile (its next redraw replaces them). Where descriptor 2 cannot be redirected (closed, no
    temporary file), the block runs as it is.
    """
    with _REDIRECT_LOCK, contextlib.ExitStack() as stack:
        try:
            sink = stack.enter_context(tempfile.TemporaryFile())
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(2)
        except OSError as exc:
            log.debug("%s: stderr not redirected (%s)", source, exc)
            saved = -1
        if saved < 0:
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines():
                text = line.strip()
                if text and "\x1b" not in text:  # LibRaw names the file itself
                    log.debug("%s", text if text.startswith(f"{source}:") else f"{source}: {text}")


def set_opencv_log_level(verbose: bool) -> None:
    """Let OpenCV print its warnings to stderr when ``verbose``, nothing otherwise (errors are raised)."""
    import cv2

    api = getattr(cv2.utils, "logging", cv2)  # OpenCV 5 moved cv2.setLogLevel to cv2.utils.logging
    api.setLogLevel(_OPENCV_WARNING if verbose else _OPENCV_SILENT)

"""dzsr's exceptions. Library code raises these; the CLI maps them to one-line messages and exit codes.

Every message names the file (or folder) concerned and the problem, in one line.
"""

from __future__ import annotations


class DzsrError(Exception):
    """Base class of every error dzsr reports to a user. ``exit_code`` is the process exit status."""

    exit_code = 1


class ConfigError(DzsrError):
    """Invalid options or config file."""

    exit_code = 2


class InputError(DzsrError):
    """An input file is missing, unreadable, corrupt or of an unsupported kind."""

    exit_code = 3


class AlignmentError(DzsrError):
    """Two photos cannot be registered: no overlap, tele wider than the wide, too few matches."""

    exit_code = 4


class TeleNotFoundError(AlignmentError):
    """The tele is not found in the wide photo, or covers too little of it to be used (no overlap, an
    implausible or mostly outside footprint, too small a footprint, too little consistent area).

    ``dzsr zoom`` then zooms the wide photo without the reference (unless ``--require-ref``); photos given
    in the wrong order stay a plain :class:`AlignmentError`.
    """


class DatasetError(DzsrError):
    """A prepared dataset is missing, corrupt, of another version, or has no usable pair."""

    exit_code = 5


class ResourceError(DzsrError):
    """The job does not fit: image too large for memory, out of (GPU) memory."""

    exit_code = 6


class OutputError(DzsrError):
    """An output cannot be written: its folder cannot be made or written to, or the disk is full."""

    exit_code = 8


class WeightsError(DzsrError):
    """Pretrained weights (ImageNet trunks or a dzsr checkpoint) are missing or unusable."""

    exit_code = 7

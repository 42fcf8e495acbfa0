"""Torch devices by name, and the memory free on them."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dzcli.errors import ConfigError

__all__ = ["available_memory", "is_out_of_memory", "resolve_device"]

_OOM_TEXTS = (
    "out of memory",  # CUDA, MPS
    "can't allocate memory",  # the CPU allocator
    "could not create a primitive",  # oneDNN under memory pressure
)


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` into an available torch device.

    ``auto`` picks CUDA, then MPS, then the CPU.

    Raises:
        ConfigError: unknown name, or a device that is not available here.
    """
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = spec.strip().lower()
        if text == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            mps = getattr(torch.backends, "mps", None)
            return torch.device("mps") if mps is not None and mps.is_available() else torch.device("cpu")
        try:
            dev = torch.device(text)
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!s}: CUDA is not available on this machine (use --device cpu)")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!s}: only {torch.cuda.device_count()} CUDA device(s) here")
        return torch.device("cuda", index)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device {spec!s}: MPS is not available on this machine (use --device cpu)")
        return dev
    if dev.type != "cpu":
        raise ConfigError(f"unsupported device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


def available_memory(device: torch.device) -> int:
    """Bytes free for a new allocation: free VRAM on CUDA, available RAM otherwise (MPS shares RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (in any of the ways torch and oneDNN say it)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(t in text for t in _OOM_TEXTS)

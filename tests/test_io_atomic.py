"""Atomic writes: permissions, failure modes named by their target, stale temporary files."""

from __future__ import annotations

import errno
import io
import os
import stat
import sys
from pathlib import Path

import pytest
import torch

from dzcli.errors import OutputError
from dzcli.io.atomic import (
    check_output,
    open_atomic,
    remove_stale_temps,
    remove_stale_temps_in,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)

posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions and advisory locks")


@posix
def test_new_files_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "x")
        write_json_atomic(tmp_path / "b.json", {"a": 1})
        write_atomic(tmp_path / "c.pt", lambda fh: torch.save({"a": torch.zeros(2)}, fh))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert torch.load(tmp_path / "c.pt")["a"].shape == (2,)


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(fh: object) -> None:
        raise ValueError("encoder bug")

    with pytest.raises(ValueError, match="encoder bug"):
        write_atomic(target, fail)
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]


def test_torch_runtime_error_of_a_failed_write_names_the_target(tmp_path: Path) -> None:
    """torch.save wraps a full disk in a RuntimeError; the user sees the target and the problem."""

    def full(fh: object) -> None:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        )

    with pytest.raises(OutputError, match=r"resume\.pt: cannot write: .*file write failed") as info:
        write_atomic(tmp_path / "resume.pt", full)
    assert ".tmp" not in str(info.value)
    assert os.listdir(tmp_path) == []


@posix
def test_stale_temp_of_a_killed_run_is_removed_but_a_live_one_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    stale = tmp_path / ".out.png.0123456789ab.tmp"
    stale.write_bytes(b"")  # what kill -9 during the write leaves
    other = tmp_path / ".out.png.notours.tmp"
    other.write_bytes(b"")
    with open_atomic(target) as fh:
        live = Path(fh.name)
        assert remove_stale_temps(target) == [stale]
        assert live.exists() and other.exists()  # the file being written now, and a name not of our pattern
        fh.write(b"data")
    assert target.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.png.notours.tmp", "out.png"]


@posix
def test_every_stale_temp_in_a_folder_is_removed(tmp_path: Path) -> None:
    """A killed run may have been writing any of a folder's files (a checkpoint, a crop): all are found."""
    stale = [
        tmp_path / ".best.safetensors.00aa11bb22cc.tmp",
        tmp_path / ".a_centre_bicubic.png.0123456789ab.tmp",
    ]
    for p in stale:
        p.write_bytes(b"partial")
    (tmp_path / ".keep.tmp").write_bytes(b"")  # not our pattern
    with open_atomic(tmp_path / "live.png") as fh:
        assert sorted(remove_stale_temps_in(tmp_path)) == sorted(stale)
        fh.write(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep.tmp", "live.png"]
    assert remove_stale_temps_in(tmp_path / "missing") == []


@pytest.mark.parametrize(
    ("free", "text"), [(512, "512 B"), (1024, "1.0 KiB"), (5 * 2**20 // 2, "2.5 MiB"), (40 * 2**30, "40 GiB")]
)
def test_space_is_said_in_units_a_person_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int, text: str
) -> None:
    class Disk:
        pass

    Disk.free = free
    monkeypatch.setattr("dzcli.io.atomic.shutil.disk_usage", lambda p: Disk())
    with pytest.raises(OutputError, match=rf"\({text} free, about 64 TiB needed\)"):
        check_output(tmp_path / "out.png", need_bytes=2**46)


def test_a_disk_that_fills_mid_write_is_named_even_when_closing_fails_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a file whose write failed tries to flush its buffer again and fails again: that second error
    must not replace the one naming the target (`error: No space left on device`, with no file)."""

    class FullDisk(io.BufferedRandom):
        def flush(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dzcli.io.atomic.open", lambda p, mode: FullDisk(io.FileIO(p, mode)), raising=False)
    target = tmp_path / "out.png"
    with pytest.raises(OutputError, match=r"out\.png: cannot write: no space left on device"):
        write_atomic(target, lambda fh: fh.write(b"pixels"))
    assert list(tmp_path.iterdir()) == []


def test_check_output_finds_problems_before_the_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"out\.png: cannot write, .*file is a file, not a folder"):
        check_output(blocker / "out.png")
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(OutputError, match=r"out\.png: not enough free space .* about 4194304 TiB needed"):
        check_output(tmp_path / "out.png", need_bytes=2**62)
    check_output(tmp_path / "new" / "out.png", need_bytes=1)  # a folder that can be made is fine
    assert (tmp_path / "new").is_dir() and not any((tmp_path / "new").iterdir())


@posix
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_check_output_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"ro/out\.png: cannot write: permission denied"):
            check_output(ro / "out.png")
    finally:
        ro.chmod(0o755)

"""The command line as a user runs it: exit codes, one-line errors, the summary table."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from dzcli import __version__
from dzcli.cli import app

runner = CliRunner()


def test_version_and_help() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for command in ("prepare", "simulate"):
        assert command in res.output


def test_prepare_prints_the_table(captures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    res = runner.invoke(app, ["prepare", str(captures_dir), str(out), "--scale", "2"], terminal_width=200)
    assert res.exit_code == 0, res.output
    for name in ("life", "picos", "seeding"):
        assert name in res.output
    assert "3 of 3 pairs usable" in res.output
    assert (out / "manifest.json").is_file()


def test_missing_source_is_a_one_line_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["prepare", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert res.exit_code == 3
    assert "nope" in res.output and "no such folder" in res.output
    assert "Traceback" not in res.output


def test_no_usable_pair_exits_non_zero(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "life.jpg", src / "a_uw.jpg")
    shutil.copy(Path(__file__).parent / "data" / "picos.jpg", src / "a_tele.jpg")
    res = runner.invoke(app, ["prepare", str(src), str(tmp_path / "out")], terminal_width=200)
    assert res.exit_code == 5
    assert "no usable pair" in res.output


def test_bad_scale_is_a_config_error(captures_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["prepare", str(captures_dir), str(tmp_path / "out"), "--scale", "3"])
    assert res.exit_code == 2 and "--scale" in res.output


def test_unwritable_output_is_a_one_line_error(captures_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["prepare", str(captures_dir), str(blocker / "data")], terminal_width=300)
    assert res.exit_code == 8, res.output  # an output that cannot be written (README: exit codes)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "file/data" in errors[0] and "Traceback" not in res.output


def test_zoom_ref_blend_default_is_the_pipelines() -> None:
    import inspect

    from dzcli.cli import zoom as zoom_command
    from dzcli.pipeline.zoom import REF_BLEND, ZoomConfig

    default = inspect.signature(zoom_command).parameters["ref_blend"].default
    assert default == REF_BLEND == ZoomConfig(inputs=(Path("a"), Path("b"))).ref_blend

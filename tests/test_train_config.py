"""``dzsr train`` configuration and command line: file + flags, the saved config, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dzcli.cli import app
from dzcli.errors import ConfigError
from dzcli.pipeline.train import resolve_train_config
from dzcli.train.config import TrainConfig, read_config_file, resolve_config
from tests.train_data import make_dataset

runner = CliRunner()
TOML = """
preset = "tiny"
trunk-weights = "random"
loss = "l1"
steps = 2
batch_size = 2
patch_size = 16
seed = 3
device = "cpu"
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "data", n_train=2, n_test=1, size=(32, 32))


def test_defaults_document_the_recipe() -> None:
    cfg = TrainConfig(data=Path("d"), out=Path("o"))
    assert (cfg.lr, cfg.aux_lr, cfg.batch_size, cfg.patch_size, cfg.ema_decay) == (1e-4, 5e-5, 16, 48, 0.999)
    assert (cfg.loss, cfg.sw_weight, cfg.sw_target, cfg.position_weight) == ("l1+losw", 0.08, "quiet", 100.0)
    assert cfg.model_name == "dzsr-base"


def test_file_then_flags(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(TOML)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"steps": 5, "lr": 1}))
    layers = [
        (read_config_file(tmp_path / "a.toml"), "a"),
        (read_config_file(tmp_path / "b.yaml"), "b"),
        ({"steps": 7, "seed": None}, "flags"),
    ]
    cfg = resolve_config(*layers, data=Path("d"), out=Path("o"))
    assert (cfg.steps, cfg.seed, cfg.lr, cfg.trunk_weights, cfg.preset) == (7, 3, 1.0, "random", "tiny")
    assert isinstance(cfg.lr, float)


def test_yaml_exponent_numbers_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads ``lr: 1e-4`` as the string '1e-4' (YAML 1.1 wants 1.0e-4); a float field takes it."""
    (tmp_path / "c.yaml").write_text("lr: 1e-4\naux_lr: 2.5E-5\n")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["lr"] == "1e-4"
    cfg = resolve_config((read_config_file(tmp_path / "c.yaml"), "c"), data=Path("d"), out=Path("o"))
    assert (cfg.lr, cfg.aux_lr) == (1e-4, 2.5e-5)
    (tmp_path / "bad.yaml").write_text("lr: fast\n")
    with pytest.raises(ConfigError, match="lr must be float, not 'fast'"):
        resolve_config((read_config_file(tmp_path / "bad.yaml"), "bad"), data=Path("d"), out=Path("o"))


@pytest.mark.parametrize(
    ("text", "suffix", "match"),
    [
        ("stepz = 3", ".toml", "unknown key 'stepz'; known keys: data, out, preset"),
        ("steps = '3'", ".toml", "steps must be int, not '3'"),
        ("amp = 1", ".toml", "amp must be bool"),
        ("[train]\nsteps = 3", ".toml", "flat"),
        ("steps: [1", ".yaml", r"c\.yaml: not valid YAML \(line 1, column 10: expected ',' or ']'"),
        ("lr: 1\n\tsteps: 3", ".yaml", r"not valid YAML \(line 2, column 1: found character '\\t'"),
        ("- 1\n- 2", ".yaml", "table of key = value"),
        ("steps = 3", ".ini", "must be .toml"),
        ("preset = 'tzsr-small'", ".toml", "--triple with its size"),
        ("loss = 'l2'", ".toml", "loss must be one of"),
        ("sw_target = 'gt'", ".toml", "sw_target must be one of quiet, tele"),
        ("ema_decay = 1.0", ".toml", r"ema_decay must be in \[0, 1\)"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, suffix: str, match: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        resolve_config((read_config_file(path), str(path)), data=Path("d"), out=Path("o"))
    assert "\n" not in str(info.value)  # one line, as every error


def test_cli_config_flags_and_saved_config(data: Path, tmp_path: Path) -> None:
    (tmp_path / "train.toml").write_text(TOML)
    run = tmp_path / "run"
    res = runner.invoke(
        app, ["train", str(data), "--out", str(run), "--config", str(tmp_path / "train.toml"), "--steps", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "3 steps" in res.output and "best validation PSNR" in res.output
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["steps"] == 3 and saved["seed"] == 3 and saved["preset"] == "tiny" and saved["lr"] == 1e-4
    assert saved["data"] == str(data)
    # The saved config is a valid config file, and resuming with more steps continues the run.
    res = runner.invoke(app, ["train", str(data), "--out", str(run), "--resume", "--steps", "4"])
    assert res.exit_code == 0, res.output
    assert "resumed at 3" in res.output
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 4


def test_a_run_saved_before_sw_target_existed_resumes_against_the_tele(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    saved = resolve_train_config(data, run, flags={"preset": "tiny"}).to_dict()
    del saved["sw_target"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert resolve_train_config(data, run, resume=True).sw_target == "tele"
    assert resolve_train_config(data, tmp_path / "new").sw_target == "quiet"


def _manifest(data: Path, tmp: Path, **changes) -> Path:
    import shutil

    copy = tmp / "copy"
    shutil.copytree(data, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(changes)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    ("case", "code", "match"),
    [
        ("missing", 5, "not a dzsr dataset"),
        ("older", 5, "format version 0"),
        ("no-test", 5, "no usable pair in the test split"),
        ("unknown-key", 2, "unknown key 'sted'"),
        ("bad-preset", 2, "preset must be one of"),
        ("bad-sw-target", 2, "sw_target must be one of quiet, tele, not 'truth'"),
    ],
)
def test_cli_errors_are_one_line(data: Path, tmp_path: Path, case: str, code: int, match: str) -> None:
    args = ["--preset", "tiny", "--steps", "1", "--device", "cpu"]
    root = data
    if case == "missing":
        root = tmp_path / "nothing"
    elif case == "older":
        root = _manifest(data, tmp_path, version=0)
    elif case == "no-test":
        root = make_dataset(tmp_path / "notest", n_train=2, n_test=0, size=(32, 32))
    elif case == "unknown-key":
        (tmp_path / "c.yaml").write_text("sted: 3\n")
        args += ["--config", str(tmp_path / "c.yaml")]
    elif case == "bad-sw-target":
        args += ["--sw-target", "truth"]
    else:
        args[1] = "huge"
    res = runner.invoke(app, ["train", str(root), "--out", str(tmp_path / "run"), *args], terminal_width=400)
    assert res.exit_code == code, res.output
    assert "error:" in res.output and "Traceback" not in res.output
    assert match in " ".join(res.output.split())

"""DDP: two CPU processes (gloo) run the same code as ``torchrun``: own patches, synchronised weights."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from dzsr_models import create_model
from tests.train_data import make_dataset


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, data: str, out: str, report: str) -> None:
    """What ``torchrun`` sets up, then the ordinary training entry point."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    from dzcli.pipeline.train import resolve_train_config, train
    from dzcli.train.loop import Trainer, sample_indices

    trainers: list[Trainer] = []
    original = Trainer.run

    def run(self: Trainer, progress=None):  # keep a handle on the trainer to report its weights
        trainers.append(self)
        return original(self, progress)

    Trainer.run = run  # type: ignore[method-assign]
    flags = {
        "preset": "tiny",
        "trunk_weights": "random",
        "loss": "l1+losw",
        "steps": 3,
        "batch_size": 2,
        "patch_size": 16,
        "device": "cpu",
        "log_every": 1,
        "val_every": 3,
        "save_every": 3,
    }
    summary = train(resolve_train_config(Path(data), Path(out), flags=flags))
    trainer = trainers[0]
    torch.save(
        {
            "params": [p.detach().clone() for p in trainer.objective.parameters()],
            "step0_lr": trainer.patches.batch(sample_indices(0, 2, rank, world))["lr"],
            "world": summary.world,
            "in_sync": summary.in_sync,
        },
        Path(report) / f"rank{rank}.pt",
    )


def test_two_cpu_processes_train_in_sync(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n_train=3, n_test=1, size=(32, 40))
    run = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(run), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2 and r0["in_sync"] and r1["in_sync"]
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"], strict=True))
    # Rank 0 alone wrote: one line per step and a validation, not two.
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "train"] == [1, 2, 3]
    assert sum(m["kind"] == "val" for m in lines) == 1
    assert (run / "checkpoints" / "last.safetensors").is_file() and (run / "resume.pt").is_file()
    # The ranks trained on different patches, and the weights moved from the seeded initialisation.
    assert not torch.equal(r0["step0_lr"], r1["step0_lr"])
    torch.manual_seed(0)
    fresh = create_model("dzsr-tiny", scale=2, matcher_weights="random")
    assert not torch.equal(next(fresh.parameters()), r0["params"][0])

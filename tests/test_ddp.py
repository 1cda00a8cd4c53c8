"""Training under torchrun: two CPU processes on the gloo backend train one model with
DistributedDataParallel; rank 0 alone writes the checkpoint, which loads and evaluates like a
single-process one trained on the same data and budget."""

import os
import socket
import subprocess
import sys

import pytest

from edgefuse.checkpoint import load_checkpoint, read_config
from edgefuse.data import load_dataset
from edgefuse.inference import subset_accuracy

ARGS = ["--data", "sensorscenes", "--train-size", "600", "--val-size", "120", "--max-steps", "80", "--dim", "16"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_train_a_checkpoint_that_evaluates_like_a_single_process_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "edgefuse", "train", *ARGS, "--out", str(ddp)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("trained gated") == 1  # rank 0 reports, rank 1 does not
    assert "over 2 ranks (64 each)" in run.stdout
    one = subprocess.run(
        [sys.executable, "-m", "edgefuse", "train", *ARGS, "--out", str(single), "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = read_config(ddp), read_config(single)
    assert a["model"] == b["model"]  # the same architecture and input statistics
    assert a["info"]["plan"]["ranks"] == 2 and b["info"]["plan"]["ranks"] == 1
    assert a["info"]["plan"]["steps"] == b["info"]["plan"]["steps"] == 80
    test = load_dataset("sensorscenes")["test"]
    acc = {k: subset_accuracy(load_checkpoint(p)[0], test) for k, p in (("ddp", ddp), ("single", single))}
    assert set(acc["ddp"]) == set(acc["single"])
    full = "camera+lidar+radar"
    assert acc["ddp"][full] > 0.4 and acc["single"][full] > 0.4  # both learned (chance: 1/6)
    assert abs(acc["ddp"][full] - acc["single"][full]) < 0.1

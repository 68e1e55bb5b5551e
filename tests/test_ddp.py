"""Two-process CPU DDP (gloo) through the real `convcast` command equals one process.

Same global batch (2 x 4 = 8), deterministic data: the training sampler splits each epoch's
seeded permutation over the ranks, so every global step sees the 8 windows one process sees, and
DDP's gradient average equals the one-process mean. Weights and the synced val/loss must agree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import torch
from conftest import FIT_QUIET, cli

from convcast.train.checkpoint import read_checkpoint

ARGS = ["--model.model_name", "next_frame", "--model.model_kwargs", "{hidden_channels: 3}",
        "--data", "convcast.data.MovingShapesDataModule", "--data.train_size", "24",
        "--data.val_size", "8", "--data.frame_size", "12", "--data.size", "3",
        "--trainer.max_steps", "3", "--trainer.num_sanity_val_steps", "0", "--images", "null",
        "--lr_monitor", "null"]


def _val_loss(ckpt: dict) -> float:
    states = [s for k, s in ckpt["callbacks"].items() if k.startswith("Checkpoint")]
    return float(states[0]["best_model_score"])


def test_ddp_two_processes_match_one(tmp_path) -> None:
    cli("fit", *FIT_QUIET, *ARGS, "--data.batch_size", 8, "--trainer.default_root_dir",
        tmp_path / "one")
    exe = shutil.which("convcast")
    cmd = [exe] if exe else [sys.executable, "-m", "convcast.cli.main"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    proc = subprocess.run(
        [*cmd, "fit", *FIT_QUIET, *ARGS, "--data.batch_size", "4", "--trainer.strategy", "ddp",
         "--trainer.devices", "2", "--trainer.default_root_dir", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = read_checkpoint(tmp_path / "one/lightning_logs/version_0/checkpoints/last.ckpt")
    two = read_checkpoint(tmp_path / "two/lightning_logs/version_0/checkpoints/last.ckpt")
    assert one["global_step"] == two["global_step"] == 3
    for k, v in one["state_dict"].items():
        torch.testing.assert_close(two["state_dict"][k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert abs(_val_loss(one) - _val_loss(two)) <= 1e-6 * max(1.0, _val_loss(one))

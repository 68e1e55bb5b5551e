"""Streaming metrics under 2-process CPU DDP (gloo) give the single-process numbers."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from convcast.metrics import MSE, FrameMetrics, SkillScores, frame_metrics, skill_scores

THRESHOLDS = [0.2, 0.5]


def data():
    """The same [B=4, T=3, C=1, 16, 16] pair in every process, plus a mask."""
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 1, 16, 16, generator=g)
    pred = (target + 0.2 * torch.randn(target.shape, generator=g)).clamp(0, 1)
    mask = torch.rand(target.shape, generator=g) > 0.2
    return pred, target, mask


def worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        pred, target, mask = data()
        half = slice(2 * rank, 2 * rank + 2)  # each rank streams half of the batch
        frame, skill, mse = FrameMetrics(), SkillScores(THRESHOLDS, scales=[3]), MSE()
        for b in range(half.start, half.stop):  # one sample per step
            frame.update(pred[b:b + 1], target[b:b + 1])
            skill.update(pred[b:b + 1], target[b:b + 1], mask=mask[b:b + 1])
            mse.update(pred[b:b + 1], target[b:b + 1])
        torch.save({"frame": frame.compute(), "skill": skill.compute(), "mse": mse.compute()},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_compute_equals_single_process(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    pred, target, mask = data()
    frame = frame_metrics(pred, target)
    skill = skill_scores(pred, target, THRESHOLDS, mask=mask, scales=[3])
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["mse"], frame["mse"], rtol=1e-10, atol=1e-12)
        for name, value in frame.items():
            torch.testing.assert_close(got["frame"][name], value, rtol=1e-10, atol=1e-12)
        assert set(got["skill"]) == set(skill)
        for name, value in skill.items():
            torch.testing.assert_close(got["skill"][name], value, rtol=1e-10, atol=1e-12,
                                       equal_nan=True)

"""benchmarks/video_experiment.py: the noise of the test windows (no training run here)."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from video_experiment import block_bootstrap, window_mse

from convcast.models import create_model


def test_block_bootstrap_interval_covers_the_mean_and_widens_with_the_block() -> None:
    rng = np.random.default_rng(0)
    diff = np.repeat(rng.normal(0.5, 2.0, 12), 20)  # 12 independent shots, 20 windows each
    lo, hi = block_bootstrap(diff, 20)
    assert lo < diff.mean() < hi
    narrow = block_bootstrap(diff, 1)  # as if every window were independent: too confident
    assert hi - lo > 2 * (narrow[1] - narrow[0])
    assert block_bootstrap(np.full(40, 3.0), 20) == [3.0, 3.0]
    assert block_bootstrap(np.full(24, 3.0), 20) is None  # under two blocks: no estimate
    assert block_bootstrap(diff, 20) == [lo, hi]  # seeded


def test_window_mse_is_the_tables_mse_per_window() -> None:
    x = torch.rand(5, 3, 1, 8, 8)
    y = torch.rand(5, 2, 1, 8, 8)
    loader = [(x[:3], y[:3]), (x[3:], y[3:])]
    got = window_mse(create_model("persistence"), loader, None)
    want = ((x[:, -1:] - y) ** 2).sum(dim=(-3, -2, -1)).mean(dim=1)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)

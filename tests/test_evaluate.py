"""`evaluate`: every model on the same batches, per metric and lead time."""

from __future__ import annotations

import pytest
import torch

from convcast.data.units import pixel_to_rainrate
from convcast.metrics import frame_metrics, skill_scores
from convcast.models import create_model
from convcast.train.evaluate import evaluate


def _batches(n: int = 3, b: int = 4, mask: bool = False):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.rand(b, 3, 1, 16, 16, generator=g)
        y = torch.rand(b, 2, 1, 16, 16, generator=g)
        out.append((x, y, torch.rand(b, 2, 1, 16, 16, generator=g) > 0.2) if mask else (x, y))
    return out


def test_streaming_equals_one_call_on_all_data() -> None:
    batches = _batches()
    half = lambda x, h: x[:, -1:].expand(-1, h, -1, -1, -1) * 0.5  # noqa: E731
    models = {"persistence": create_model("persistence"), "half": half}
    res = evaluate(models, batches, thresholds=[0.5, 2.0], to_physical=pixel_to_rainrate)
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    for name, pred in (("persistence", xs[:, -1:].expand(-1, 2, -1, -1, -1)),
                       ("half", xs[:, -1:].expand(-1, 2, -1, -1, -1) * 0.5)):
        want = frame_metrics(pred, ys)
        for k in ("mse", "mae", "ssim", "psnr"):
            assert res[name][k].shape == (2,)
            torch.testing.assert_close(res[name][k].double(), want[k].double(), rtol=1e-5,
                                       atol=1e-6)
        skill = skill_scores(pixel_to_rainrate(pred), pixel_to_rainrate(ys), [0.5, 2.0])
        assert res[name]["csi"].shape == (2, 2)
        torch.testing.assert_close(res[name]["csi"].double(), skill["csi"].double(), rtol=1e-5,
                                   atol=1e-6)


def test_masks_max_batches_and_errors() -> None:
    res = evaluate({"p": create_model("persistence")}, _batches(mask=True), max_batches=2)
    assert "ssim" not in res["p"] and res["p"]["mse"].shape == (2,)
    one = evaluate({"p": create_model("persistence")}, [(x, y[:, :1]) for x, y in _batches(1)])
    assert one["p"]["mse"].shape == (1,)  # a single lead time stays a [T] tensor
    with pytest.raises(ValueError, match="no batch"):
        evaluate({"p": create_model("persistence")}, [])
    with pytest.raises(ValueError, match="returned"):
        evaluate({"bad": lambda x, h: x}, _batches(1))
    with pytest.raises(ValueError, match="at least one model"):
        evaluate({}, _batches(1))

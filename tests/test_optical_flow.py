"""The optical_flow baseline: motion recovered, persistence beaten, tensors in and out."""

import numpy as np
import pytest
import torch

from convcast.data.synthetic.radar import simulate_radar
from convcast.data.units import dbz_to_pixel
from convcast.models import create_model, is_baseline, list_models
from convcast.models import optical_flow as of


def translating(n: int, u: tuple[float, float], seed: int = 0, size: int = 48,
                frames: int = 10) -> torch.Tensor:
    """`[n, frames, 1, size, size]` pixels of frozen synthetic rain moving by `u` (rows, cols)."""
    seqs = [simulate_radar(np.random.default_rng([seed, i]), frames, size, lifetime=1e9,
                           growth=0.0, wet_threshold=(0.0, 0.3),
                           motion=(np.array(u), np.zeros((2, 2))))[0] for i in range(n)]
    return torch.from_numpy(dbz_to_pixel(np.stack(seqs)))[:, :, None]


def test_registered_as_baseline():
    assert "optical_flow" in list_models() and is_baseline("optical_flow")


def test_recovers_a_known_translation():
    seq = translating(2, (1.0, -1.5))
    model = create_model("optical_flow")
    model(seq[:, :5], 2)
    v = model.last_velocity  # [B, C, 2 (x, y), H, W] px/step
    centre = v[..., 12:36, 12:36]
    assert np.median(centre[:, :, 0]) == pytest.approx(-1.5, abs=0.3)  # x: columns
    assert np.median(centre[:, :, 1]) == pytest.approx(1.0, abs=0.3)  # y: rows


def test_beats_persistence_on_translation():
    seq = translating(3, (0.8, 0.6), seed=1)
    x, y = seq[:, :5], seq[:, 5:]
    flow = create_model("optical_flow")(x, 5)
    stay = create_model("persistence")(x, 5)
    inner = (..., slice(10, 38), slice(10, 38))  # rain entering from outside is unknowable
    mse_flow = ((flow - y)[inner] ** 2).mean()
    mse_stay = ((stay - y)[inner] ** 2).mean()
    assert mse_flow < 0.5 * mse_stay


def test_tensor_contract_dtype_device_channels():
    x = torch.rand(2, 3, 2, 16, 16, dtype=torch.float64)
    out = create_model("optical_flow", in_channels=2)(x, 4)
    assert out.shape == (2, 4, 2, 16, 16) and out.dtype == torch.float64
    assert out.device == x.device and torch.isfinite(out).all()
    one = create_model("optical_flow")(torch.rand(1, 1, 1, 16, 16), 3)  # one frame: persistence
    assert one.shape == (1, 3, 1, 16, 16)


def test_blank_and_constant_inputs_give_no_motion():
    x = torch.full((1, 4, 1, 16, 16), 0.3)
    assert torch.allclose(create_model("optical_flow")(x, 2), x[:, -1:].expand(-1, 2, -1, -1, -1))


def test_bad_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="lucaskanade"):
        create_model("optical_flow", method="rover")
    with pytest.raises(ValueError, match="motion_frames"):
        create_model("optical_flow", motion_frames=1)


def test_missing_pysteps_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("pysteps"):
            raise ImportError("no pysteps")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"pip install convcast\[nowcast\]"):
        of.import_pysteps()

"""Semi-Lagrangian advection in torch against pysteps, on known shifts, and with gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convcast.motion.advect import advect, displacements

pysteps_sl = pytest.importorskip("pysteps.extrapolation.semilagrangian")


def smooth_case(H: int = 24, W: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A smooth field and a smooth, rotating-and-drifting motion (x then y, px/step)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    field = np.exp(-((xx - 12) ** 2 + (yy - 10) ** 2) / 40.0) + 0.2 * np.sin(xx / 4.0)
    u = 1.2 + 0.4 * np.sin(yy / 6.0)
    v = -0.6 + 0.3 * np.cos(xx / 5.0)
    return field, np.stack([u, v])


@pytest.mark.parametrize("n_iter", [0, 1, 2])
@pytest.mark.parametrize("outval", ["min", 0.25])
def test_matches_pysteps_on_a_smooth_field(n_iter: int, outval) -> None:
    field, vel = smooth_case()
    ref = pysteps_sl.extrapolate(field, vel, 7, outval=outval, n_iter=n_iter)  # [7, H, W]
    f = torch.from_numpy(field)[None, None]  # [1, 1, H, W]
    out = advect(f, torch.from_numpy(vel)[None], 7, outval=outval, n_iter=n_iter)
    assert out.shape == (1, 7, 1, *field.shape) and out.dtype == torch.float64
    np.testing.assert_allclose(out[0, :, 0].numpy(), ref, rtol=0, atol=1e-12)
    out32 = advect(f.float(), torch.from_numpy(vel).float()[None], 7, outval=outval, n_iter=n_iter)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32[0, :, 0].numpy(), ref, rtol=0, atol=1e-6)


def test_batched_items_and_channels_match_one_by_one() -> None:
    field, vel = smooth_case()
    frames = torch.stack([torch.from_numpy(field), torch.from_numpy(field[::-1].copy())])
    frames = torch.stack([frames, 2 * frames], dim=1)  # [2, 2, H, W]: items and channels
    motion = torch.stack([torch.from_numpy(vel), -torch.from_numpy(vel)])  # [2, 2, H, W]
    out = advect(frames, motion, 4)  # [2, 4, 2, H, W]
    for b in range(2):
        for c in range(2):
            ref = pysteps_sl.extrapolate(frames[b, c].numpy(), motion[b].numpy(), 4,
                                         outval="min")
            np.testing.assert_allclose(out[b, :, c].numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_integer_translation_is_exact(dtype: torch.dtype) -> None:
    H, W, dx, dy = 16, 20, 2, -1
    frame = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(0), dtype=dtype)
    motion = torch.tensor([float(dx), float(dy)], dtype=dtype).view(1, 2, 1, 1).expand(1, 2, H, W)
    out = advect(frame, motion.contiguous(), 3, outval=-1.0)  # [1, 3, 1, H, W]
    for t in (1, 2, 3):  # F_t(x, y) = F_0(x - t dx, y - t dy), outval where that is outside
        want = torch.full((H, W), -1.0, dtype=dtype)
        want[: H + t * dy, t * dx:] = frame[0, 0, -t * dy:, : W - t * dx]
        if dtype == torch.float32:  # computed in float64: exact after rounding to float32
            assert torch.equal(out[0, t - 1, 0], want)
        else:  # grid_sample's normalised coordinates: exact to rounding
            torch.testing.assert_close(out[0, t - 1, 0], want, rtol=0, atol=1e-12)


def test_edge_values_continue_outside_the_frame() -> None:
    """`outval="edge"`: what enters the frame is its nearest edge pixel (a panning camera)."""
    H, W, dx, dy = 10, 12, 2, -1
    frame = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(1))
    motion = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, H, W)
    out = advect(frame, motion.contiguous(), 3, outval="edge")  # [1, 3, 1, H, W]
    rows, cols = torch.arange(H)[:, None], torch.arange(W)[None, :]
    for t in (1, 2, 3):  # F_t(x, y) = F_0(clamp(x - t dx), clamp(y - t dy))
        want = frame[0, 0, (rows - t * dy).clamp(0, H - 1), (cols - t * dx).clamp(0, W - 1)]
        assert torch.equal(out[0, t - 1, 0], want)


def test_zero_motion_is_persistence_and_displacements_accumulate() -> None:
    frame = torch.rand(2, 1, 8, 9)
    assert torch.equal(advect(frame, torch.zeros(2, 2, 8, 9), 5), frame[:, None].expand(-1, 5,
                                                                                        -1, -1, -1))
    disp = displacements(torch.full((1, 2, 8, 9), 0.5, dtype=torch.float64), 4)
    assert torch.allclose(disp[0, :, :, 3, 3], -0.5 * torch.arange(1, 5.0)[:, None].double())


def test_differentiable_in_frame_and_motion() -> None:
    field, vel = smooth_case(12, 14)
    f = torch.from_numpy(field)[None, None].requires_grad_()
    m = torch.from_numpy(vel)[None].requires_grad_()
    advect(f, m, 3, outval=0.0).square().sum().backward()
    assert f.grad is not None and m.grad is not None
    assert f.grad.abs().sum() > 0 and m.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda a: advect(a, m.detach(), 2, outval=0.0),
                                    (f.detach().clone().requires_grad_(),))


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="motion must be"):
        advect(torch.rand(1, 1, 8, 8), torch.rand(1, 3, 8, 8), 2)
    with pytest.raises(ValueError, match="frame must be"):
        advect(torch.rand(1, 8, 8), torch.rand(1, 2, 8, 8), 2)
    with pytest.raises(ValueError, match="horizon"):
        advect(torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 8), 0)
    with pytest.raises(ValueError, match="outval"):
        advect(torch.rand(1, 1, 8, 8), torch.rand(1, 2, 8, 8), 1, outval="max")


def test_optical_flow_video_is_a_baseline_that_continues_the_edges() -> None:
    """`optical_flow_video` (a registered variant, `--compare`-able) advects a panning scene
    with its edge values, where `optical_flow` fills the radar's no-echo minimum."""
    from convcast.cli.report import compare_model

    name, model = compare_model("optical_flow_video", 1)
    assert name == "optical_flow_video" and model.outval == "edge"
    frame = np.linspace(0.2, 0.8, 16 * 16).reshape(16, 16)
    out = model.extrapolate(frame, np.stack([np.full((16, 16), 1.0), np.zeros((16, 16))]), 2)
    assert np.array_equal(out[1][:, :2], np.repeat(frame[:, :1], 2, axis=1))  # edge continued
    radar = compare_model("optical_flow", 1)[1].extrapolate(frame, np.stack(
        [np.full((16, 16), 1.0), np.zeros((16, 16))]), 2)
    assert np.array_equal(radar[1][:, :2], np.full((16, 2), frame.min()))

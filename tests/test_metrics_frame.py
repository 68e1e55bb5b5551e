"""Frame metrics against numpy and scikit-image, streaming, masks and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from convcast.metrics import (
    MAE,
    MSE,
    PSNR,
    SSIM,
    FrameMetrics,
    MAEPixel,
    MSEPixel,
    frame_metrics,
    mae,
    mae_pixel,
    mse,
    mse_pixel,
    psnr,
    ssim,
)


def smooth_pair(B=3, T=4, C=1, H=24, W=20, noise=0.15, seed=0):
    """A target with structure (blurred noise) and a noisy prediction of it, both in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, T, C, H, W, generator=g)
    x = torch.nn.functional.avg_pool2d(x.view(-1, 1, H, W), 5, 1, 2).view(B, T, C, H, W)
    target = (x - x.min()) / (x.max() - x.min())
    pred = (target + noise * torch.randn(B, T, C, H, W, generator=g)).clamp(0, 1)
    return pred, target


def per_frame(fn, pred, target):
    """Apply fn(target_frame, pred_frame) to each [C, H, W] frame: numpy [B, T]."""
    p, t = pred.double().numpy(), target.double().numpy()
    B, T = p.shape[:2]
    return np.array([[fn(t[b, i], p[b, i]) for i in range(T)] for b in range(B)])


# ----------------------------------------------------------------------------- MSE / MAE

def test_mse_mae_conventions_match_numpy():
    pred, target = smooth_pair(C=2)
    p, t = pred.double().numpy(), target.double().numpy()
    err = p - t
    # per frame: sum over C, H, W, mean over B (PredRNN / OpenSTL)
    np.testing.assert_allclose(mse(pred, target), (err**2).sum((2, 3, 4)).mean(0), rtol=1e-6)
    np.testing.assert_allclose(mae(pred, target), np.abs(err).sum((2, 3, 4)).mean(0), rtol=1e-6)
    # per pixel: mean over B, C, H, W
    np.testing.assert_allclose(mse_pixel(pred, target), (err**2).mean((0, 2, 3, 4)), rtol=1e-6)
    np.testing.assert_allclose(mae_pixel(pred, target), np.abs(err).mean((0, 2, 3, 4)),
                               rtol=1e-6)
    # the two conventions differ by the pixel count of a frame
    np.testing.assert_allclose(mse(pred, target), mse_pixel(pred, target) * 2 * 24 * 20,
                               rtol=1e-6)
    assert mse(pred, target).shape == (4,)
    assert torch.allclose(mse(pred, target, reduction="mean"), mse(pred, target).mean())


def test_mse_of_identical_frames_is_zero():
    _, target = smooth_pair()
    assert torch.all(mse(target, target) == 0) and torch.all(mae_pixel(target, target) == 0)


# ----------------------------------------------------------------------------- SSIM

@pytest.mark.parametrize("C", [1, 3])
def test_ssim_uniform_matches_skimage_defaults(C):
    pred, target = smooth_pair(C=C, seed=C)
    ref = per_frame(lambda t, p: structural_similarity(t, p, data_range=1.0, channel_axis=0),
                    pred, target).mean(0)
    np.testing.assert_allclose(ssim(pred, target), ref, atol=2e-5)
    assert 0.2 < ref.mean() < 0.95  # a regime where a wrong convention would show


def test_ssim_gaussian_matches_skimage_wang():
    pred, target = smooth_pair(seed=3)

    def ref_fn(t, p):
        return structural_similarity(t[0], p[0], data_range=1.0, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)

    ref = per_frame(ref_fn, pred, target).mean(0)
    np.testing.assert_allclose(ssim(pred, target, gaussian=True), ref, atol=2e-5)
    # the two windows really differ, so the option is not a no-op
    assert not torch.allclose(ssim(pred, target), ssim(pred, target, gaussian=True), atol=1e-3)


def test_ssim_edge_cases_match_skimage():
    g = torch.Generator().manual_seed(5)
    zeros, ones = torch.zeros(1, 1, 1, 7, 7), torch.ones(1, 1, 1, 7, 7)
    noise = torch.rand(1, 1, 1, 7, 7, generator=g)
    cases = [(noise, noise), (zeros, ones), (zeros, noise), (0.5 * ones, noise)]
    for a, b in cases:  # 7x7: a single window position
        ref = structural_similarity(b[0, 0, 0].double().numpy(), a[0, 0, 0].double().numpy(),
                                    data_range=1.0)
        assert ssim(a, b).item() == pytest.approx(ref, abs=2e-5)
    assert ssim(noise, noise).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_rejects_frames_smaller_than_window():
    x = torch.rand(1, 1, 1, 6, 9)
    with pytest.raises(ValueError, match="smaller than the 7x7 window"):
        ssim(x, x)


# ----------------------------------------------------------------------------- PSNR

def test_psnr_matches_skimage_per_frame():
    pred, target = smooth_pair(C=2, seed=7)
    ref = per_frame(lambda t, p: peak_signal_noise_ratio(t, p, data_range=1.0), pred, target)
    np.testing.assert_allclose(psnr(pred, target), ref.mean(0), rtol=1e-5)
    # data_range scales the peak: 10*log10(4) dB more for range 2 on the same errors
    np.testing.assert_allclose(psnr(pred, target, data_range=2.0),
                               ref.mean(0) + 10 * np.log10(4), rtol=1e-5)


def test_psnr_perfect_frame_is_capped():
    pred, target = smooth_pair(B=2, T=2)
    pred[0, 1] = target[0, 1]  # one perfect frame
    other = peak_signal_noise_ratio(target[1, 1].double().numpy(), pred[1, 1].double().numpy(),
                                    data_range=1.0)
    assert psnr(pred, target)[1].item() == pytest.approx((100.0 + other) / 2, rel=1e-5)
    assert psnr(pred, target, max_db=60.0)[1].item() == pytest.approx((60.0 + other) / 2,
                                                                      rel=1e-5)
    assert torch.isinf(psnr(pred, target, max_db=None)[1])
    assert torch.isfinite(psnr(pred, target, max_db=None)[0])


# ----------------------------------------------------------------------------- masks

def test_mask_excludes_pixels_from_mse_mae():
    pred, target = smooth_pair(C=2, seed=11)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(target.shape, generator=g) > 0.3
    p, t, m = pred.double().numpy(), target.double().numpy(), mask.numpy()
    err = np.where(m, p - t, 0.0)
    np.testing.assert_allclose(mse(pred, target, mask=mask), (err**2).sum((2, 3, 4)).mean(0),
                               rtol=1e-6)
    np.testing.assert_allclose(mae_pixel(pred, target, mask=mask),
                               np.abs(err).sum((0, 2, 3, 4)) / m.sum((0, 2, 3, 4)), rtol=1e-6)
    # masked pixels may hold anything (NaN = missing radar data) without changing the result
    garbage = torch.where(mask, target, torch.full_like(target, float("nan")))
    other = torch.where(mask, pred, torch.rand(pred.shape, generator=g))
    for fn in (mse, mae, mse_pixel, mae_pixel):
        assert torch.allclose(fn(other, garbage, mask=mask), fn(pred, target, mask=mask))


def test_mask_broadcasts_and_empty_pixel_mask_gives_nan():
    pred, target = smooth_pair(B=2, T=3)
    mask = torch.ones(1, 3, 1, 1, 1, dtype=torch.bool)
    mask[:, 1] = False  # lead time 1 entirely missing
    out = mse_pixel(pred, target, mask=mask)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()
    assert mse(pred, target, mask=mask)[1] == 0  # HKO-7: per-frame sums of nothing are 0
    assert torch.allclose(out[[0, 2]], mse_pixel(pred, target)[[0, 2]])


# ----------------------------------------------------------------------------- input checks

def test_nan_shape_and_range_errors_are_clear():
    pred, target = smooth_pair(B=1, T=2)
    bad = target.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"target has 1 NaN/inf.*mask="):
        mse(pred, bad)
    with pytest.raises(ValueError, match=r"pred has 1 NaN/inf"):
        ssim(bad, target)
    with pytest.raises(ValueError, match=r"pred has shape \(1, 2, 1, 24, 20\) but target"):
        mse(pred, target[:, :1])
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        psnr(pred[0], target[0])
    with pytest.raises(TypeError, match="bool tensor"):
        mse(pred, target, mask=torch.ones_like(pred))
    with pytest.raises(ValueError, match="does not broadcast"):
        mse(pred, target, mask=torch.ones(3, 1, 1, 1, 1, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.as_tensor"):
        mse(pred.numpy(), target)
    with pytest.raises(ValueError, match=r"target has values in .*outside \[0, 1\]"):
        ssim(pred, target * 255)
    with pytest.warns(UserWarning, match=r"pred has values .*clamp"):
        mse(pred + 0.5, target)


def test_range_check_tolerance_and_opt_out(recwarn):
    pred, target = smooth_pair(B=1, T=2)
    mse(pred + 5e-4, target)  # within RANGE_TOL of data_range: silent
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    out = mse(pred * 255, target * 255, data_range=None)  # no range check for raw MSE
    assert torch.allclose(out, mse(pred, target) * 255**2, rtol=1e-5)
    assert torch.allclose(ssim(pred * 255, target * 255, data_range=255.0), ssim(pred, target),
                          atol=1e-5)


# ----------------------------------------------------------------------------- streaming

def test_streamed_metrics_equal_one_call():
    pred, target = smooth_pair(B=6, T=3, seed=21)
    whole = frame_metrics(pred, target)
    assert set(whole) == {"mse", "mae", "mse_pixel", "mae_pixel", "ssim", "psnr"}
    assert all(v.shape == (3,) for v in whole.values())
    stream = FrameMetrics()
    singles = {"mse": MSE(), "mae": MAE(), "mse_pixel": MSEPixel(), "mae_pixel": MAEPixel(),
               "ssim": SSIM(), "psnr": PSNR()}
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven batches
        stream.update(pred[sl], target[sl])
        for m in singles.values():
            m.update(pred[sl], target[sl])
    streamed = stream.compute()
    for name, fn in (("mse", mse), ("mae", mae), ("mse_pixel", mse_pixel),
                     ("mae_pixel", mae_pixel), ("ssim", ssim), ("psnr", psnr)):
        torch.testing.assert_close(streamed[name], whole[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(singles[name].compute(), whole[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fn(pred, target), whole[name], rtol=1e-10, atol=1e-12)
    stream.reset()
    stream.update(pred[:2], target[:2])
    torch.testing.assert_close(stream.compute()["mse"], mse(pred[:2], target[:2]))


def test_streaming_mean_reduction_and_lead_time_mismatch():
    pred, target = smooth_pair(B=2, T=3)
    m = MSE(reduction="mean")
    m.update(pred, target)
    assert m.compute().shape == () and torch.isclose(m.compute(), mse(pred, target).mean())
    with pytest.raises(ValueError, match="lead times"):
        m.update(pred[:, :2], target[:, :2])
    recovering = MSE()
    with pytest.raises(ValueError, match="NaN"):
        recovering.update(pred, torch.full_like(target, float("nan")))
    recovering.update(pred, target)  # a failed first update does not fix the lead-time count
    torch.testing.assert_close(recovering.compute(), mse(pred, target))
    sized = FrameMetrics(lead_times=3)  # sized up front: also fine for an empty DDP rank
    sized.update(pred, target)
    torch.testing.assert_close(sized.compute()["ssim"], ssim(pred, target))


def test_masked_streaming_needs_ssim_psnr_off():
    pred, target = smooth_pair(B=2, T=2)
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[..., :3] = False
    with pytest.raises(ValueError, match="ssim_psnr=False"):
        FrameMetrics().update(pred, target, mask=mask)
    out = frame_metrics(pred, target, mask=mask, ssim_psnr=False)
    assert set(out) == {"mse", "mae", "mse_pixel", "mae_pixel"}
    torch.testing.assert_close(out["mae"], mae(pred, target, mask=mask))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_frame_metrics_on_gpu_match_cpu():
    pred, target = smooth_pair(B=4, T=3, C=2)
    cpu = frame_metrics(pred, target)
    gpu = frame_metrics(pred.cuda(), target.cuda())
    for name in cpu:
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-4, atol=1e-5)


def test_a_new_score_is_one_registration_and_streams_with_the_others(monkeypatch):
    from convcast.metrics import frame

    monkeypatch.setattr(frame, "SCORES", dict(frame.SCORES))
    monkeypatch.setattr(frame, "_EXTRA_SUMS", dict(frame._EXTRA_SUMS))

    def max_error(pred, target, mask):
        err = (pred - target).abs().flatten(2).amax(dim=2)  # [B, T]
        return {"max_err": err.sum(dim=0, dtype=torch.float64)}

    frame.register_score("max_error", frame.Score(("max_err", "n_frames"),
                                                  lambda s: s["max_err"] / s["n_frames"]),
                         max_error)
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(4, 2, 1, 8, 8, generator=g), torch.rand(4, 2, 1, 8, 8, generator=g)
    want = (pred - target).abs().flatten(2).amax(dim=2).double().mean(dim=0)  # [T]
    stream = FrameMetrics()
    stream.update(pred[:3], target[:3])
    stream.update(pred[3:], target[3:])
    torch.testing.assert_close(stream.compute()["max_error"], want)
    with pytest.raises(ValueError, match="registered twice"):
        frame.register_score("mse", frame.SCORES["mse"])
    with pytest.raises(ValueError, match="give sums="):
        frame.register_score("other", frame.Score(("other_sum",), lambda s: s["other_sum"]))

"""Training losses: values against the evaluation metrics, gradients, masks."""

import pytest
import torch

from convcast.metrics import ssim
from convcast.train.losses import LOSSES, SSIM_WEIGHT, bce, get_loss, mse


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(2, 3, 1, 16, 16, generator=g) > 0.7).float()  # [B, T, C, H, W]
    pred = torch.rand(2, 3, 1, 16, 16, generator=g)
    return pred, target


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_a_scalar_with_finite_gradients_and_least_at_the_truth(name):
    pred, target = _pair()
    pred.requires_grad_(True)
    loss = get_loss(name)(pred, target)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert get_loss(name)(target, target) < 1e-3 < loss


def test_ssim_losses_add_the_evaluation_ssim():
    pred, target = _pair(1)
    dssim = 1 - ssim(pred, target, reduction="mean").item()  # the float64 evaluation metric
    assert get_loss("bce+ssim")(pred, target).item() == pytest.approx(
        bce(pred, target).item() + SSIM_WEIGHT * dssim, rel=1e-5)
    assert get_loss("mse+ssim")(pred, target).item() == pytest.approx(
        mse(pred, target).item() + SSIM_WEIGHT * dssim, rel=1e-5)


def test_ssim_loss_punishes_haze_that_mse_barely_sees():
    """A faint 0.02 haze over an empty frame costs MSE 4e-4 but most of the SSIM."""
    target = torch.zeros(1, 1, 1, 16, 16)
    haze = torch.full_like(target, 0.02)
    assert mse(haze, target).item() < 1e-3
    assert get_loss("mse+ssim")(haze, target).item() > 0.5 * SSIM_WEIGHT


def test_ssim_loss_refuses_a_mask_and_unknown_names_list_the_valid_ones():
    pred, target = _pair()
    with pytest.raises(ValueError, match="no mask"):
        get_loss("bce+ssim")(pred, target, torch.ones_like(target, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid: mse, l1"):
        get_loss("ssim")


def test_ssim_weight_scales_the_ssim_term_and_only_applies_to_ssim_losses():
    pred, target = _pair(1)
    dssim = 1 - ssim(pred, target, reduction="mean").item()
    assert get_loss("mse+ssim", ssim_weight=2.0)(pred, target).item() == pytest.approx(
        mse(pred, target).item() + 2.0 * dssim, rel=1e-5)
    assert get_loss("bce+ssim", ssim_weight=0.0)(pred, target).item() == pytest.approx(
        bce(pred, target).item(), rel=1e-6)
    with pytest.raises(ValueError, match="bce\\+ssim or mse\\+ssim only"):
        get_loss("mse", ssim_weight=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        get_loss("bce+ssim", ssim_weight=-1.0)

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


# ---- the radar losses convert by the data's own description --------------------------------
def _archive(units: str, dbz_range: tuple[float, float]):
    from convcast.data.description import DataDescription, RadarValues
    from convcast.data.radar.preprocess import RadarPreprocess
    from convcast.data.units import MARSHALL_PALMER_ZR

    values = RadarValues(units=units, dbz_range=dbz_range, zr=MARSHALL_PALMER_ZR)
    prep = RadarPreprocess(units, dbz_range=dbz_range, zr=MARSHALL_PALMER_ZR)
    return DataDescription(3, 3, 1, (8, 8), radar=values), prep


@pytest.mark.parametrize("name", ["rainrate_mse", "bmse", "bmae", "bmse+bmae", "csi"])
def test_radar_losses_give_the_same_value_on_the_same_rain_in_any_units(name):
    """The same rain stored as dBZ in one archive and as mm/h in another (different dBZ ranges):
    the radar losses convert model values by each archive's description, so they agree."""
    from convcast.data.units import MARSHALL_PALMER_ZR, dbz_to_rainrate

    g = torch.Generator().manual_seed(0)
    dbz_true = 15 + 35 * torch.rand(2, 3, 1, 8, 8, generator=g, dtype=torch.float64)
    dbz_pred = dbz_true + 4 * torch.randn(2, 3, 1, 8, 8, generator=g, dtype=torch.float64)
    losses = []
    for units, rng in (("dbz", (-10.0, 60.0)), ("rainrate", (0.0, 70.0))):
        desc, prep = _archive(units, rng)

        def model_values(dbz, units=units, prep=prep):
            raw = dbz.numpy() if units == "dbz" else dbz_to_rainrate(dbz.numpy(),
                                                                     *MARSHALL_PALMER_ZR)
            return torch.from_numpy(prep.dbz_to_model(prep.raw_to_dbz(raw))).float()

        losses.append(float(get_loss(name)(model_values(dbz_pred), model_values(dbz_true),
                                           scale=desc)))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert losses[0] > 0


def test_radar_losses_default_to_hko7_pixels():
    from convcast.metrics.balanced import hko_pixel_to_rainrate

    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(1, 2, 1, 4, 4, generator=g), torch.rand(1, 2, 1, 4, 4, generator=g)
    want = ((hko_pixel_to_rainrate(pred) - hko_pixel_to_rainrate(target)) ** 2).mean()
    assert float(get_loss("rainrate_mse")(pred, target)) == pytest.approx(float(want), rel=1e-5)


def test_the_system_passes_a_radar_archives_description_to_its_loss():
    from convcast.train.system import ForecastSystem

    desc, _ = _archive("dbz", (-10.0, 60.0))
    system = ForecastSystem("persistence", loss="rainrate_mse")
    assert system.radar_scale() is None  # no data yet: HKO-7 pixels
    system.description = desc
    assert system.radar_scale() is desc


# ---- weight decay: weights only ------------------------------------------------------------
def test_biases_and_norms_get_no_weight_decay():
    from convcast.train.system import ForecastSystem

    system = ForecastSystem("predrnn", model_kwargs={"hidden_channels": 4, "num_layers": 2,
                                                     "kernel_size": 3, "layer_norm": True},
                            optimizer="adamw", lr=0.1, weight_decay=0.5)
    opt = system.configure_optimizers()
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(system.model.named_parameters())
    assert len(decay) == len(params)
    assert any(p.dim() < 2 for p in params.values())  # biases and GroupNorm scales exist
    for name, p in params.items():
        assert decay[id(p)] == (0.5 if p.dim() >= 2 else 0.0), name
    # a step with zero gradients leaves biases and norms as they were and shrinks the kernels
    before = {n: p.detach().clone() for n, p in params.items()}
    for p in params.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in params.items():
        if p.dim() < 2:
            assert torch.equal(p, before[name]), name
        else:
            assert p.abs().sum() < before[name].abs().sum(), name

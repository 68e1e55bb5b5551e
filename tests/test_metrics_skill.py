"""Skill scores against a hand-worked table and pysteps; NaN for empty tables; masks; streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pysteps.verification.detcatscores import det_cat_fct
from pysteps.verification.detcontscores import det_cont_fct
from pysteps.verification.spatialscores import fss_accum, fss_compute, fss_init

from convcast.metrics import (
    CSI,
    ETS,
    FAR,
    FSS,
    HSS,
    POD,
    Bias,
    Correlation,
    RainfallMAE,
    RainfallMSE,
    SkillScores,
    bias,
    contingency_table,
    correlation,
    csi,
    ets,
    far,
    fss,
    hss,
    pod,
    rainfall_mae,
    rainfall_mse,
    skill_scores,
)

SCORES = {"csi": csi, "pod": pod, "far": far, "hss": hss, "ets": ets, "bias": bias}
PYSTEPS_NAMES = {"csi": "CSI", "pod": "POD", "far": "FAR", "hss": "HSS", "ets": "GSS",
                 "bias": "BIAS"}
THRESHOLDS = [0.5, 2.0, 5.0]


def rain_pair(B=4, T=3, C=1, H=16, W=16, seed=0):
    """Rain-like fields in mm/h: mostly light, some heavy, about a third dry."""
    g = torch.Generator().manual_seed(seed)
    target = torch.distributions.Exponential(0.4).sample((B, T, C, H, W))
    target = target * (torch.rand(B, T, C, H, W, generator=g) > 0.3)
    pred = (target * torch.exp(0.5 * torch.randn(B, T, C, H, W, generator=g))).clamp(min=0)
    return pred, target


def hand_example():
    """Two lead times of one 2x2 frame; lead time 1 is dry everywhere."""
    pred = torch.zeros(1, 2, 1, 2, 2)
    target = torch.zeros(1, 2, 1, 2, 2)
    pred[0, 0, 0] = torch.tensor([[0.1, 0.6], [0.5, 0.9]])
    target[0, 0, 0] = torch.tensor([[0.0, 0.7], [0.2, 0.4]])
    return pred, target


# ----------------------------------------------------------------------------- hand-worked

def test_contingency_table_worked_by_hand():
    pred, target = hand_example()
    table = contingency_table(pred, target, [0.5, 0.8])
    # >= 0.5: forecast events at 0.6, 0.5, 0.9; observed event at 0.7 (with the forecast 0.6)
    # -> 1 hit, 0 misses, 2 false alarms, 1 correct negative. >= 0.8: only a false alarm (0.9).
    assert table.shape == (2, 2, 4) and table.dtype == torch.long
    assert table[0, 0].tolist() == [1, 0, 2, 1]
    assert table[1, 0].tolist() == [0, 0, 1, 3]
    assert table[:, 1].tolist() == [[0, 0, 0, 4], [0, 0, 0, 4]]  # dry lead time
    # with ">" the forecast 0.5 is no event: the false alarm becomes a correct negative
    assert contingency_table(pred, target, 0.5, rule=">")[0, 0].tolist() == [1, 0, 1, 2]


def test_scores_worked_by_hand():
    pred, target = hand_example()
    s = skill_scores(pred, target, [0.5, 0.8])
    # H=1, M=0, F=2, R=1, N=4 at >= 0.5; chance hits Hr = (H+M)(H+F)/N = 3/4
    expected = {"csi": 1 / 3, "pod": 1.0, "far": 2 / 3, "bias": 3.0,
                "hss": 2 * (1 * 1 - 2 * 0) / (1 * 1 + 3 * 3), "ets": (1 - 0.75) / (3 - 0.75)}
    for name, value in expected.items():
        assert s[name][0, 0].item() == pytest.approx(value), name
        assert SCORES[name](pred, target, [0.5, 0.8])[0, 0].item() == pytest.approx(value)
    # H=0, M=0, F=1, R=3 at >= 0.8: POD and bias divide by H+M = 0 -> NaN; the rest are defined
    assert s["csi"][1, 0] == 0 and s["far"][1, 0] == 1 and s["hss"][1, 0] == 0
    assert s["ets"][1, 0] == 0
    assert torch.isnan(s["pod"][1, 0]) and torch.isnan(s["bias"][1, 0])
    # ">": H=1, M=0, F=1, R=2, Hr = 2/4
    gt = skill_scores(pred, target, 0.5, rule=">")
    assert gt["csi"][0, 0].item() == pytest.approx(0.5)
    assert gt["hss"][0, 0].item() == pytest.approx(2 * (2 - 0) / (1 * 2 + 2 * 3))
    assert gt["ets"][0, 0].item() == pytest.approx((1 - 0.5) / (2 - 0.5))


def test_empty_table_gives_nan_not_zero():
    pred, target = hand_example()
    s = skill_scores(pred, target, [0.5, 100.0])
    for name in SCORES:
        assert torch.isnan(s[name][:, 1]).all(), name  # dry lead time: no event anywhere
        assert torch.isnan(s[name][1]).all(), name  # threshold nothing reaches
    everything = skill_scores(target + 1, target + 1, 0.5)  # all hits: R = M = F = 0
    assert everything["csi"][0, 0] == 1 and everything["pod"][0, 0] == 1
    assert torch.isnan(everything["hss"][0, 0]) and torch.isnan(everything["ets"][0, 0])


# ----------------------------------------------------------------------------- vs pysteps

@pytest.mark.parametrize("C", [1, 2])
def test_categorical_scores_match_pysteps(C):
    pred, target = rain_pair(C=C, seed=C)
    target[0, 0, 0, 0, :4] = 2.0  # exact ties at a threshold: where the event rule matters
    pred[0, 0, 0, 0, :4] = torch.tensor([2.0, 2.0, 0.0, 0.0])
    p, t = pred.double().numpy(), target.double().numpy()
    ours = skill_scores(pred, target, THRESHOLDS, rule=">")  # pysteps' rule is ">"
    for k, thr in enumerate(THRESHOLDS):
        ref = det_cat_fct(p, t, thr, axis=(0, 2, 3, 4))  # integrates all but lead time
        for name, ref_name in PYSTEPS_NAMES.items():
            assert ref[ref_name].shape == (3,)
            np.testing.assert_allclose(ours[name][k], ref[ref_name], rtol=1e-10, err_msg=name)
    # ">=" differs from pysteps exactly on the ties
    table_ge = contingency_table(pred, target, 2.0)
    table_gt = contingency_table(pred, target, 2.0, rule=">")
    # ties: 2 correct negatives become hits, 2 more become misses; other lead times unchanged
    assert (table_ge[0, 0] - table_gt[0, 0]).tolist() == [2, 2, 0, -4]
    assert (table_ge[0, 1:] == table_gt[0, 1:]).all()


def test_masked_scores_match_pysteps_on_valid_pixels():
    pred, target = rain_pair(seed=4)
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(target.shape, generator=g) > 0.25
    missing = torch.where(mask, target, torch.full_like(target, float("nan")))
    ours = skill_scores(pred, missing, THRESHOLDS, rule=">", mask=mask)
    for ti in range(3):
        valid = mask[:, ti].numpy()
        p, t = pred[:, ti].double().numpy()[valid], target[:, ti].double().numpy()[valid]
        for k, thr in enumerate(THRESHOLDS):
            ref = det_cat_fct(p, t, thr)
            for name, ref_name in PYSTEPS_NAMES.items():
                assert ours[name][k, ti].item() == pytest.approx(float(ref[ref_name]), rel=1e-10)
    # masked pixels may hold anything
    other = skill_scores(torch.where(mask, pred, 99.0), target, THRESHOLDS, rule=">", mask=mask)
    for name in ours:
        torch.testing.assert_close(other[name], ours[name], equal_nan=True)


def test_rainfall_mse_matches_pysteps_and_correlation_matches_formula():
    pred, target = rain_pair(C=2, seed=6)
    p, t = pred.double().numpy(), target.double().numpy()
    ref = det_cont_fct(p, t, scores=["MSE"], axis=(0, 2, 3, 4))["MSE"]
    assert ref.shape == (3,)
    np.testing.assert_allclose(rainfall_mse(pred, target), ref, rtol=1e-6)
    corr = (p * t).sum((0, 2, 3, 4)) / np.sqrt((p**2).sum((0, 2, 3, 4)) * (t**2).sum((0, 2, 3, 4))
                                               + 1e-9)
    np.testing.assert_allclose(correlation(pred, target), corr, rtol=1e-6)
    assert correlation(target, target).sub(1).abs().max() < 1e-9
    # masked: pysteps ignores NaN in det_cont_fct
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(target.shape, generator=g) > 0.5
    t_nan = np.where(mask.numpy(), t, np.nan)
    ref = det_cont_fct(p, t_nan, scores=["MSE"], axis=(0, 2, 3, 4))["MSE"]
    np.testing.assert_allclose(rainfall_mse(pred, torch.as_tensor(t_nan), mask=mask), ref,
                               rtol=1e-6)
    for m, tt in ((None, t), (mask, t_nan)):  # MAE as pysteps, with and without a mask
        ref = det_cont_fct(p, tt, scores=["MAE"], axis=(0, 2, 3, 4))["MAE"]
        np.testing.assert_allclose(rainfall_mae(pred, torch.as_tensor(tt), mask=m), ref,
                                   rtol=1e-6)
    pm, tm = np.where(mask.numpy(), p, 0), np.where(mask.numpy(), t, 0)
    corr = (pm * tm).sum((0, 2, 3, 4)) / np.sqrt((pm**2).sum((0, 2, 3, 4))
                                                 * (tm**2).sum((0, 2, 3, 4)) + 1e-9)
    np.testing.assert_allclose(correlation(pred, torch.as_tensor(t_nan), mask=mask), corr,
                               rtol=1e-6)


def pysteps_fss(pred, target, thr, scale):
    """pysteps fss pooled over every [H, W] frame at each lead time: numpy [T]."""
    p, t = pred.double().numpy(), target.double().numpy()
    out = []
    for ti in range(p.shape[1]):
        obj = fss_init(thr, scale)
        for b in range(p.shape[0]):
            for c in range(p.shape[2]):
                fss_accum(obj, p[b, ti, c], t[b, ti, c])
        out.append(fss_compute(obj))
    return np.array(out)


def test_fss_matches_pysteps():
    pred, target = rain_pair(B=2, T=2, C=2, H=13, W=11, seed=8)
    scales = [1, 3, 4, 8]  # 4 and 8: even windows, where the centring convention shows
    ours = fss(pred, target, [1.0, 4.0], scales)
    assert ours.shape == (2, 4, 2)
    for k, thr in enumerate([1.0, 4.0]):
        for j, s in enumerate(scales):
            np.testing.assert_allclose(ours[k, j], pysteps_fss(pred, target, thr, s), rtol=1e-6)
    # masked pixels are no event in both fields, as pysteps does with NaN
    g = torch.Generator().manual_seed(9)
    mask = torch.rand(target.shape, generator=g) > 0.2
    nan_p = torch.where(mask, pred, torch.full_like(pred, float("nan")))
    nan_t = torch.where(mask, target, torch.full_like(target, float("nan")))
    masked = fss(nan_p, nan_t, 1.0, [3], mask=mask)
    np.testing.assert_allclose(masked[0, 0], pysteps_fss(nan_p, nan_t, 1.0, 3), rtol=1e-6)
    dry = torch.zeros(1, 2, 1, 8, 8)
    assert torch.isnan(fss(dry, dry, 1.0, [3])).all()  # no events anywhere: undefined


def test_skill_scores_include_fss_per_scale():
    pred, target = rain_pair(seed=10)
    s = skill_scores(pred, target, THRESHOLDS, scales=[1, 5])
    assert set(s) == {*SCORES, "rainfall_mse", "rainfall_mae", "correlation", "fss_1px",
                      "fss_5px"}
    assert s["csi"].shape == (3, 3) and s["rainfall_mse"].shape == (3,)
    torch.testing.assert_close(s["fss_5px"], fss(pred, target, THRESHOLDS, 5)[:, 0])


# ----------------------------------------------------------------------------- streaming

def test_streamed_skill_scores_equal_one_call():
    pred, target = rain_pair(B=6, seed=12)
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(4)) > 0.1
    whole = skill_scores(pred, target, THRESHOLDS, mask=mask, scales=[3])
    stream = SkillScores(THRESHOLDS, scales=[3])
    singles = {"csi": CSI(THRESHOLDS), "pod": POD(THRESHOLDS), "far": FAR(THRESHOLDS),
               "hss": HSS(THRESHOLDS), "ets": ETS(THRESHOLDS), "bias": Bias(THRESHOLDS),
               "rainfall_mse": RainfallMSE(), "rainfall_mae": RainfallMAE(),
               "correlation": Correlation(),
               "fss_3px": FSS(THRESHOLDS, [3])}
    for sl in (slice(0, 2), slice(2, 3), slice(3, 6)):
        stream.update(pred[sl], target[sl], mask=mask[sl])
        for m in singles.values():
            m.update(pred[sl], target[sl], mask=mask[sl])
    streamed = stream.compute()
    for name, value in whole.items():
        torch.testing.assert_close(streamed[name], value, rtol=1e-10, atol=1e-12, equal_nan=True)
        single = singles[name].compute()
        single = single[:, 0] if name == "fss_3px" else single
        torch.testing.assert_close(single, value, rtol=1e-10, atol=1e-12, equal_nan=True)
    mean = SkillScores(THRESHOLDS, reduction="mean")
    mean.update(pred, target)
    assert mean.compute()["csi"].shape == (3,)
    torch.testing.assert_close(mean.compute()["csi"], csi(pred, target, THRESHOLDS).mean(-1))


def test_skill_input_checks():
    pred, target = rain_pair(B=1)
    bad = target.clone()
    bad[0, 1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match=r"target has 1 NaN/inf.*mask=torch.isfinite"):
        skill_scores(pred, bad, THRESHOLDS)
    skill_scores(pred, bad, THRESHOLDS, mask=torch.isfinite(bad))  # masked NaN is fine
    with pytest.raises(ValueError, match="shape"):
        csi(pred, target[..., :8], 0.5)
    with pytest.raises(ValueError, match="rule must be"):
        csi(pred, target, 0.5, rule="=>")
    with pytest.raises(ValueError, match="at least one threshold"):
        SkillScores([])
    with pytest.raises(ValueError, match="positive ints"):
        fss(pred, target, 0.5, [0])
    assert math.isfinite(csi(pred * 1e3, target * 1e3, 0.5)[0, 0].item())  # no range check

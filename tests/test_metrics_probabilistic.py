"""Probabilistic scores against pysteps (random rain-like fields and real FMI radar), streaming,
masks, DDP-style state merging, and the statistical properties of fair CRPS and spread-skill."""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pysteps.postprocessing.ensemblestats import excprob
from pysteps.verification import probscores
from pysteps.verification.detcontscores import det_cont_fct
from pysteps.verification.ensscores import rankhist
from pysteps.verification.probscores import ROC_curve, reldiag
from torchmetrics.utilities.data import dim_zero_sum

import convcast.metrics.probabilistic as probabilistic
from convcast.metrics import (
    CRPS,
    BrierScore,
    BrierSkillScore,
    ProbabilisticMetrics,
    RankHistogram,
    ReliabilityDiagram,
    ROCCurve,
    SpreadSkillRatio,
    brier_score,
    brier_skill_score,
    crps,
    exceedance_probability,
    fair_crps,
    probabilistic_metrics,
    rank_histogram,
    reliability_diagram,
    roc_curve,
    spread_skill_ratio,
)

THRESHOLDS = [0.1, 1.0, 5.0]
TOL = {"rtol": 1e-6, "atol": 1e-6}
RADAR = Path(__file__).resolve().parents[2] / "shared" / "radar-samples"
FMI_DAY = RADAR / "fmi" / "pgm" / "20160928"
# pysteps' reldiag divides 0 by 0 in empty bins (NaN, as ours)
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in divide")


def rain_ensemble(B=3, M=5, T=3, C=1, H=12, W=12, seed=0, ties=True):
    """Rain-like ensemble `[B, M, T, C, H, W]` and observations (mm/h, float64), about a third
    dry. `ties=False`: members are dry only where the observation is wet, so no observation
    equals a member (pysteps' CRPS is exact there)."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch.distributions.Gamma(0.8, 0.3)
    obs = gamma.sample((B, T, C, H, W)).double()
    obs_dry = torch.rand(B, T, C, H, W, generator=g) < 0.35
    obs = torch.where(obs_dry, 0.0, obs)
    ens = (obs.unsqueeze(1) + 0.5) * torch.exp(0.6 * torch.randn(B, M, T, C, H, W, generator=g,
                                                                  dtype=torch.float64))
    member_dry = torch.rand(B, M, T, C, H, W, generator=g) < 0.3
    if not ties:
        member_dry &= ~obs_dry.unsqueeze(1)
    return torch.where(member_dry, 0.0, ens), obs


def per_lead(ens, obs, t):
    """pysteps' layout of lead time t: members first `(M, B, C, H, W)`, observations `(B, C, H,
    W)`, as float64 numpy."""
    return np.moveaxis(ens[:, :, t].numpy(), 1, 0).astype(np.float64), obs[:, t].numpy()


def pysteps_crps_per_lead(ens, obs):
    return np.array([probscores.CRPS(*per_lead(ens, obs, t)) for t in range(obs.shape[1])])


def brute_crps(ens, obs, fair=False):
    """Kernel form with explicit member pairs, pooled per lead time (numpy, float64)."""
    x, y = ens.numpy(), obs.numpy()[:, None]
    M = x.shape[1]
    pairs = np.abs(x[:, :, None] - x[:, None, :]).sum(axis=(1, 2))  # [B, T, C, H, W]
    score = np.abs(x - y).mean(axis=1) - pairs / (2 * M * (M - 1) if fair else 2 * M**2)
    return score.mean(axis=(0, 2, 3, 4))


def with_nan(x, mask):
    """Observations with NaN where the mask is False (pysteps' missing data)."""
    return torch.where(mask, x, torch.tensor(float("nan"), dtype=x.dtype))


def patched_rankhist(monkeypatch, ens_np, obs_np, x_min, runs=60):
    """Mean of pysteps' rankhist counts over `runs` tie draws u = (j + 0.5) / runs: with runs a
    multiple of every k + 1 (60 for M <= 5), each tied rank is drawn equally often, so this is
    the exact expectation of pysteps' random tie-breaking."""
    total = 0.0
    for j in range(runs):
        u = (j + 0.5) / runs
        monkeypatch.setattr(np.random, "uniform",
                            lambda low=0.0, high=1.0, size=None, u=u: np.full(size, u))
        total = total + rankhist(ens_np, obs_np, X_min=x_min, normalize=False)
    monkeypatch.undo()
    return total / runs


# ----------------------------------------------------------------------------- CRPS

def test_crps_matches_pysteps_without_ties():
    ens, obs = rain_ensemble(C=2, ties=False, seed=1)
    assert (obs == 0).any() and (ens == 0).any()  # exact zeros, as rain fields have
    ref = pysteps_crps_per_lead(ens, obs)
    np.testing.assert_allclose(crps(ens, obs).numpy(), ref, **TOL)
    np.testing.assert_allclose(crps(ens, obs, ties="pysteps").numpy(), ref, **TOL)
    whole = probscores.CRPS(np.moveaxis(ens.numpy(), 1, 0), obs.numpy())  # all lead times
    np.testing.assert_allclose(crps(ens, obs, reduction="pooled").item(), whole, **TOL)
    np.testing.assert_allclose(crps(ens, obs, reduction="mean").item(), ref.mean(), **TOL)


def test_crps_with_ties_exact_and_pysteps_modes():
    ens, obs = rain_ensemble(seed=2)
    tie = (ens == obs.unsqueeze(1)).any(1) & (ens != obs.unsqueeze(1)).any(1)
    assert tie.float().mean() > 0.1  # dry observations beside dry and wet members
    ref = pysteps_crps_per_lead(ens, obs)
    np.testing.assert_allclose(crps(ens, obs, ties="pysteps").numpy(), ref, **TOL)
    exact = crps(ens, obs)
    np.testing.assert_allclose(exact.numpy(), brute_crps(ens, obs), rtol=1e-12)
    assert (exact.numpy() > ref + 1e-3).all()  # pysteps drops the intervals next to a tie
    # where no observation ties a member, the exact CRPS is pysteps'
    clean = pysteps_crps_per_lead(ens, with_nan(obs, ~tie))
    np.testing.assert_allclose(crps(ens, obs, mask=~tie).numpy(), clean, **TOL)


def test_deterministic_crps_is_mae_and_matches_pysteps():
    ens, obs = rain_ensemble(M=1, seed=3)
    mae = (ens[:, 0] - obs).abs().mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(crps(ens, obs), mae, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(crps(ens, obs).numpy(), pysteps_crps_per_lead(ens, obs), **TOL)
    with pytest.raises(ValueError, match="at least 2 ensemble members"):
        fair_crps(ens, obs)


def test_fair_crps_formula_and_relation_to_crps():
    ens, obs = rain_ensemble(M=4, seed=4)
    fair = fair_crps(ens, obs)
    np.testing.assert_allclose(fair.numpy(), brute_crps(ens, obs, fair=True), rtol=1e-12)
    # fair = crps - (1/(2M^2(M-1))) sum|x_i - x_j| < crps
    assert (fair < crps(ens, obs)).all()


def test_fair_crps_is_unbiased_for_members_from_the_obs_distribution():
    g = torch.Generator().manual_seed(5)
    M, n = 3, 40_000
    obs = torch.randn(1, 1, 1, 1, n, generator=g, dtype=torch.float64)
    ens = torch.randn(1, M, 1, 1, 1, n, generator=g, dtype=torch.float64)
    truth = 1 / math.sqrt(math.pi)  # CRPS of N(0, 1) averaged over y ~ N(0, 1)
    fair, standard = fair_crps(ens, obs).item(), crps(ens, obs).item()
    assert abs(fair - truth) < 0.01  # unbiased (standard error ~0.004)
    assert abs(standard - truth * (1 + 1 / M)) < 0.01  # the standard one is biased by 1/M
    assert abs(fair - truth) < abs(standard - truth) / 5


# ----------------------------------------------------------------------------- Brier

def pysteps_brier(probs_np, obs_np, thr):
    """pysteps' MSE of the probability against the event (= Brier score) and its RV (reduction of
    variance, 1 - MSE / var(o) = Brier skill score against the sample climatology)."""
    out = det_cont_fct(probs_np, (obs_np >= thr).astype(float), scores=["MSE", "RV"])
    return out["MSE"], out["RV"]


def test_brier_score_and_skill_match_pysteps():
    ens, obs = rain_ensemble(M=6, C=2, seed=6)
    bs, bss = brier_score(ens, obs, THRESHOLDS), brier_skill_score(ens, obs, THRESHOLDS)
    assert bs.shape == bss.shape == (3, 3)
    worst = 0.0
    for t in range(3):
        X_f, X_o = per_lead(ens, obs, t)
        for k, thr in enumerate(THRESHOLDS):
            ref_bs, ref_bss = pysteps_brier(excprob(X_f, thr), X_o, thr)
            np.testing.assert_allclose([bs[k, t].item(), bss[k, t].item()], [ref_bs, ref_bss],
                                       **TOL)
            worst = max(worst, abs(bs[k, t].item() - ref_bs), abs(bss[k, t].item() - ref_bss))
    assert worst < 1e-12
    # a given probability is the same as the ensemble's fraction
    probs = exceedance_probability(ens, THRESHOLDS)  # [K, B, T, C, H, W]
    torch.testing.assert_close(brier_score(probs[1].float(), obs, 1.0)[0], bs[1], rtol=1e-6,
                               atol=1e-7)


def test_brier_skill_score_against_a_reference_forecast():
    ens, obs = rain_ensemble(M=6, seed=7)
    ref_ens, _ = rain_ensemble(M=3, seed=8)  # another (worse) forecast of other weather
    bss = brier_skill_score(ens, obs, THRESHOLDS, reference=ref_ens, reduction="pooled")
    X_f, X_o = np.moveaxis(ens.numpy(), 1, 0), obs.numpy()
    X_r = np.moveaxis(ref_ens.numpy(), 1, 0)
    for k, thr in enumerate(THRESHOLDS):
        mse, _ = pysteps_brier(excprob(X_f, thr), X_o, thr)
        mse_ref, _ = pysteps_brier(excprob(X_r, thr), X_o, thr)
        np.testing.assert_allclose(bss[k].item(), 1 - mse / mse_ref, **TOL)
    assert (bss > 0).all()
    perfect = (obs.unsqueeze(0) >= torch.tensor(THRESHOLDS).view(3, 1, 1, 1, 1, 1)).double()
    torch.testing.assert_close(brier_skill_score(perfect[2], obs, 5.0), torch.ones(1, 3,
                               dtype=torch.float64))


# ----------------------------------------------------------------------------- ROC, reliability

def test_roc_curve_matches_pysteps():
    ens, obs = rain_ensemble(M=10, seed=9)  # probabilities k/10 meet the thresholds k/10
    out = roc_curve(ens, obs, THRESHOLDS, n_prob_thresholds=11)
    assert out["pod"].shape == (3, 11, 3) and out["area"].shape == (3, 3)
    np.testing.assert_array_equal(out["prob_thresholds"].numpy(), np.linspace(0, 1, 11))
    for t in range(3):
        X_f, X_o = per_lead(ens, obs, t)
        for k, thr in enumerate(THRESHOLDS):
            pofd, pod, area = ROC_curve(excprob(X_f, thr), X_o, thr, n_prob_thrs=11,
                                        compute_area=True)
            np.testing.assert_allclose(out["pod"][k, :, t].numpy(), pod, **TOL)
            np.testing.assert_allclose(out["pofd"][k, :, t].numpy(), pofd, **TOL)
            np.testing.assert_allclose(out["area"][k, t].item(), area, **TOL)
    pooled = roc_curve(ens, obs, 1.0, reduction="pooled")
    pofd, pod, area = ROC_curve(excprob(np.moveaxis(ens.numpy(), 1, 0), 1.0), obs.numpy(), 1.0,
                                compute_area=True)
    np.testing.assert_allclose(pooled["pod"][0].numpy(), pod, **TOL)
    np.testing.assert_allclose(pooled["area"][0].item(), area, **TOL)


def test_roc_and_reliability_from_given_probabilities_match_pysteps():
    g = torch.Generator().manual_seed(10)
    obs = torch.rand(2, 2, 1, 20, 20, generator=g, dtype=torch.float64)
    probs = (obs + 0.3 * torch.randn(obs.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    roc = roc_curve(probs, obs, 0.6, n_prob_thresholds=7)
    rel = reliability_diagram(probs, obs, 0.6, n_bins=8, min_count=5)
    for t in range(2):
        P_f, X_o = probs[:, t].numpy(), obs[:, t].numpy()
        pofd, pod, area = ROC_curve(P_f, X_o, 0.6, n_prob_thrs=7, compute_area=True)
        np.testing.assert_allclose(roc["pod"][0, :, t].numpy(), pod, **TOL)
        np.testing.assert_allclose(roc["area"][0, t].item(), area, **TOL)
        r, f = reldiag(P_f, X_o, 0.6, n_bins=8, min_count=5)
        np.testing.assert_allclose(rel["forecast_probability"][0, :, t].numpy(), r, **TOL)
        np.testing.assert_allclose(rel["observed_frequency"][0, :, t].numpy(), f, **TOL)
    with pytest.raises(ValueError, match="one threshold"):
        roc_curve(probs, obs, [0.2, 0.6])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        brier_score(probs * 2, obs, 0.6)


def test_reliability_diagram_matches_pysteps():
    ens, obs = rain_ensemble(M=8, H=20, W=20, seed=11)
    out = reliability_diagram(ens, obs, THRESHOLDS, n_bins=10, min_count=10)
    assert out["counts"].shape == (3, 10, 3)
    np.testing.assert_array_equal(out["bin_edges"].numpy(), np.linspace(-1e-6, 1 + 1e-6, 11))
    for t in range(3):
        X_f, X_o = per_lead(ens, obs, t)
        for k, thr in enumerate(THRESHOLDS):
            P_f = excprob(X_f, thr)
            r, f = reldiag(P_f, X_o, thr, n_bins=10, min_count=10)
            np.testing.assert_allclose(out["forecast_probability"][k, :, t].numpy(), r, **TOL)
            np.testing.assert_allclose(out["observed_frequency"][k, :, t].numpy(), f, **TOL)
            counts = np.histogram(P_f, bins=np.linspace(-1e-6, 1 + 1e-6, 11))[0]
            np.testing.assert_array_equal(out["counts"][k, :, t].numpy(), counts)
    assert torch.isnan(out["observed_frequency"]).any()  # some bins below min_count


# ----------------------------------------------------------------------------- rank histogram

def test_rank_histogram_matches_pysteps_without_ties():
    g = torch.Generator().manual_seed(12)
    ens = torch.randn(2, 6, 3, 1, 10, 10, generator=g, dtype=torch.float64)
    obs = 0.8 * torch.randn(2, 3, 1, 10, 10, generator=g, dtype=torch.float64)
    hist = rank_histogram(ens, obs)
    counts = rank_histogram(ens, obs, normalize=False)
    assert hist.shape == (7, 3)
    for t in range(3):
        X_f, X_o = per_lead(ens, obs, t)
        np.testing.assert_allclose(hist[:, t].numpy(), rankhist(X_f, X_o), **TOL)
        np.testing.assert_array_equal(counts[:, t].numpy(),
                                      rankhist(X_f, X_o, normalize=False))


@pytest.mark.parametrize("x_min", [None, 0.1, 1.0])
def test_rank_histogram_ties_are_pysteps_expected_draw(monkeypatch, x_min):
    ens, obs = rain_ensemble(M=5, seed=13)
    counts = rank_histogram(ens, obs, x_min=x_min, normalize=False)
    for t in range(3):
        X_f, X_o = per_lead(ens, obs, t)
        expected = patched_rankhist(monkeypatch, X_f, X_o, x_min)
        np.testing.assert_allclose(counts[:, t].numpy(), expected, rtol=1e-9, atol=1e-9)
    pooled = rank_histogram(ens, obs, x_min=x_min, reduction="pooled")
    whole = patched_rankhist(monkeypatch, np.moveaxis(ens.numpy(), 1, 0), obs.numpy(), x_min)
    np.testing.assert_allclose(pooled.numpy(), whole / whole.sum(), **TOL)


# ----------------------------------------------------------------------------- spread-skill

def test_spread_skill_ratio_formula_and_perfect_ensemble():
    ens, obs = rain_ensemble(M=4, seed=14)
    var = ens.var(dim=1, correction=1).mean(dim=(0, 2, 3, 4))
    rmse = ((ens.mean(1) - obs) ** 2).mean(dim=(0, 2, 3, 4)).sqrt()
    torch.testing.assert_close(spread_skill_ratio(ens, obs), (1.25 * var).sqrt() / rmse)
    torch.testing.assert_close(spread_skill_ratio(ens, obs, corrected=False), var.sqrt() / rmse)
    X_f, X_o = per_lead(ens, obs, 0)  # the RMSE is pysteps' of the ensemble mean
    np.testing.assert_allclose(rmse[0].item(), det_cont_fct(X_f.mean(0), X_o, ["RMSE"])["RMSE"],
                               **TOL)
    # a perfect ensemble: observation and members drawn from the same (pixel-varying) law
    g = torch.Generator().manual_seed(15)
    M = 5
    centre = 3 * torch.randn(8, 2, 1, 32, 32, generator=g, dtype=torch.float64)
    scale = 0.5 + torch.rand(centre.shape, generator=g, dtype=torch.float64)
    obs = centre + scale * torch.randn(centre.shape, generator=g, dtype=torch.float64)
    ens = centre.unsqueeze(1) + scale.unsqueeze(1) * torch.randn(8, M, 2, 1, 32, 32, generator=g,
                                                                 dtype=torch.float64)
    ssr = spread_skill_ratio(ens, obs)
    assert ((ssr - 1).abs() < 0.03).all(), ssr
    plain = spread_skill_ratio(ens, obs, corrected=False)
    assert ((plain - math.sqrt(M / (M + 1))).abs() < 0.03).all(), plain
    assert spread_skill_ratio(0.5 * ens + 0.5 * centre.unsqueeze(1), obs).max() < 0.8


# ----------------------------------------------------------------------------- masks

def test_masked_scores_equal_pysteps_on_nan_fields():
    ens, obs = rain_ensemble(M=5, seed=16)
    mask = torch.rand(obs.shape, generator=torch.Generator().manual_seed(3)) > 0.25
    garbage = torch.where(mask, obs, 1e6)  # masked pixels may hold anything
    nan_obs = with_nan(obs, mask)
    np.testing.assert_allclose(crps(ens, garbage, mask=mask, ties="pysteps").numpy(),
                               pysteps_crps_per_lead(ens, nan_obs), **TOL)
    bs = brier_score(ens, garbage, 1.0, mask=mask)
    roc = roc_curve(ens, garbage, 1.0, mask=mask)
    rel = reliability_diagram(ens, garbage, 1.0, mask=mask, min_count=3)
    hist = rank_histogram(ens, garbage, mask=mask, normalize=False)
    for t in range(3):
        X_f, X_o = per_lead(ens, nan_obs, t)
        P_f = excprob(X_f, 1.0)
        ok = np.isfinite(X_o)
        np.testing.assert_allclose(bs[0, t].item(), pysteps_brier(P_f[ok], X_o[ok], 1.0)[0],
                                   **TOL)
        pofd, pod = ROC_curve(P_f, X_o, 1.0)
        np.testing.assert_allclose(roc["pofd"][0, :, t].numpy(), pofd, **TOL)
        r, f = reldiag(P_f, X_o, 1.0, min_count=3)
        np.testing.assert_allclose(rel["observed_frequency"][0, :, t].numpy(), f, **TOL)
        assert hist[:, t].sum().item() == pytest.approx(ok.sum(), abs=1e-9)
    member_nan = ens.clone()
    member_nan[0, 2, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ensemble has 1 NaN/inf.*mask=torch.isfinite"):
        crps(member_nan, obs)
    keep = torch.ones_like(mask)
    keep[0, 0, 0, 0, 0] = False
    crps(member_nan, obs, mask=keep)  # a NaN member at a masked pixel is fine


# ----------------------------------------------------------------------------- streaming

def test_streaming_equals_one_call_for_every_score():
    ens, obs = rain_ensemble(B=6, M=5, seed=17)
    mask = torch.rand(obs.shape, generator=torch.Generator().manual_seed(4)) > 0.1
    opts = {"n_prob_thresholds": 6, "n_bins": 5, "min_count": 2, "x_min": 0.1}
    whole = probabilistic_metrics(ens, obs, THRESHOLDS, mask=mask, **opts)
    stream = ProbabilisticMetrics(THRESHOLDS, **opts)
    singles = {"crps": CRPS(), "fair_crps": CRPS(fair=True), "brier_score": BrierScore(THRESHOLDS),
               "brier_skill_score": BrierSkillScore(THRESHOLDS),
               "roc": ROCCurve(THRESHOLDS, n_prob_thresholds=6),
               "reliability": ReliabilityDiagram(THRESHOLDS, n_bins=5, min_count=2),
               "rank_histogram": RankHistogram(x_min=0.1),
               "spread_skill_ratio": SpreadSkillRatio()}
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):
        stream.update(ens[sl], obs[sl], mask=mask[sl])
        for m in singles.values():
            m.update(ens[sl], obs[sl], mask=mask[sl])
    streamed = stream.compute()
    assert set(streamed) == set(whole)
    for name, value in whole.items():
        torch.testing.assert_close(streamed[name], value, rtol=1e-10, atol=1e-12, equal_nan=True)
    functional = {
        "crps": crps(ens, obs, mask=mask), "fair_crps": fair_crps(ens, obs, mask=mask),
        "brier_score": brier_score(ens, obs, THRESHOLDS, mask=mask),
        "brier_skill_score": brier_skill_score(ens, obs, THRESHOLDS, mask=mask),
        "roc": roc_curve(ens, obs, THRESHOLDS, n_prob_thresholds=6, mask=mask),
        "reliability": reliability_diagram(ens, obs, THRESHOLDS, n_bins=5, min_count=2,
                                           mask=mask),
        "rank_histogram": rank_histogram(ens, obs, x_min=0.1, mask=mask),
        "spread_skill_ratio": spread_skill_ratio(ens, obs, mask=mask)}
    for name, value in functional.items():
        got = singles[name].compute()
        torch.testing.assert_close(got, value, rtol=1e-10, atol=1e-12, equal_nan=True)
        prefixed = {f"{name}_{k}": v for k, v in value.items()} if isinstance(value, dict) else {
            name: value}
        for key, v in prefixed.items():
            torch.testing.assert_close(whole[key], v, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_reductions_and_state_merge_as_ddp_does():
    ens, obs = rain_ensemble(B=4, M=4, seed=18)
    per_t = probabilistic_metrics(ens, obs, THRESHOLDS)
    for reduction in ("mean", "pooled"):
        out = probabilistic_metrics(ens, obs, THRESHOLDS, reduction=reduction)
        assert out["crps"].shape == () and out["brier_score"].shape == (3,)
        assert out["roc_pod"].shape == (3, 10) and out["rank_histogram"].shape == (5,)
    mean = probabilistic_metrics(ens, obs, THRESHOLDS, reduction="mean")
    torch.testing.assert_close(mean["spread_skill_ratio"], per_t["spread_skill_ratio"].mean())
    # two "ranks" each stream half; their summed states give the one-process numbers
    a, b = ProbabilisticMetrics(THRESHOLDS), ProbabilisticMetrics(THRESHOLDS)
    a.update(ens[:2], obs[:2])
    b.update(ens[2:], obs[2:])
    a.merge_state(b)
    for name, value in a.compute().items():
        torch.testing.assert_close(value, per_t[name], rtol=1e-10, atol=1e-12, equal_nan=True)
    assert all(fx is dim_zero_sum for fx in a._reductions.values())  # DDP sums every state
    c = ProbabilisticMetrics(THRESHOLDS)  # forward(): the batch's scores, states kept
    batch = c(ens[2:], obs[2:])
    torch.testing.assert_close(batch["crps"], crps(ens[2:], obs[2:]))
    c(ens[:2], obs[:2])
    torch.testing.assert_close(c.compute()["rank_histogram"], per_t["rank_histogram"])


def test_deterministic_forecast_in_the_collection_and_member_count_changes():
    ens, obs = rain_ensemble(M=1, seed=19)
    out = probabilistic_metrics(ens, obs, THRESHOLDS)
    torch.testing.assert_close(out["crps"], (ens[:, 0] - obs).abs().mean(dim=(0, 2, 3, 4)))
    assert torch.isnan(out["fair_crps"]).all() and torch.isnan(out["spread_skill_ratio"]).all()
    assert out["rank_histogram"].shape == (2, 3)
    metric = ProbabilisticMetrics(THRESHOLDS)
    metric.update(*rain_ensemble(M=4, seed=20))
    with pytest.raises(ValueError, match="has 3 members but earlier batches had 4"):
        metric.update(*rain_ensemble(M=3, seed=21))
    crps_any = CRPS()  # CRPS itself takes any ensemble size per batch
    crps_any.update(*rain_ensemble(M=4, seed=20))
    crps_any.update(*rain_ensemble(M=3, seed=21))


def test_brier_skill_streams_against_reference():
    ens, obs = rain_ensemble(B=4, M=6, seed=22)
    ref, _ = rain_ensemble(B=4, M=3, seed=23)
    metric = BrierSkillScore(THRESHOLDS, against="reference")
    metric.update(ens[:2], obs[:2], reference=ref[:2])
    metric.update(ens[2:], obs[2:], reference=ref[2:])
    torch.testing.assert_close(metric.compute(),
                               brier_skill_score(ens, obs, THRESHOLDS, reference=ref))
    with pytest.raises(ValueError, match="reference= to every update"):
        metric.update(ens, obs)
    with pytest.raises(ValueError, match="against must be"):
        BrierSkillScore(THRESHOLDS, against="persistence")


# ----------------------------------------------------------------------------- real radar

@pytest.fixture(scope="module")
def fmi_ensemble():
    """Two lead times of real FMI rain rates (128x128 crop, mm/h, NaN outside the radars) and a
    5-member ensemble of the previous frames shifted and scaled, with the mask of valid pixels."""
    if not FMI_DAY.is_dir():
        pytest.skip(f"real radar samples not found: {FMI_DAY} (put the pysteps FMI sample "
                    "archive in the shared radar-samples folder beside the checkout)")
    from pysteps.io.importers import import_fmi_pgm
    from pysteps.utils.conversion import to_rainrate

    frames = []
    for path in sorted(FMI_DAY.glob("*.pgm.gz"))[:3]:
        dbz, _, meta = import_fmi_pgm(str(path), gzipped=True)
        rate, _ = to_rainrate(dbz, meta)
        frames.append(rate[544:672, 160:288])  # showers: dry, light and > 5 mm/h
    frames = torch.from_numpy(np.stack(frames)).double()  # [3, 128, 128]
    obs = frames[1:].view(1, 2, 1, 128, 128)
    prev = frames[:2]
    g = torch.Generator().manual_seed(0)
    members = []
    for dy, dx in ((0, 0), (2, 1), (-1, 3), (3, -2), (-2, -2)):
        scale = torch.exp(0.3 * torch.randn((), generator=g, dtype=torch.float64))
        members.append(torch.roll(prev, (dy, dx), dims=(-2, -1)) * scale)
    ens = torch.stack(members).view(1, 5, 2, 1, 128, 128)
    mask = torch.isfinite(obs) & torch.isfinite(ens).all(1)
    assert 0.2 < (obs[mask] == 0).double().mean() < 0.9  # a real rain field with dry pixels
    return ens, with_nan(obs, mask), mask


def test_real_radar_scores_match_pysteps(fmi_ensemble, monkeypatch):
    ens, obs, mask = fmi_ensemble
    zero = torch.where(mask, obs, 0.0)
    ens_ok = torch.where(mask.unsqueeze(1), ens, 0.0)
    worst = {}
    ref = pysteps_crps_per_lead(ens, obs)
    got = crps(ens_ok, zero, mask=mask, ties="pysteps").numpy()
    np.testing.assert_allclose(got, ref, **TOL)
    worst["crps(ties=pysteps)"] = np.abs(got - ref).max()
    exact = crps(ens_ok, zero, mask=mask).numpy()
    assert (exact > ref).all()  # dry pixels tie dry members
    out = probabilistic_metrics(ens_ok, zero, THRESHOLDS, mask=mask, x_min=0.1, min_count=10)
    for t in range(2):
        X_f, X_o = per_lead(ens, obs, t)
        for k, thr in enumerate(THRESHOLDS):
            P_f = excprob(X_f, thr)
            ok = np.isfinite(P_f) & np.isfinite(X_o)
            bs, bss = pysteps_brier(P_f[ok], X_o[ok], thr)
            pofd, pod, area = ROC_curve(P_f, X_o, thr, compute_area=True)
            r, f = reldiag(P_f, X_o, thr, min_count=10)
            pairs = {"brier_score": (out["brier_score"][k, t], bs),
                     "brier_skill_score": (out["brier_skill_score"][k, t], bss),
                     "roc_pod": (out["roc_pod"][k, :, t], pod),
                     "roc_pofd": (out["roc_pofd"][k, :, t], pofd),
                     "roc_area": (out["roc_area"][k, t], area),
                     "reliability_forecast_probability":
                         (out["reliability_forecast_probability"][k, :, t], r),
                     "reliability_observed_frequency":
                         (out["reliability_observed_frequency"][k, :, t], f)}
            for name, (mine, theirs) in pairs.items():
                np.testing.assert_allclose(mine.numpy(), theirs, err_msg=name, **TOL)
                diff = np.nanmax(np.abs(mine.numpy() - np.asarray(theirs)))
                worst[name] = max(worst.get(name, 0.0), diff)
        expected = patched_rankhist(monkeypatch, X_f, X_o, 0.1)
        np.testing.assert_allclose(out["rank_histogram"][:, t].numpy(),
                                   expected / expected.sum(), **TOL)
    assert out["crps"].shape == (2,) and torch.isfinite(out["spread_skill_ratio"]).all()
    assert max(worst.values()) < 1e-9, worst


# ----------------------------------------------------------------------------- checks, docs

def test_input_checks_say_what_to_fix():
    ens, obs = rain_ensemble(B=1)
    with pytest.raises(ValueError, match=r"pred.unsqueeze\(1\)"):
        crps(ens[:, 0], obs)
    with pytest.raises(ValueError, match="ensemble must be"):
        crps(ens[..., :5], obs)
    with pytest.raises(ValueError, match="forecast must be an ensemble"):
        brier_score(ens[0], obs, 1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        crps(ens, obs, reduction="sum")
    with pytest.raises(ValueError, match="ties must be"):
        crps(ens, obs, ties="random")
    with pytest.raises(ValueError, match="at least one threshold"):
        ROCCurve([])
    with pytest.raises(ValueError, match="n_prob_thresholds must be an int >= 2"):
        roc_curve(ens, obs, 1.0, n_prob_thresholds=1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        crps(ens.numpy(), obs)
    with pytest.raises(TypeError, match="mask must be a bool"):
        crps(ens, obs, mask=torch.ones(obs.shape))


def test_docstring_examples():
    result = doctest.testmod(probabilistic, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_probabilistic_metrics_on_gpu_match_cpu():
    ens, obs = rain_ensemble(B=2, M=5, seed=24)
    mask = torch.rand(obs.shape, generator=torch.Generator().manual_seed(5)) > 0.2
    cpu = probabilistic_metrics(ens, obs, THRESHOLDS, mask=mask, x_min=0.1)
    gpu = probabilistic_metrics(ens.cuda(), obs.cuda(), THRESHOLDS, mask=mask.cuda(), x_min=0.1)
    for name, value in cpu.items():
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), value, rtol=1e-9, atol=1e-12, equal_nan=True)

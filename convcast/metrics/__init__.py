"""Evaluation metrics per lead time for `[B, T, C, H, W]` forecasts (no model code imported).

Entry points: `frame_metrics(pred, target)` (mse, mae, mse_pixel, mae_pixel, ssim, psnr: `[T]`)
and `skill_scores(pred, target, thresholds)` (csi, pod, far, hss, ets, bias: `[K, T]`, plus
rainfall_mse, rainfall_mae and correlation `[T]`); for ensembles `[B, M, T, C, H, W]`,
`probabilistic_metrics(ensemble, target, thresholds)` (crps, fair_crps, Brier, ROC, reliability,
rank histogram, spread-skill). Each metric is also a function and a streaming torchmetrics
Metric; `FrameMetrics`, `SkillScores` and `ProbabilisticMetrics` stream them all, DDP-safe.
"""

from convcast.metrics.balanced import (
    BalancedMAE,
    BalancedMSE,
    balanced_mae,
    balanced_mse,
    balanced_weights,
)
from convcast.metrics.classification import Accuracy, ConfusionMatrix, accuracy, confusion_matrix
from convcast.metrics.frame import (
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
from convcast.metrics.probabilistic import (
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
from convcast.metrics.report import format_table, write_metrics_json
from convcast.metrics.skill import (
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
    scores_from_table,
    skill_scores,
)

__all__ = [
    "CSI", "ETS", "FAR", "FSS", "HSS", "MAE", "MSE", "POD", "PSNR", "SSIM", "Accuracy",
    "BalancedMAE", "BalancedMSE", "Bias", "ConfusionMatrix", "Correlation", "FrameMetrics",
    "MAEPixel", "MSEPixel", "RainfallMAE", "RainfallMSE", "SkillScores", "accuracy", "balanced_mae",
    "balanced_mse", "balanced_weights", "bias", "confusion_matrix", "contingency_table",
    "correlation", "csi", "ets", "far", "format_table", "frame_metrics", "fss", "hss", "mae",
    "mae_pixel", "mse", "mse_pixel", "pod", "psnr", "rainfall_mae", "rainfall_mse",
    "scores_from_table", "skill_scores", "ssim", "write_metrics_json",
    # probabilistic (ensemble / probability forecasts)
    "CRPS", "BrierScore", "BrierSkillScore", "ProbabilisticMetrics", "ROCCurve", "RankHistogram",
    "ReliabilityDiagram", "SpreadSkillRatio", "brier_score", "brier_skill_score", "crps",
    "exceedance_probability", "fair_crps", "probabilistic_metrics", "rank_histogram",
    "reliability_diagram", "roc_curve", "spread_skill_ratio",
]

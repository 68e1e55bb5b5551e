"""Selection by validation: the untrained anchored model (its baseline) is a candidate for the
best checkpoint, so training that only hurts leaves the anchor as `--ckpt_path best`."""

import lightning as L
import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from convcast.models import create_model
from convcast.models.anchored import GateFit
from convcast.train import ForecastSystem
from convcast.train.callbacks import Checkpoint
from convcast.train.checkpoint import find_checkpoint, load_forecaster

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"base_kwargs": {"hidden_channels": [4], "kernel_size": 3, "patch_size": 2},
        "anchor": "persistence"}


def _still_frames(n: int = 16) -> DataLoader:
    """Windows of frames that do not move: persistence is perfect on them."""
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(n, 1, 1, 8, 8, generator=g)
    return DataLoader(TensorDataset(frame.expand(-1, 3, -1, -1, -1).clone(),
                                    frame.expand(-1, 2, -1, -1, -1).clone()), batch_size=4)


def _fit(system: ForecastSystem, root, **checkpoint) -> tuple[L.Trainer, Checkpoint]:
    ck = Checkpoint(dirpath=root / "checkpoints", monitor="val/loss", mode="min", save_top_k=1,
                    save_last=True, **checkpoint)
    trainer = L.Trainer(max_steps=6, val_check_interval=3, logger=False, callbacks=[ck],
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(system, _still_frames(), _still_frames())
    return trainer, ck


def test_training_that_only_hurts_leaves_the_anchor_as_the_best_checkpoint(tmp_path):
    torch.manual_seed(0)
    system = ForecastSystem("anchored", TINY, lr=5.0)  # a step size that can only hurt
    with pytest.warns(UserWarning, match="no learned improvement on this data"):
        _, ck = _fit(system, tmp_path, gate=True)
    assert ck.anchor_won and "step=0" in ck.best_model_path
    assert float(ck.best_model_score) == pytest.approx(0.0, abs=1e-12)  # persistence is exact
    best = find_checkpoint("best", tmp_path)
    assert best is not None and best.name == ck.best_model_path.split("/")[-1]
    model, _ = load_forecaster(best)
    assert model.gate.numel() == 0  # the anchor won: no correction to gate
    x = _still_frames().dataset.tensors[0][:2]
    with torch.no_grad():
        torch.testing.assert_close(model(x, 2), x[:, -1:].expand(-1, 2, -1, -1, -1))


def test_training_that_helps_is_kept_and_plain_models_skip_the_start(tmp_path):
    torch.manual_seed(0)
    _, ck = _fit(ForecastSystem("anchored", TINY, lr=1e-3), tmp_path / "a",
                 validate_at_start=False)
    assert not ck.anchor_won and "step=0" not in ck.best_model_path
    plain = ForecastSystem("encoder_forecaster", TINY["base_kwargs"], lr=1e-3)
    _, ck = _fit(plain, tmp_path / "b")  # not anchored: no validation before training
    assert not getattr(ck, "_anchor_path", "")


def _fading_frames(n: int = 16) -> DataLoader:
    """Windows whose frames fade: persistence is off, and a correction learns it quickly."""
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(n, 1, 1, 8, 8, generator=g)
    scale = torch.linspace(1.0, 0.5, 5).view(1, 5, 1, 1, 1)
    seq = frame * scale  # [n, 5, 1, 8, 8]
    return DataLoader(TensorDataset(seq[:, :3].clone(), seq[:, 3:].clone()), batch_size=4)


def _fit_fading(root, **checkpoint) -> Checkpoint:
    """8 steps of the tiny anchored model on fading frames (training helps a little)."""
    torch.manual_seed(0)
    ck = Checkpoint(dirpath=root, monitor="val/loss", mode="min", save_top_k=1,
                    save_last=True, **checkpoint)
    trainer = L.Trainer(max_steps=8, val_check_interval=4, logger=False, callbacks=[ck],
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(ForecastSystem("anchored", TINY, lr=0.01), _fading_frames(), _fading_frames())
    return ck


def test_a_margin_keeps_the_anchor_unless_training_beats_it_clearly(tmp_path):
    def fit(margin: float, root) -> Checkpoint:
        return _fit_fading(root, anchor_margin=margin)

    assert not fit(0.0, tmp_path / "plain").anchor_won  # training helps, a little
    with pytest.warns(UserWarning, match="with its 90% margin\\): no learned improvement"):
        strict = fit(0.9, tmp_path / "strict")  # but not by 90%
    assert strict.anchor_won and "step=0" in strict.best_model_path
    with pytest.raises(ValueError, match="anchor_margin is a fraction"):
        Checkpoint(anchor_margin=1.5)


def test_gate_fit_is_the_least_squares_shrinkage_per_lead():
    g = torch.Generator().manual_seed(1)
    a, f = torch.rand(4, 3, 1, 6, 6, generator=g), torch.rand(4, 3, 1, 6, 6, generator=g)
    y = a + torch.tensor([0.3, -0.5, 2.0]).view(1, 3, 1, 1, 1) * (f - a)  # γ 0.3, <0, >1
    fit = GateFit()
    fit.update(a[:2], f[:2], y[:2])
    fit.update(a[2:], f[2:], y[2:])  # streamed: the same as one batch
    torch.testing.assert_close(fit.compute(), torch.tensor([0.3, 0.0, 1.0]))
    # with noise, the fitted γ is the grid's best blend (lead by lead) and a mask is honoured
    y = y + 0.2 * torch.randn(y.shape, generator=g)
    mask = (torch.rand(4, 1, 1, 6, 6, generator=g) > 0.3).float()
    fit = GateFit()
    fit.update(a, f, y, mask)
    gate = fit.compute()
    grid = torch.linspace(0, 1, 201)
    for k in range(3):
        err = [(((a + c * (f - a) - y)[:, k] ** 2) * mask[:, 0]).sum() for c in grid]
        assert float(gate[k]) == pytest.approx(float(grid[int(torch.stack(err).argmin())]),
                                               abs=0.005)


def test_gated_forward_blends_towards_the_anchor_and_old_weights_load():
    torch.manual_seed(0)
    model = create_model("anchored", **TINY)
    nn.init.normal_(model.correction.weight, std=0.5)  # a forecast away from persistence
    x = torch.rand(2, 3, 1, 8, 8)
    with torch.no_grad():
        a, full = model.forward_parts(x, 3)
        torch.testing.assert_close(model(x, 3), full)  # no gate yet
        old = {k: v for k, v in model.state_dict().items() if k != "gate"}
        model.gate = torch.tensor([1.0, 0.0])  # leads beyond it use its last value
        torch.testing.assert_close(model(x, 3)[:, 0], full[:, 0])
        torch.testing.assert_close(model(x, 3)[:, 1:], a[:, 1:])
        fresh = create_model("anchored", **TINY)
        fresh.load_state_dict(model.state_dict())  # a fitted gate has its own size
        torch.testing.assert_close(fresh.gate, torch.tensor([1.0, 0.0]))
        fresh.load_state_dict(old)  # weights saved before the gate: strict, no gate
        assert fresh.gate.numel() == 0
        torch.testing.assert_close(fresh(x, 3), full)


def test_checkpoint_gate_is_fitted_on_validation_and_written_into_the_best(tmp_path):
    ck = _fit_fading(tmp_path, gate=True)
    assert not ck.anchor_won
    gated, _ = load_forecaster(ck.best_model_path)
    last, _ = load_forecaster(ck.last_model_path)
    assert gated.gate.shape == (2,) and bool(((gated.gate >= 0) & (gated.gate <= 1)).all())
    assert last.gate.numel() == 0  # training (and resuming) runs ungated
    ungated = create_model("anchored", **TINY)
    ungated.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "gate"})
    expected = GateFit()
    with torch.no_grad():
        for x, y in _fading_frames():
            expected.update(*ungated.forward_parts(x, 2), y)
    torch.testing.assert_close(gated.gate, expected.compute())

    def mse(model):
        with torch.no_grad():
            return sum(float(((model(x, 2) - y) ** 2).sum()) for x, y in _fading_frames())
    assert mse(gated) <= mse(ungated) + 1e-9


def _fit_from_shipped(tmp_path, train: DataLoader, val: DataLoader) -> Checkpoint:
    """`video_nowcaster` fine-tuned from its shipped weights by steps that only hurt (lr 5),
    selected and gated on `val`."""
    system = ForecastSystem("video_nowcaster", pretrained=True, lr=5.0)
    ck = Checkpoint(dirpath=tmp_path, monitor="val/loss", mode="min", save_top_k=1,
                    save_last=True, gate=True, anchor_margin=0.05)
    trainer = L.Trainer(max_steps=4, val_check_interval=2, logger=False, callbacks=[ck],
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(system, train, val)
    return ck


def test_a_pretrained_start_competes_with_the_untrained_model_first(tmp_path):
    """Started from shipped weights, the untrained model (the anchor's forecast) is the first
    step-0 candidate: on frames that do not move, where any learned change hurts, it is kept
    over the shipped weights and forecasts persistence exactly."""
    torch.manual_seed(0)
    frames = torch.rand(8, 1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    still = DataLoader(TensorDataset(frames.expand(-1, 3, -1, -1, -1).clone(),
                                     frames.expand(-1, 2, -1, -1, -1).clone()), batch_size=4)
    with pytest.warns(UserWarning, match="is the untrained model.*as its anchor does"):
        ck = _fit_from_shipped(tmp_path, still, still)
    assert ck.anchor_won and ck.untrained_won
    model, _ = load_forecaster(ck.best_model_path)
    x = frames[:2].expand(-1, 3, -1, -1, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 2), x[:, -1:].expand(-1, 2, -1, -1, -1))


def test_a_pretrained_start_that_wins_is_kept_and_gated(tmp_path):
    """Where the shipped weights beat the untrained model by the margin (moving digits, which
    they learned) and fine-tuning only hurts, the best checkpoint is the shipped model, its
    weights unchanged, with a gate per lead time fitted on the validation windows."""
    from convcast.data import MovingMNIST

    data = MovingMNIST(split="test", num_sequences=8, input_frames=10, output_frames=2, seed=7)
    digits = DataLoader(TensorDataset(torch.stack([data[i][0] for i in range(8)]),
                                      torch.stack([data[i][1] for i in range(8)])), batch_size=4)
    with pytest.warns(UserWarning, match="is the shipped pretrained model.*as the shipped"):
        ck = _fit_from_shipped(tmp_path, digits, digits)
    assert ck.anchor_won and not ck.untrained_won
    model, _ = load_forecaster(ck.best_model_path)
    shipped = create_model("video_nowcaster", pretrained=True).state_dict()
    for k, v in model.state_dict().items():
        if k != "gate":
            torch.testing.assert_close(v, shipped[k])
    assert model.gate.shape == (2,) and bool(((model.gate >= 0) & (model.gate <= 1)).all())


class _StillWithWrongMotion(torch.utils.data.Dataset):
    """Still frames whose motion field says they move one pixel per step."""

    def __init__(self, n: int = 8) -> None:
        self.frames = torch.rand(n, 1, 1, 12, 12, generator=torch.Generator().manual_seed(3))

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict:
        f = self.frames[i]
        return {"x": f.expand(3, -1, -1, -1).clone(), "y": f.expand(2, -1, -1, -1).clone(),
                "motion": torch.ones(2, 12, 12)}


def test_a_flow_anchor_worse_than_persistence_is_gated_back_to_persistence(tmp_path):
    """`gate_reference="persistence"`: the untrained flow-anchored model won (training only
    hurt), yet its extrapolation is worse than persistence on validation, so the gate fitted
    towards persistence takes it back there, lead by lead."""
    torch.manual_seed(0)
    kwargs = {**TINY, "anchor": "optical_flow", "outval": "edge",
              "gate_reference": "persistence"}
    system = ForecastSystem("anchored", kwargs, lr=5.0)
    ck = Checkpoint(dirpath=tmp_path, monitor="val/loss", mode="min", save_top_k=1,
                    save_last=True, gate=True)
    trainer = L.Trainer(max_steps=4, val_check_interval=2, logger=False, callbacks=[ck],
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    data = DataLoader(_StillWithWrongMotion(), batch_size=4)
    with pytest.warns(UserWarning, match="no learned improvement"):
        trainer.fit(system, data, data)
    assert ck.anchor_won
    model, _ = load_forecaster(ck.best_model_path)
    torch.testing.assert_close(model.gate, torch.zeros(2))
    batch = next(iter(data))
    with torch.no_grad():
        out = model(batch["x"], 2, motion=batch["motion"])
        a, _ = model.forward_parts(batch["x"], 2, batch["motion"])
    torch.testing.assert_close(out, batch["x"][:, -1:].expand(-1, 2, -1, -1, -1))
    assert (a - batch["y"]).abs().amax() > 0.05  # the anchor alone moved the still scene
    with pytest.raises(ValueError, match="gate_reference must be one of anchor, persistence"):
        create_model("anchored", **{**TINY, "gate_reference": "flow"})


def test_gate_sums_score_the_gated_forecast_and_a_margin_keeps_the_reference():
    """`GateFit.mse(γ)` is the gated forecast's per-frame MSE computed from the sums alone; with
    a margin the reference (γ = 0) stays unless the gated forecast beats it by that fraction."""
    g = torch.Generator().manual_seed(2)
    r, f = torch.rand(6, 3, 1, 5, 5, generator=g), torch.rand(6, 3, 1, 5, 5, generator=g)
    y = r + 0.4 * (f - r) + 0.2 * torch.randn(r.shape, generator=g)
    mask = (torch.rand(6, 1, 1, 5, 5, generator=g) > 0.2).float()
    fit = GateFit()
    fit.update(r[:4], f[:4], y[:4], mask[:4])
    fit.update(r[4:], f[4:], y[4:], mask[4:])
    gate = fit.compute()
    gated = r + gate.view(1, 3, 1, 1, 1) * (f - r)
    direct = float((((gated - y) ** 2) * mask).flatten(2).sum(-1).mean())
    assert fit.mse(gate) == pytest.approx(direct, rel=1e-6)
    assert fit.mse(0.0) == pytest.approx(float((((r - y) ** 2) * mask).flatten(2).sum(-1).mean()),
                                         rel=1e-6)
    gain = 1 - fit.mse(gate) / fit.mse(0.0)
    assert 0.2 < gain < 0.9
    torch.testing.assert_close(fit.compute(margin=gain - 0.05), gate)
    torch.testing.assert_close(fit.compute(margin=gain + 0.05), torch.zeros(3))


def test_selection_by_the_gated_score_keeps_persistence_when_the_gain_is_within_the_margin(
        tmp_path):
    """Validation logs `val/gated_mse` (the state as its validated gate would forecast) and
    `val/reference_mse`; a trained state kept as the best whose gated forecast does not beat
    persistence by the margin is gated to 0: `--ckpt_path best` forecasts persistence."""
    def fit(margin: float, root) -> tuple[L.Trainer, Checkpoint]:
        torch.manual_seed(0)
        kwargs = {**TINY, "gate_reference": "persistence"}
        ck = Checkpoint(dirpath=root, monitor="val/gated_mse", mode="min", save_top_k=1,
                        save_last=True, gate=True, anchor_margin=margin,
                        validate_at_start=False)  # a trained state is the best
        trainer = L.Trainer(max_steps=8, val_check_interval=4, logger=False, callbacks=[ck],
                            enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, accelerator="cpu")
        trainer.fit(ForecastSystem("anchored", kwargs, lr=0.01), _fading_frames(),
                    _fading_frames())
        return trainer, ck

    trainer, ck = fit(0.0, tmp_path / "plain")
    assert not ck.anchor_won
    last, _ = load_forecaster(ck.last_model_path)
    expected = last.gate_sums(_fading_frames())
    logged = trainer.callback_metrics
    assert float(logged["val/gated_mse"]) == pytest.approx(expected.mse(expected.compute()),
                                                           rel=1e-5)
    assert float(logged["val/reference_mse"]) == pytest.approx(expected.mse(0.0), rel=1e-5)
    best, _ = load_forecaster(ck.best_model_path)
    assert bool(best.gate.any())  # the learned forecast, gated, is kept
    with pytest.warns(UserWarning, match="does not beat persistence.*by the 90% margin"):
        _, strict = fit(0.9, tmp_path / "strict")
    model, _ = load_forecaster(strict.best_model_path)
    torch.testing.assert_close(model.gate, torch.zeros(2))
    x, _ = next(iter(_fading_frames()))
    with torch.no_grad():
        torch.testing.assert_close(model(x, 2), x[:, -1:].expand(-1, 2, -1, -1, -1))


def _blurred_and_shifted() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Textured targets y `[4, 3, 1, 32, 32]` in [0, 1], a reference r (y shifted by 2 pixels)
    and a forecast ŷ (y blurred over 9x9): ŷ has the lower squared error, r the higher SSIM."""
    g = torch.Generator().manual_seed(0)
    y = nn.functional.avg_pool2d(torch.rand(12, 1, 34, 34, generator=g), 3, 1)
    y = ((y - y.min()) / (y.max() - y.min())).view(4, 3, 1, 32, 32)
    padded = nn.functional.pad(y.view(12, 1, 32, 32), (4, 4, 4, 4), mode="replicate")
    blur = nn.functional.conv2d(padded, torch.ones(1, 1, 9, 9) / 81).view_as(y)
    return y, torch.roll(y, 2, dims=-1), blur


def test_ssim_keeping_gate_trades_squared_error_for_the_references_structure():
    """`GateFit(ssim_grid=11)`: the least-squares gate blurs each lead below the reference's
    SSIM; the SSIM-keeping gate is the grid gate of least error whose SSIM is at least the
    reference's, measured in the same pass (equal to scikit-image's SSIM, the metric's own
    test), and still beats the reference's squared error here."""
    from convcast.metrics.frame import ssim_frames

    y, r, f = _blurred_and_shifted()
    plain, keeping = GateFit(), GateFit(ssim_grid=11)
    for fit in (plain, keeping):
        fit.update(r[:2], f[:2], y[:2])
        fit.update(r[2:], f[2:], y[2:])  # streamed
    torch.testing.assert_close(keeping.sums[:4], plain.sums)  # the same least-squares sums

    def gated_ssim(gate: torch.Tensor) -> torch.Tensor:
        return ssim_frames(r + gate.view(1, 3, 1, 1, 1) * (f - r), y, 1.0).mean(0)  # [3]

    reference = ssim_frames(r, y, 1.0).mean(0)
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    table = torch.stack([gated_ssim(torch.full((3,), float(c))) for c in grid])  # [11, 3]
    torch.testing.assert_close(keeping.ssim(), table)
    ls, kept = plain.compute(), keeping.compute()
    assert bool((gated_ssim(ls) < reference - 0.03).all())  # least squares: structure lost
    assert bool((gated_ssim(kept) >= reference).all())
    assert keeping.mse(kept) < 0.8 * keeping.mse(0.0)  # and still well below the reference
    for k in range(3):  # the best allowed gate of the grid, lead by lead
        allowed = [c for c, s in zip(grid.tolist(), table[:, k].tolist(), strict=True)
                   if s >= table[0, k]]
        err = [float(((r + c * (f - r) - y)[:, k] ** 2).sum()) for c in allowed]
        assert float(kept[k]) == pytest.approx(allowed[err.index(min(err))], abs=1e-6)
    assert plain.ssim() is None


def test_ssim_keeping_gate_is_the_least_squares_gate_where_structure_is_kept():
    """Where gating towards the forecast never costs SSIM (ŷ = the truth plus a little noise),
    the SSIM-keeping gate is the least-squares one; masked windows are refused, said how."""
    y, r, _ = _blurred_and_shifted()
    g = torch.Generator().manual_seed(3)
    f = (y + 0.02 * torch.randn(y.shape, generator=g)).clamp(0, 1)
    plain, keeping = GateFit(), GateFit(ssim_grid=5)
    plain.update(r, f, y)
    keeping.update(r, f, y)
    torch.testing.assert_close(keeping.compute(), plain.compute())
    assert float(plain.compute().min()) > 0.9
    unmoved = GateFit(ssim_grid=5)  # a forecast that never left the reference: γ = 1, as before
    unmoved.update(r, r, y)
    torch.testing.assert_close(unmoved.compute(), torch.ones(3))
    with pytest.raises(ValueError, match="needs whole frames.*turn gate_ssim off"):
        keeping.update(r, f, y, torch.ones(4, 1, 1, 32, 32))
    with pytest.raises(ValueError, match="ssim_grid must be 0"):
        GateFit(ssim_grid=1)


def test_gate_ssim_model_option_reaches_the_validation_score_and_the_gate(tmp_path):
    """`anchored(gate_ssim=True)`: its `new_gate_fit` carries the SSIM grid, so the system's
    `val/gated_mse` and the checkpoint's fitted gate both keep the SSIM; a non-bool refused."""
    model = create_model("anchored", **{**TINY, "gate_ssim": True})
    assert len(model.new_gate_fit().grid) == 11
    assert len(create_model("anchored", **TINY).new_gate_fit().grid) == 0
    with pytest.raises(ValueError, match="gate_ssim must be true or false"):
        create_model("anchored", **{**TINY, "gate_ssim": "yes"})
    torch.manual_seed(0)
    system = ForecastSystem("anchored", {**TINY, "gate_reference": "persistence",
                                         "gate_ssim": True}, lr=0.01)
    ck = Checkpoint(dirpath=tmp_path, monitor="val/gated_mse", mode="min", save_top_k=1,
                    save_last=True, gate=True, validate_at_start=False)
    trainer = L.Trainer(max_steps=4, val_check_interval=4, logger=False, callbacks=[ck],
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(system, _fading_frames(), _fading_frames())
    last, _ = load_forecaster(ck.last_model_path)
    assert last.gate_ssim
    expected = last.gate_sums(_fading_frames())
    assert len(expected.grid) == 11
    assert float(trainer.callback_metrics["val/gated_mse"]) == pytest.approx(
        expected.mse(expected.compute()), rel=1e-5)
    best, _ = load_forecaster(ck.best_model_path)
    torch.testing.assert_close(best.gate, expected.compute())

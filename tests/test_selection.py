"""Selection by validation: the untrained anchored model (its baseline) is a candidate for the
best checkpoint, so training that only hurts leaves the anchor as `--ckpt_path best`."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

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
        _, ck = _fit(system, tmp_path)
    assert ck.anchor_won and "step=0" in ck.best_model_path
    assert float(ck.best_model_score) == pytest.approx(0.0, abs=1e-12)  # persistence is exact
    best = find_checkpoint("best", tmp_path)
    assert best is not None and best.name == ck.best_model_path.split("/")[-1]
    model, _ = load_forecaster(best)
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


def test_a_margin_keeps_the_anchor_unless_training_beats_it_clearly(tmp_path):
    def fit(margin: float, root) -> Checkpoint:
        torch.manual_seed(0)
        ck = Checkpoint(dirpath=root, monitor="val/loss", mode="min", save_top_k=1,
                        save_last=True, anchor_margin=margin)
        trainer = L.Trainer(max_steps=8, val_check_interval=4, logger=False, callbacks=[ck],
                            enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, accelerator="cpu")
        trainer.fit(ForecastSystem("anchored", TINY, lr=0.01), _fading_frames(),
                    _fading_frames())
        return ck

    assert not fit(0.0, tmp_path / "plain").anchor_won  # training helps, a little
    with pytest.warns(UserWarning, match="with its 90% margin\\): no learned improvement"):
        strict = fit(0.9, tmp_path / "strict")  # but not by 90%
    assert strict.anchor_won and "step=0" in strict.best_model_path
    with pytest.raises(ValueError, match="anchor_margin is a fraction"):
        Checkpoint(anchor_margin=1.5)

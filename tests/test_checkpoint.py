"""Checkpoints: rebuild from the file alone, clear errors across architectures, last/best."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from convcast.models import create_model
from convcast.train import ForecastSystem
from convcast.train.checkpoint import find_checkpoint, load_forecaster, load_weights


def test_load_forecaster_describes_the_training_data(trained_run: dict) -> None:
    model, info = load_forecaster(trained_run["last"])
    assert not model.training and type(model).model_name == "next_frame"
    assert info["model_kwargs"] == {"hidden_channels": 4}
    assert (info["input_frames"], info["output_frames"], info["channels"]) == (4, 2, 1)
    assert info["frame_size"] == [16, 16] and info["normalization"]["kind"] == "minmax"
    assert "model_name: next_frame" in info["config"] and info["global_step"] == 4


def test_other_architecture_gives_a_clear_error(trained_run: dict) -> None:
    other = create_model("seq2seq", nf=4)
    with pytest.raises(ValueError, match="'next_frame' model.*'seq2seq' model"):
        load_weights(other, trained_run["last"])
    same = create_model("next_frame", hidden_channels=8)  # same name, other size
    with pytest.raises(ValueError, match="hidden_channels"):
        load_weights(same, trained_run["last"])
    right = load_weights(create_model("next_frame", hidden_channels=4), trained_run["last"])
    x = torch.rand(1, 4, 1, 16, 16)
    torch.testing.assert_close(right.eval()(x, 2), load_forecaster(trained_run["last"])[0](x, 2))

    system = ForecastSystem(model_name="seq2seq", model_kwargs={"nf": 4})
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="'next_frame' model.*'seq2seq' model"):
        trainer.validate(system, dataloaders=[(torch.rand(1, 4, 1, 16, 16),
                                               torch.rand(1, 2, 1, 16, 16))],
                         ckpt_path=trained_run["last"])


def test_find_last_and_best(trained_run: dict, tmp_path) -> None:
    assert find_checkpoint("last", trained_run["root"]) == trained_run["last"]
    best = find_checkpoint("best", trained_run["root"])
    assert best is not None and best.name.startswith("epoch=") and best.exists()
    assert find_checkpoint("last", tmp_path) is None


def test_unreadable_checkpoints(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_forecaster(tmp_path / "none.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_forecaster(tmp_path / "junk.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_forecaster(tmp_path / "plain.ckpt")

"""Pretrained weights shipped in the package: saved and loaded weights-only, offline, with a card;
the radar nowcaster forecasts a real archive with no training and no download; the generic video
model forecasts unseen motion and fine-tunes through the video recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from convcast.models import create_model
from convcast.models import pretrained as pre

ROOT = Path(__file__).resolve().parent.parent

TINY = {"in_channels": 1, "anchor": "optical_flow", "calibrate_leads": 3,
        "base": "encoder_forecaster", "base_kwargs": {"hidden_channels": [4], "patch_size": 2}}


@pytest.fixture()
def tiny_asset(tmp_path, monkeypatch) -> str:
    """A pretrained entry `tiny_pretrained` whose weights live in `tmp_path`."""
    monkeypatch.setattr(pre, "ASSETS", tmp_path)
    monkeypatch.setitem(pre.PRETRAINED, "tiny_pretrained", "tiny.pt")
    torch.manual_seed(0)
    model = create_model("anchored", **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # not the zero-initialised start
    pre.save_pretrained(tmp_path / "tiny.pt", model, {"trained_on": "noise", "pixel_km": [2, 4]})
    return "tiny_pretrained"


def test_saved_weights_load_weights_only_with_their_card(tiny_asset, tmp_path) -> None:
    torch.manual_seed(0)
    saved = create_model("anchored", **TINY)
    saved.load_state_dict(torch.load(tmp_path / "tiny.pt", weights_only=True)["state_dict"])
    loaded = pre.load_pretrained(tiny_asset)
    assert not loaded.training and loaded.card["trained_on"] == "noise"
    assert pre.card(tiny_asset) == loaded.card
    x = torch.rand(1, 4, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 3), saved.eval()(x, 3))


def test_pretrained_errors_say_what_to_do(tiny_asset, tmp_path) -> None:
    with pytest.raises(ValueError, match="no pretrained weights for 'convlstm'.*radar_nowcaster"):
        create_model("convlstm", pretrained=True)
    (tmp_path / "tiny.pt").write_bytes(b"not weights")
    with pytest.raises(Exception, match="tiny.pt"):
        pre.load_pretrained(tiny_asset)
    torch.save({"format": "something else"}, tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="not a convcast pretrained file"):
        pre.load_pretrained(tiny_asset)
    (tmp_path / "tiny.pt").unlink()
    with pytest.raises(FileNotFoundError, match="reinstall convcast"):
        pre.load_pretrained(tiny_asset)


def test_grid_factor_brings_fine_archives_into_the_trained_range() -> None:
    card = {"pixel_km": [2.0, 4.0]}
    assert [pre.grid_factor(card, km) for km in (0.5, 1.0, 2.0, 3.0, 4.0, 8.0)] == \
        [4, 2, 1, 1, 1, 1]
    assert pre.grid_factor({}, 1.0) == 1 and pre.grid_factor(card, None) == 1


def test_shipped_radar_nowcaster_loads_offline_with_its_card() -> None:
    model = create_model("radar_nowcaster", pretrained=True)
    card = model.card
    assert card["pixel_km"] == [2.0, 4.0] and card["step_minutes"] == [5.0, 15.0]
    assert {a["provider"] for a in card["trained_on"]} == {"fmi", "knmi", "bom", "opera"}
    assert card["training"]["steps"] > 0 and card["training"]["minutes"] > 0
    assert card["training"]["machine"]
    x = torch.zeros(1, 5, 1, 32, 32)
    x[..., 8:20, 8:20] = 0.5  # a 25 dBZ echo standing still: the forecast keeps it
    with torch.no_grad():
        y = model(x, 12)
    assert y.shape == (1, 12, 1, 32, 32) and torch.isfinite(y).all()
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert float(y[0, 0, 0, 10:18, 10:18].mean()) > 0.3


def test_shipped_nowcaster_forecasts_a_real_archive_from_the_command_line(tmp_path, capsys):
    xr = pytest.importorskip("xarray")
    from test_radar_archives import fmi_nowcast

    nc = fmi_nowcast("20170509", "radar_nowcaster", 3, tmp_path / "out")
    said = capsys.readouterr().err
    assert "block-averaging the 1-km archive by 2 to 2 km" in said
    with xr.open_dataset(nc) as ds:
        rain = ds["precip_intensity"].values
        assert rain.shape == (3, 613, 380)  # FMI's 1226 x 760 grid at 2 km
        assert np.nanmax(rain) > 1 and np.isnan(rain).mean() == pytest.approx(0.24, abs=0.02)


def test_pretrained_weights_fine_tune_through_convcast_fit(tmp_path) -> None:
    from conftest import FIT_QUIET, cli

    from convcast.train import ForecastSystem

    system = ForecastSystem(model_name="radar_nowcaster", pretrained=True)
    shipped = create_model("radar_nowcaster", pretrained=True).state_dict()
    assert system.model.training
    for key, value in system.model.state_dict().items():
        torch.testing.assert_close(value, shipped[key])
    frames = np.zeros((40, 1, 16, 16), np.float32)
    frames[:, :, 4:10, 3:9] = np.linspace(0.3, 0.6, 40)[:, None, None, None]
    np.save(tmp_path / "radar.npy", frames)
    assert cli("fit", "--model.model_name", "radar_nowcaster", "--model.pretrained", "true",
               "--data", "convcast.data.FramesDataModule", "--data.path", tmp_path / "radar.npy",
               "--data.input_frames", 5, "--data.output_frames", 3, "--data.batch_size", 1,
               "--data.split_fractions", "[0.6, 0.2, 0.2]", *FIT_QUIET,
               "--trainer.max_steps", 1, "--trainer.default_root_dir", tmp_path / "run") == 0
    ckpt = next((tmp_path / "run").glob("**/last.ckpt"))
    from convcast.train.checkpoint import load_checkpoint

    tuned = load_checkpoint(ckpt).model.state_dict()
    moved = sum(float((tuned[k] - shipped[k]).abs().max()) for k in shipped if k != "gate")
    assert 0 < moved < 1  # one step away from the shipped weights, not from random ones


VIDEO_MODELS = ("video_nowcaster", "video_flow_nowcaster")


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_shipped_video_model_loads_offline_and_beats_persistence_on_moving_digits(name) -> None:
    from convcast.data import MovingMNIST

    model = create_model(name, pretrained=True)
    card = model.card
    assert card["frame_size"] == 64 and (card["input_frames"], card["output_frames"]) == (10, 10)
    assert len(card["trained_on"]["clips"]) >= 3 and card["training"]["steps"] > 0
    # digits it never saw (another split and seed than its training clips)
    data = MovingMNIST(split="test", num_sequences=4, input_frames=10, output_frames=10, seed=123)
    x = torch.stack([data[i][0] for i in range(4)])  # [4, 10, 1, 64, 64]
    y = torch.stack([data[i][1] for i in range(4)])
    with torch.no_grad():
        pred = model(x, 10)
    assert pred.shape == y.shape and float(pred.min()) >= 0 and float(pred.max()) <= 1
    persistence = x[:, -1:].expand_as(y)
    assert float(((pred - y) ** 2).mean()) < 0.9 * float(((persistence - y) ** 2).mean())


VIDEO_RECIPES = {  # the recipe that fine-tunes each shipped video model, and its data path key
    "video_nowcaster": ("configs/video-anchored-cpu-small.yaml", "--data"),
    "video_flow_nowcaster": ("configs/video-anchored-flow-cpu-small.yaml",
                             "--data.init_args.data.init_args"),
}


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_video_recipe_fine_tunes_the_shipped_video_model(tmp_path, tiny_video, name) -> None:
    from conftest import FIT_QUIET, cli

    from convcast.train.checkpoint import load_checkpoint

    config, data = VIDEO_RECIPES[name]
    extra = () if data == "--data" else ("--data.init_args.num_workers", 0,
                                         "--data.init_args.cache_dir", tmp_path / "motion")
    shipped = create_model(name, pretrained=True).state_dict()
    assert cli("fit", "--config", ROOT / config,
               f"{data}.path", tiny_video, f"{data}.frame_size", 64,
               f"{data}.split_fractions", "[0.5, 0.5, 0.0]", f"{data}.batch_size", 1, *extra,
               "--model.model_name", name, "--model.pretrained", "true",
               *FIT_QUIET, "--trainer.max_steps", 1,
               "--trainer.default_root_dir", tmp_path / "run") == 0
    tuned = load_checkpoint(next((tmp_path / "run").glob("**/last.ckpt"))).model.state_dict()
    moved = sum(float((tuned[k] - shipped[k]).abs().max()) for k in shipped if k != "gate")
    assert 0 < moved < 1  # one step away from the shipped weights

"""`convcast nowcast` end to end on tiny PNG folders: baselines and a tiny checkpoint."""

import imageio.v3 as iio
import lightning as L
import numpy as np
import pytest
import torch

from convcast.cli.nowcast import main
from convcast.data.radar import RadarDataModule
from convcast.data.radar.archive import write_image_folder
from convcast.train import ForecastSystem

STEP = np.timedelta64(6, "m")


def folder(path, n: int = 8, size: int = 16, start: str = "2021-06-01T10:00", drop=()):
    t = np.datetime64(start, "s") + STEP * np.arange(n)
    gray = np.random.default_rng(0).integers(0, 200, size=(n, size, size), dtype=np.uint8)
    keep = [i for i in range(n) if i not in drop]
    write_image_folder(path, gray[keep], t[keep])
    return gray[keep], t[keep]


def test_persistence_nowcast_writes_forecast_times_and_animation(tmp_path, capsys):
    gray, t = folder(tmp_path / "in")
    assert main(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--model", "persistence", "--horizon", "3"]) == 0
    z = np.load(tmp_path / "out" / "forecast.npz")
    assert z["forecast"].shape == (3, 1, 16, 16) and str(z["units"]) == "gray"
    for k in range(3):  # persistence in the input's units: the last frame, 0..255 levels
        np.testing.assert_allclose(z["forecast"][k, 0], gray[-1], atol=1e-3)
    expected = [str(t[-1] + STEP * k) for k in (1, 2, 3)]
    assert list(z["timestamps"]) == expected == ["2021-06-01T10:48:00", "2021-06-01T10:54:00",
                                                "2021-06-01T11:00:00"]
    assert list(z["input_timestamps"]) == [str(v) for v in t[-5:]]
    assert float(z["step_minutes"]) == 6.0
    printed = capsys.readouterr().out
    assert "2021-06-01T11:00:00" in printed and "+18 min" in printed
    gif = iio.imread(tmp_path / "out" / "forecast.gif", index=None)
    # the input frames then the forecast, each under its time, enlarged to 256 pixels, in mm/h
    # beside a colour bar
    assert gif.shape[0] == 8 and gif.shape[1] == 256 + 18 and gif.shape[2] > 256 + 40


def test_optical_flow_nowcast_runs_without_checkpoint(tmp_path):
    folder(tmp_path / "in", size=24)
    assert main(["--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                 "--model", "optical_flow", "--horizon", "2"]) == 0
    z = np.load(tmp_path / "out" / "forecast.npz")
    assert z["forecast"].shape == (2, 1, 24, 24) and np.isfinite(z["forecast"]).all()
    assert str(z["model"]) == "optical_flow"


def test_gap_or_too_few_frames_is_a_clear_error(tmp_path):
    folder(tmp_path / "gap", drop=(5,))
    with pytest.raises(ValueError, match="not consecutive"):
        main(["--input", str(tmp_path / "gap"), "--out", str(tmp_path / "o"),
              "--model", "persistence"])
    folder(tmp_path / "few", n=3)
    with pytest.raises(ValueError, match="latest 5 frames"):
        main(["--input", str(tmp_path / "few"), "--out", str(tmp_path / "o"),
              "--model", "persistence"])
    with pytest.raises(ValueError, match="--ckpt_path"):
        main(["--input", str(tmp_path / "few"), "--out", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="optical_flow, persistence"):
        main(["--input", str(tmp_path / "few"), "--out", str(tmp_path / "o"), "--model", "rover"])


def tiny_fit(dm: RadarDataModule) -> L.Trainer:
    """One training step of a tiny ConvLSTM on `dm` (save its checkpoint with the trainer)."""
    system = ForecastSystem("encoder_forecaster", {"hidden_channels": [4], "kernel_size": 3,
                                                   "patch_size": 2}, loss="bce")
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(system, datamodule=dm)
    return trainer


def test_checkpoint_nowcast_reuses_the_training_preprocessing(tmp_path):
    """Train 1 step on 32x32 PNGs resized to 16x16; the nowcast resizes new frames the same."""
    folder(tmp_path / "train", n=60, size=32, start="2021-06-01T00:00")
    dm = RadarDataModule(str(tmp_path / "train"), resize=16, input_frames=3, output_frames=2,
                         block_minutes=1440, split_ratios=(1, 0, 0), batch_size=2)
    tiny_fit(dm).save_checkpoint(tmp_path / "tiny.ckpt")
    folder(tmp_path / "now", n=4, size=32, start="2021-07-01T12:00")
    assert main(["--input", str(tmp_path / "now"), "--out", str(tmp_path / "out"),
                 "--ckpt_path", str(tmp_path / "tiny.ckpt")]) == 0
    z = np.load(tmp_path / "out" / "forecast.npz")
    assert z["forecast"].shape == (2, 1, 16, 16)  # checkpoint's horizon, resized grid
    assert z["forecast"].min() >= 0 and z["forecast"].max() <= 255 and str(z["units"]) == "gray"
    assert list(z["input_timestamps"]) == ["2021-07-01T12:06:00", "2021-07-01T12:12:00",
                                           "2021-07-01T12:18:00"]
    # `predict` has no time options: a radar model on a plain array says to use nowcast
    from convcast.cli.predict import main as predict_main

    np.save(tmp_path / "a.npy", np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(ValueError, match="radar model.*convcast nowcast --ckpt_path .*"
                                         "--start_time TIME --step_minutes MINUTES"):
        predict_main(["--ckpt_path", str(tmp_path / "tiny.ckpt"), "--input",
                      str(tmp_path / "a.npy"), "--out", str(tmp_path / "p.npy")])
    x = torch.from_numpy(z["forecast"])
    assert torch.isfinite(x).all()


def test_dispatched_by_the_convcast_command(tmp_path):
    from convcast.cli.main import main as convcast

    folder(tmp_path / "in")
    assert convcast(["nowcast", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                     "--model", "persistence", "--horizon", "1"]) == 0
    assert convcast(["nowcast", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                     "--model", "persistence", "--input_frames", "20"]) == 1


def test_a_radar_outage_in_the_newest_frame_is_refused_not_forecast_as_nan(tmp_path):
    """An all-NaN newest frame (the radar was down) would give a NaN forecast everywhere: the
    nowcast says so, naming the frame's time, and writes nothing."""
    import convcast

    dbz = np.random.default_rng(0).uniform(0, 40, size=(6, 16, 16)).astype(np.float32)
    dbz[-1] = np.nan
    np.savez(tmp_path / "a.npz", reflectivity=dbz)
    with pytest.raises(ValueError, match=r"the newest frame \(2021-06-01T10:30\) holds no data "
                                         r"at all.*radar outage"):
        convcast.forecast(convcast.create_model("persistence"), tmp_path / "a.npz", 2,
                          input_frames=3, radar={"units": "dbz", "start_time": "2021-06-01T10:00",
                                                 "step_minutes": 6})
    with pytest.raises(ValueError, match="radar outage"):
        main(["--model", "persistence", "--input", str(tmp_path / "a.npz"), "--units", "dbz",
              "--start_time", "2021-06-01T10:00", "--step_minutes", "6", "--out",
              str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_radar_array_from_python_takes_its_start_time():
    """`convcast.forecast(model, array, radar={"start_time": ...})`: the times are the array's
    (the forecast's valid times follow them), not ignored."""
    import convcast

    dbz = np.random.default_rng(1).uniform(0, 40, size=(4, 1, 16, 16)).astype(np.float32)
    fc = convcast.forecast(convcast.create_model("persistence"), dbz, 2, input_frames=3,
                           radar={"units": "dbz", "start_time": "2021-06-01T10:00",
                                  "step_minutes": 5})
    assert [str(t)[:16] for t in fc.valid_times] == ["2021-06-01T10:20", "2021-06-01T10:25"]
    with pytest.raises(ValueError, match="start_time"):
        convcast.forecast(convcast.create_model("persistence"), dbz, 2, input_frames=3,
                          radar={"units": "dbz", "step_minutes": 5})

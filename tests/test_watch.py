"""`convcast nowcast --watch`: files dropped one by one into a folder, each forecast at once."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import convcast
import convcast.inference.watch as watch
from convcast.cli.nowcast import main
from convcast.data.radar import RadarDataModule
from convcast.data.radar.archive import write_image_folder
from convcast.train import ForecastSystem

STEP = np.timedelta64(6, "m")
T0 = np.datetime64("2021-06-01T10:00", "s")
LEVELS = np.random.default_rng(1).integers(0, 200, size=(12, 32, 32), dtype=np.uint8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny radar ConvLSTM, one training step: 32x32 gray PNGs resized to 16x16, 3 -> 2."""
    root = tmp_path_factory.mktemp("train")
    t = np.datetime64("2021-05-01T00:00", "s") + STEP * np.arange(40)
    write_image_folder(root / "pngs", np.random.default_rng(0).integers(
        0, 200, size=(40, 32, 32), dtype=np.uint8), t)
    dm = RadarDataModule(str(root / "pngs"), resize=16, input_frames=3, output_frames=2,
                         block_minutes=1440, split_ratios=(1, 0, 0), batch_size=2)
    system = ForecastSystem("encoder_forecaster", {"hidden_channels": [4], "kernel_size": 3,
                                                   "patch_size": 2}, loss="bce")
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, accelerator="cpu",
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(system, datamodule=dm)
    trainer.save_checkpoint(root / "tiny.ckpt")
    return root / "tiny.ckpt"


def drop(folder: Path, i: int, name: str | None = None) -> Path:
    """Frame i (at T0 + i steps) as a PNG named by its time, or under `name`."""
    path = write_image_folder(folder, LEVELS[i:i + 1], (T0 + STEP * i)[None])[0]
    return path if name is None else path.rename(folder / name)


def args(*extra) -> list[str]:
    return [*map(str, extra)]


def forecast_of(out: Path) -> dict:
    with np.load(out / "forecast.npz") as z:
        return {k: z[k] for k in z.files}


def test_each_new_file_is_checked_and_forecast(ckpt, tmp_path, monkeypatch, capsys, one_thread):
    """Dropped one per poll: good frames, a corrupt one (skipped, then a gap resets the
    stream), a duplicate, an out-of-order one, an empty one (taken once it is written) and files
    that are no frames."""
    radar, out = tmp_path / "radar", tmp_path / "out"
    radar.mkdir()
    steps = [lambda: drop(radar, 0), lambda: drop(radar, 1), lambda: drop(radar, 2),
             lambda: (radar / "202106011018.png").write_bytes(b"not a png"),
             lambda: drop(radar, 4), lambda: drop(radar, 4, "dup_202106011024.png"),
             lambda: drop(radar, 1, "late_202106011006.png"),
             lambda: (radar / "202106011030.png").touch(), lambda: drop(radar, 5),
             lambda: drop(radar, 6)]
    seen = []

    def next_file(seconds: float) -> None:
        assert seconds == 0.5
        seen.append(list(forecast_of(out)["timestamps"]) if (out / "forecast.npz").exists()
                    else None)
        (radar / "notes.txt").write_text("not a frame")
        (radar / ".202106011048.png").write_bytes(b"partial")  # a writer's hidden temp file
        steps.pop(0)()

    monkeypatch.setattr(watch, "_wait", next_file)
    assert main(args("--ckpt_path", ckpt, "--watch", radar, "--out", out, "--poll_seconds",
                     0.5, "--max_files", 10)) == 0
    log = capsys.readouterr().err
    assert not steps and "no frames in" in log
    first = ["2021-06-01T10:18:00", "2021-06-01T10:24:00"]
    assert seen == [None, None, None, first, first, first, first, first, first, first]
    assert list(forecast_of(out)["timestamps"]) == ["2021-06-01T10:42:00", "2021-06-01T10:48:00"]
    for line in ("2021-06-01T10:12 202106011012.png -> forecast 10:18..10:24 (",
                 "2021-06-01T10:18 202106011018.png -> skipped: unreadable",
                 "2021-06-01T10:24 202106011024.png -> gap of 12 min after 2021-06-01T10:12: "
                 "stream reset; 1 of 3 frames, no forecast yet",
                 "dup_202106011024.png -> skipped: duplicate time",
                 "late_202106011006.png -> skipped: out of order (the stream is at "
                 "2021-06-01T10:24)",
                 "2021-06-01T10:30 202106011030.png -> skipped: empty file",
                 "2021-06-01T10:30 202106011030.png -> stream; 2 of 3 frames",
                 "2021-06-01T10:36 202106011036.png -> forecast 10:42..10:48 ("):
        assert line in log, line
    assert "notes.txt" not in log and ".202106011048" not in log
    assert (out / "forecast.gif").exists() and (out / "forecast.nc").exists()


def test_n_single_frame_updates_equal_nowcast(ckpt, tmp_path, one_thread):
    radar, out = tmp_path / "radar", tmp_path / "out"
    radar.mkdir()
    w = watch.Watcher(watch.WatchConfig(folder=radar, out=out, model=ckpt))
    lengths = []
    encode = w.tm.model.encode
    w.tm.model.encode = lambda x, state=None: lengths.append(x.shape[1]) or encode(x, state)
    w.warm_up()
    for i in range(5):
        drop(radar, i)
        assert w.poll() == 1
        if i == 2:  # the model's 3 input frames: exactly nowcast's forecast
            assert main(args("--ckpt_path", ckpt, "--input", radar, "--out", tmp_path / "n3")) == 0
            a, b = forecast_of(out), forecast_of(tmp_path / "n3")
            np.testing.assert_allclose(a["forecast"], b["forecast"], atol=1e-4)
            assert list(a["input_timestamps"]) == list(b["input_timestamps"])
    assert lengths == [1] * 5  # one new frame per update, nothing re-encoded
    assert main(args("--ckpt_path", ckpt, "--input", radar, "--out", tmp_path / "n5",
                     "--input_frames", 5)) == 0
    a, b = forecast_of(out), forecast_of(tmp_path / "n5")
    np.testing.assert_allclose(a["forecast"], b["forecast"], atol=1e-4)
    np.testing.assert_allclose(a["physical"], b["physical"], rtol=1e-4, atol=1e-4)
    assert list(a["timestamps"]) == list(b["timestamps"]) == ["2021-06-01T10:30:00",
                                                               "2021-06-01T10:36:00"]


def test_a_restarted_watcher_resumes_without_reading_old_frames(ckpt, tmp_path, monkeypatch,
                                                                 capsys, one_thread):
    radar, out = tmp_path / "radar", tmp_path / "out"
    for i in range(4):
        drop(radar, i)
    watched = args("--ckpt_path", ckpt, "--watch", radar, "--out", out, "--once")
    assert main(watched) == 0  # warms up from the latest 3, writes, exits
    assert "warming up from 3 of 4 frames" in capsys.readouterr().err
    state = torch.load(out / "stream_state.pt", weights_only=True)
    assert state["last_time"] == "2021-06-01T10:18:00" and state["stream"]["frames_seen"] == 3
    assert state["fingerprint"]["model"].startswith("encoder_forecaster ")
    drop(radar, 4)
    drop(radar, 5)
    read = []
    real = watch.read_image
    monkeypatch.setattr(watch, "read_image", lambda p, gray: read.append(Path(p).name) or
                        real(p, gray))
    assert main(watched) == 0
    assert read == ["202106011024.png", "202106011030.png"]  # the new ones only
    assert "resumed from" in capsys.readouterr().err
    assert main(args("--ckpt_path", ckpt, "--input", radar, "--out", tmp_path / "n",
                     "--input_frames", 5)) == 0
    np.testing.assert_allclose(forecast_of(out)["forecast"],
                               forecast_of(tmp_path / "n")["forecast"], atol=1e-4)
    assert main(watched) == 0 and read == ["202106011024.png", "202106011030.png"]
    with pytest.raises(ValueError, match="another model .*persistence.*another --out"):
        main(args("--model", "persistence", "--watch", radar, "--out", out, "--once"))
    with pytest.raises(ValueError, match="another preparation"):
        main([*watched, "--resize", "8"])


def test_baseline_on_an_importer_archive(tmp_path, capsys):
    from test_radar_archives import fmi_archive

    radar, out = tmp_path / "fmi", tmp_path / "out"
    fmi_archive(radar, n=6, start="2016-09-28T16:00")
    files = sorted(radar.iterdir())
    later = tmp_path / "later"
    later.mkdir()
    for f in files[-2:]:
        f.rename(later / f.name)
    watched = args("--model", "persistence", "--importer", "fmi_pgm", "--watch", radar,
                   "--out", out, "--horizon", 2, "--input_frames", 2, "--once")
    assert main(watched) == 0
    assert list(forecast_of(out)["timestamps"]) == ["2016-09-28T16:20:00", "2016-09-28T16:25:00"]
    for f in sorted(later.iterdir()):
        f.rename(radar / f.name)
    assert main(watched) == 0
    assert "-> forecast 16:30..16:35" in capsys.readouterr().err
    assert main(args("--model", "persistence", "--importer", "fmi_pgm", "--input", radar,
                     "--out", tmp_path / "n", "--horizon", 2, "--input_frames", 2)) == 0
    a, b = forecast_of(out), forecast_of(tmp_path / "n")
    np.testing.assert_allclose(a["physical"], b["physical"], atol=1e-5)
    assert str(a["units"]) == str(b["units"]) == "dbz"


def test_watch_errors_are_clear(tmp_path):
    radar = tmp_path / "radar"
    drop(radar, 0)
    base = ["--model", "persistence", "--out", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="either --input ARCHIVE .* or --watch FOLDER"):
        main([*base, "--watch", str(radar), "--input", str(radar)])
    with pytest.raises(FileNotFoundError, match="not a folder"):
        main([*base, "--watch", str(radar / "202106011000.png")])
    with pytest.raises(ValueError, match="one file per frame.*--input"):
        main([*base, "--watch", str(radar), "--format", "npz"])
    with pytest.raises(ValueError, match="--input ARCHIVE .*--watch FOLDER"):
        main(base)
    with pytest.raises(ValueError, match="--max_files must be at least 1"):
        main([*base, "--watch", str(radar), "--max_files", "0"])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "stream_state.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a stream state.*delete it"):
        main([*base, "--watch", str(radar), "--once"])


def test_a_frame_on_another_grid_is_skipped(tmp_path, capsys):
    radar = tmp_path / "radar"
    for i in range(2):
        drop(radar, i)
    w = watch.Watcher(watch.WatchConfig(folder=radar, out=tmp_path / "o", model="persistence",
                                        input_frames=2, horizon=1))
    w.warm_up()
    write_image_folder(radar, np.zeros((1, 20, 20), np.uint8), (T0 + STEP * 2)[None])
    drop(radar, 3)
    assert w.poll() == 2
    log = capsys.readouterr().err
    assert "202106011012.png -> skipped: its frames of C×H×W [1, 20, 20] differ from the " \
           "stream's [1, 32, 32]" in log
    assert "202106011018.png -> gap of 12 min" in log


def test_watch_from_python(tmp_path, capsys):
    """`convcast.watch` is the Python API of the watcher: a baseline by name, typed radar
    options, the log to a callable of the caller's."""
    radar, out, log = tmp_path / "radar", tmp_path / "out", []
    for i in range(3):
        drop(radar, i)
    assert convcast.watch(radar, out, model="persistence", once=True, input_frames=2, horizon=2,
                          radar={"step_minutes": 6}, say=log.append) == 0
    fc = forecast_of(out)
    assert fc["forecast"].shape[0] == 2 and str(fc["model"]) == "persistence"
    assert list(fc["timestamps"]) == ["2021-06-01T10:18:00", "2021-06-01T10:24:00"]
    assert any("warming up from 2 of 3 frames" in line for line in log)
    assert capsys.readouterr().err == ""  # everything went to the caller's log
    with pytest.raises(ValueError, match="unknown radar options \\['stepminutes'\\]"):
        convcast.watch(radar, out, model="persistence", radar={"stepminutes": 6})
    with pytest.raises(ValueError, match="model 'predrnn' is not trained"):
        convcast.watch(radar, out, model="predrnn", once=True)


def test_once_with_a_corrupt_newest_file_forecasts_from_the_latest_readable_window(
        tmp_path, capsys):
    """Five readable gap-free frames, then a corrupt newest one: --once forecasts from the five
    (saying which file was skipped) and exits 0; with nothing readable enough it exits 1."""
    radar, out = tmp_path / "radar", tmp_path / "out"
    for i in range(6):
        drop(radar, i)
    (radar / "202106011036.png").write_bytes(b"not a png")  # frame 6, the newest
    base = ["--model", "persistence", "--watch", str(radar), "--out", str(out),
            "--input_frames", "5", "--horizon", "2", "--once"]
    assert main(base) == 0
    log = capsys.readouterr().err
    assert "202106011036.png -> skipped: unreadable" in log
    assert "could not be read: warming up from 2021-06-01T10:06 instead" in log
    fc = forecast_of(out)
    assert list(fc["input_timestamps"])[-1] == "2021-06-01T10:30:00"  # the last readable frame
    lonely, out2 = tmp_path / "lonely", tmp_path / "out2"
    drop(lonely, 0)
    (lonely / "202106011006.png").write_bytes(b"")  # empty: still being written?
    (lonely / "202106011012.png").write_bytes(b"not a png")
    assert main(["--model", "persistence", "--watch", str(lonely), "--out", str(out2),
                 "--input_frames", "2", "--horizon", "1", "--once"]) == 1
    assert "no forecast: the newest file 202106011012.png could not be read" in \
        capsys.readouterr().err
    assert not (out2 / "forecast.npz").exists()


def test_watch_draws_an_ensemble_as_a_nowcast_does(tmp_path):
    """`--members` / `--probability_thresholds` in watch mode: each forecast carries the members
    and exceedance probabilities that a nowcast of the same frames gives (a seeded ensemble)."""
    pytest.importorskip("pysteps")
    radar, out, log = tmp_path / "radar", tmp_path / "out", []
    levels = np.zeros((4, 32, 32), np.uint8)
    for i in range(4):  # a rain cell moving right by one pixel per step
        levels[i, 8:20, 6 + i:18 + i] = 120
        write_image_folder(radar, levels[i:i + 1], (T0 + STEP * i)[None])
    kw = dict(input_frames=3, horizon=2, members=3, probability_thresholds=(0.5, 2.0))
    assert convcast.watch(radar, out, model="steps", once=True, radar={"step_minutes": 6},
                          say=log.append, **kw) == 0
    watched = forecast_of(out)
    fc = convcast.forecast(convcast.create_model("steps"), str(radar),
                           radar={"step_minutes": 6, "format": "png"}, **kw)
    assert watched["members"].shape == (3, 2, 1, 32, 32)
    assert np.ptp(watched["members"], axis=0).max() > 0  # three different members
    np.testing.assert_allclose(watched["members"], fc.members, atol=1e-5)
    np.testing.assert_allclose(watched["probabilities"], fc.probabilities, atol=1e-6)
    np.testing.assert_array_equal(watched["probability_thresholds"], [0.5, 2.0])
    with pytest.raises(ValueError, match="give members=N too"):
        convcast.watch(radar, out, model="steps", probability_thresholds=(1.0,))
    assert main(args("--model", "persistence", "--watch", radar, "--out", tmp_path / "cli",
                     "--once", "--step_minutes", 6, "--input_frames", 2, "--horizon", 2,
                     "--members", 2, "--probability_thresholds", 1)) == 0
    assert forecast_of(tmp_path / "cli")["members"].shape == (1, 2, 1, 32, 32)  # one member

"""The data layer's contracts: one source registry (a new format is one module), the typed data
description (and the checkpoints written before it), the decoded-frame cache, one inference path.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli, squares_rgb, write_video

from convcast.data import DataDescription, FramesDataModule, get_method, list_sources
from convcast.data.cache import PreparedFrames
from convcast.data.sources import FrameSource, open_sources, register_source
from convcast.data.sources import base as registry
from convcast.data.sources.video import VideoSource
from convcast.inference import forecast
from convcast.train.checkpoint import load_checkpoint

LEGACY = Path(__file__).parent / "data" / "legacy"


# ---- the registry -------------------------------------------------------------------------------
def test_registry_names_every_reader_and_lists_them_in_errors(tmp_path):
    assert {"video", "images", "npy", "npz", "hdf5", "netcdf", "zarr"} <= set(list_sources())
    assert get_method("png") is get_method("images")  # aliases
    with pytest.raises(ValueError, match="valid: .*hdf5.*npz.*video"):
        get_method("grib9")
    (tmp_path / "x.grib9").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no reader for .*\.grib9.*readable: .*\.mp4"):
        open_sources(tmp_path / "x.grib9")
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="npy reader takes no option time_format"):
        open_sources(tmp_path / "a.npy", time_format="%Y")


@pytest.fixture
def ramp_reader():
    """A reader of a made-up format, registered the way a new module would: one class."""

    @register_source("ramp", (".ramp",))
    class RampSource(FrameSource):
        """`.ramp` text files: `T H W` on one line; frame t is t / T everywhere."""

        def __init__(self, path, scale: float = 1.0) -> None:
            self.path, self.name, self.metadata = Path(path), Path(path).name, {}
            t, h, w = (int(v) for v in self.path.read_text().split())
            self.num_frames, self.frame_shape, self.dtype = t, (1, h, w), np.dtype(np.float32)
            self.scale = scale

        def _read(self, start, stop):
            t = np.arange(start, stop, dtype=np.float32) / self.num_frames * self.scale
            return np.broadcast_to(t[:, None, None, None], (stop - start, *self.frame_shape))

    yield RampSource
    registry._READERS.pop("ramp")


def test_a_new_reader_is_one_module_and_trains_through_fit(tmp_path, ramp_reader):
    (tmp_path / "a.ramp").write_text("60 8 8")
    (src,) = open_sources(tmp_path / "a.ramp")
    assert isinstance(src, ramp_reader) and src.read(30, 31).max() == pytest.approx(0.5)
    cli("fit", *FIT_QUIET, "--trainer.default_root_dir", tmp_path / "run",
        "--trainer.max_steps", 2, "--trainer.logger", "false", "--images", "null",
        "--lr_monitor", "null", "--model.model_name", "next_frame",
        "--model.model_kwargs", "{hidden_channels: 2}", "--data", "convcast.data.FramesDataModule",
        "--data.path", tmp_path / "a.ramp", "--data.input_frames", 3, "--data.output_frames", 2,
        "--data.batch_size", 4, "--data.reader_kwargs", "{scale: 0.5}")
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    d = load_checkpoint(ckpt).description
    assert d.frame_size == (8, 8) and d.source == str(tmp_path / "a.ramp")


# ---- the decoded-frame cache ---------------------------------------------------------------------
def test_video_frames_are_decoded_once_into_the_cache(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.mp4", squares_rgb(30))
    cache = tmp_path / "cache"
    dm = FramesDataModule(str(video), input_frames=3, output_frames=2, frame_size=8, channels=1,
                          cache_dir=str(cache), batch_size=4)
    dm.setup()
    x, y = dm.train_set[5]
    files = sorted(cache.glob("*.f32"))
    assert len(files) == 1 and x.shape == (3, 1, 8, 8)
    uncached = PreparedFrames(VideoSource(video), 1, 8).read(5, 10)
    np.testing.assert_array_equal(torch.cat([x, y]).numpy(), uncached)  # same frames, bit exact

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(VideoSource, "_read", no_decoding)
    again = FramesDataModule(str(video), input_frames=3, output_frames=2, frame_size=8,
                             channels=1, cache_dir=str(cache), batch_size=4)
    again.setup()  # a later run: the statistics and every window come from the cache
    assert torch.equal(again.train_set[5][0], x)
    monkeypatch.undo()
    os.utime(video, ns=(0, 10**9))  # the file changed: a new entry, never stale frames
    changed = FramesDataModule(str(video), input_frames=3, output_frames=2, frame_size=8,
                               channels=1, cache_dir=str(cache))
    changed.setup()
    assert changed.train_set[0][0].shape == (3, 1, 8, 8)  # the first read fills the cache
    assert len(list(cache.glob("*.f32"))) == 2


def test_a_frame_cache_of_another_length_is_a_new_entry_and_a_wrong_size_is_refilled(tmp_path):
    """The frame count is part of the key (a video read with a counted length, e.g.
    `count_frames`, has its own entry), and an entry whose size is not what its key holds is
    filled again instead of failing in a memory map."""
    video = write_video(tmp_path / "v.mp4", squares_rgb(12))
    cache = tmp_path / "cache"
    frames = PreparedFrames(VideoSource(video), 1, 8, cache=True, cache_dir=cache)
    expected = frames.read(0, 12)
    path = frames.cache_path
    path.write_bytes(path.read_bytes()[:100])  # a damaged entry
    fresh = PreparedFrames(VideoSource(video), 1, 8, cache=True, cache_dir=cache)
    np.testing.assert_array_equal(fresh.read(0, 12), expected)  # refilled, not a mmap error
    source = VideoSource(video)
    source.num_frames = 10
    assert PreparedFrames(source, 1, 8, cache=True, cache_dir=cache).cache_path != path


# ---- the typed description, and checkpoints written before it ------------------------------------
def test_description_round_trip_and_the_legacy_dictionaries():
    d = load_checkpoint(LEGACY / "radar_dbz_v1.ckpt").description
    assert d.radar.units == "dbz" and d.radar.dbz_range == (0.0, 60.0)
    assert d.radar.zr == (200.0, 1.6) and d.step_minutes == 6.0 and d.frame_size == (8, 8)
    assert DataDescription.from_dict(d.to_dict()) == d
    # rain rate by the archive's own range and Z-R (Marshall-Palmer), not HKO-7's
    rain = float(d.to_physical(torch.tensor(0.5)))
    assert rain == pytest.approx((10 ** (30 / 10) / 200) ** (1 / 1.6), rel=1e-5)
    own = load_checkpoint(LEGACY / "own_minmax_v1.ckpt").description
    assert own.value_scale == 255.0 and own.normalization.kind == "minmax"
    assert own.physical_units is None and own.input_frames == 4


def test_checkpoints_from_before_the_description_forecast_as_they_did(tmp_path):
    """predict and nowcast give, to float tolerance, what the code that wrote them gave."""
    expected = np.load(LEGACY / "expected_v1.npz")
    cli("predict", "--ckpt_path", LEGACY / "own_minmax_v1.ckpt", "--input",
        LEGACY / "squares.mp4", "--out", tmp_path / "p.npy", "--horizon", 3)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expected["predict"], atol=1e-4)
    cli("nowcast", "--ckpt_path", LEGACY / "radar_dbz_v1.ckpt", "--input",
        LEGACY / "radar_dbz_v1_inputs.npz", "--out", tmp_path / "now", "--horizon", 3)
    z = np.load(tmp_path / "now" / "forecast.npz")
    np.testing.assert_allclose(z["forecast"], expected["nowcast"], atol=1e-4)
    assert list(z["timestamps"]) == list(expected["nowcast_times"])


def test_a_stored_config_with_the_old_class_paths_still_tests(tmp_path):
    video = shutil.copy(LEGACY / "squares.mp4", tmp_path / "squares.mp4")
    cli("test", "--ckpt_path", LEGACY / "own_minmax_v1.ckpt", "--data.path", video,
        *FIT_QUIET, "--out", tmp_path / "report", "--animation", "none")
    assert (tmp_path / "report" / "metrics.json").exists()


def test_shipped_demo_weights_give_the_same_forecasts():
    from convcast.cli.demo import load_shipped
    from convcast.models import create_model

    ref = np.load(LEGACY / "demo_forecast_v1.npz")
    blob = load_shipped()
    model = create_model("encoder_forecaster_demo")
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    with torch.no_grad():
        y = model.eval()(torch.from_numpy(ref["x"]).float() / 255, 3)
    np.testing.assert_allclose(y.numpy(), ref["y"], atol=1e-5)


# ---- the one inference path ---------------------------------------------------------------------
def test_forecast_api_from_arrays_paths_and_sources(tmp_path):
    from convcast.models import create_model

    frames = (np.random.default_rng(0).random((6, 1, 8, 8)) * 255).astype(np.uint8)
    fc = forecast(create_model("persistence"), frames, 2)
    assert fc.frames.shape == (2, 1, 8, 8) and fc.input_scale == 255
    np.testing.assert_allclose(fc.frames[1], frames[-1], atol=1e-3)  # in the input's own values
    np.save(tmp_path / "f.npy", frames)
    by_path = forecast(create_model("persistence"), tmp_path / "f.npy", 2)
    np.testing.assert_array_equal(by_path.frames, fc.frames)
    assert any("layout TCHW" in n for n in by_path.notes)
    with pytest.raises(ValueError, match="has 6 frames but the model reads 9"):
        forecast(create_model("persistence"), frames, 2, input_frames=9)


def test_the_package_exports_the_inference_path():
    import convcast

    assert convcast.forecast is forecast

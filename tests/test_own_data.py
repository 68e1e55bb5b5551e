"""Own data: readers, layouts, windows, splits, normalisation, lazy reading, resumable order."""

from __future__ import annotations

import pickle

import cv2
import h5py
import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli, shapes_array, squares_rgb, write_frame_folder, write_video

from convcast.data.loader import ResumableSampler
from convcast.data.normalize import Normalization, fit_normalization
from convcast.data.own import FramesDataModule, discover_sources, split_windows
from convcast.data.sources.arrays import array_info, npz_member
from convcast.data.sources.layout import guess_layout
from convcast.data.sources.video import VideoSource
from convcast.data.transform import prepare_frames


def test_guess_layout() -> None:
    assert guess_layout((10, 8, 8)) == "THW"
    assert guess_layout((10, 1, 8, 8)) == "TCHW"
    assert guess_layout((10, 8, 8, 3)) == "THWC"
    assert guess_layout((5, 10, 8, 8)) == "NTHW"
    assert guess_layout((5, 10, 3, 8, 8)) == "NTCHW"
    assert guess_layout((5, 10, 8, 8, 1)) == "NTHWC"
    with pytest.raises(ValueError, match="layout"):
        guess_layout((10, 3, 8, 3))  # channels first or last?
    with pytest.raises(ValueError, match="neither"):
        guess_layout((10, 8, 8, 8), sequences=False)


def test_npz_members_are_memory_mapped_unless_compressed(tmp_path) -> None:
    """np.savez members stream from disk like .npy; savez_compressed ones load (and say so when
    large); the shape is read from the header without decompressing."""
    seqs = shapes_array(2, 9)  # [N, T, H, W]
    np.savez(tmp_path / "a.npz", frames=seqs, other=np.arange(3.0))
    np.savez_compressed(tmp_path / "c.npz", frames=np.asfortranarray(seqs))
    stored = npz_member(tmp_path / "a.npz", "frames")
    assert isinstance(stored, np.memmap)
    np.testing.assert_array_equal(stored, seqs)
    np.testing.assert_array_equal(npz_member(tmp_path / "a.npz", "other"), np.arange(3.0))
    assert array_info(tmp_path / "c.npz") == (seqs.shape, seqs.dtype)
    with pytest.warns(UserWarning, match="compressed"):
        packed = npz_member(tmp_path / "c.npz", "frames", warn_bytes=0)
    assert not isinstance(packed, np.memmap)
    np.testing.assert_array_equal(packed, seqs)
    srcs = discover_sources(tmp_path / "c.npz")  # small: loaded quietly
    np.testing.assert_array_equal(srcs[1].read(2, 5)[:, 0], seqs[1, 2:5])
    with pytest.raises(ValueError, match="name one with key"):
        discover_sources(tmp_path / "a.npz")
    (tmp_path / "bad.npz").write_bytes((tmp_path / "a.npz").read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match="not a readable .npz"):
        discover_sources(tmp_path / "bad.npz")


def test_video_source_reads_any_window_like_a_full_decode(tiny_video) -> None:
    """Windows read in random order (seeks, forward reads, cache hits) equal a plain decode."""
    cap = cv2.VideoCapture(str(tiny_video))
    full = []
    while (frame := cap.read())[0]:
        full.append(frame[1][:, :, ::-1])
    full = np.stack(full).transpose(0, 3, 1, 2)  # [T, 3, H, W] RGB
    src = VideoSource(tiny_video, cache_frames=8)
    assert src.num_frames == len(full) == 40 and src.frame_shape == (3, 24, 32)
    for start in np.random.default_rng(0).permutation(35)[:15]:
        np.testing.assert_array_equal(src.read(start, start + 5), full[start:start + 5])
    clone = pickle.loads(pickle.dumps(src))  # what a DataLoader worker gets: no open handle
    assert "_h_dec" not in clone.__dict__
    np.testing.assert_array_equal(clone.read(30, 33), full[30:33])


def test_discover_every_kind_of_input(tmp_path) -> None:
    frames = squares_rgb(10, 16, 16)
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "b.avi", frames)
    write_video(tmp_path / "videos" / "a.mp4", frames)
    assert [s.name for s in discover_sources(tmp_path / "videos")] == ["a.mp4", "b.avi"]
    write_frame_folder(tmp_path / "one", frames)  # frame1.png ... frame10.png
    (one,) = discover_sources(tmp_path / "one")
    # natural order: 10 after 9
    np.testing.assert_array_equal(one.read(8, 10), frames[8:10].transpose(0, 3, 1, 2))
    write_frame_folder(tmp_path / "many" / "s2", frames[:6, :, :, 0])
    write_frame_folder(tmp_path / "many" / "s10", frames[:7, :, :, 0])
    assert [s.num_frames for s in discover_sources(tmp_path / "many")] == [6, 7]

    seqs = shapes_array(3, 12)  # [N, T, H, W]
    np.save(tmp_path / "seqs.npy", seqs)
    srcs = discover_sources(tmp_path / "seqs.npy")
    assert len(srcs) == 3 and isinstance(srcs[0].file.array, np.memmap)  # memory-mapped
    np.testing.assert_array_equal(srcs[2].read(4, 7)[:, 0], seqs[2, 4:7])
    np.savez(tmp_path / "tn.npz", frames=seqs.transpose(1, 0, 2, 3))  # [T, N, H, W]
    srcs = discover_sources(tmp_path / "tn.npz", layout="TNHW")
    np.testing.assert_array_equal(srcs[1].read(0, 12)[:, 0], seqs[1])
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["radar/frames"] = seqs[:, :, None]  # [N, T, C, H, W]
        f["other"] = np.zeros(3)
    with pytest.raises(ValueError, match="radar/frames"):
        discover_sources(tmp_path / "d.h5")  # two datasets: name one
    srcs = discover_sources(tmp_path / "d.h5", key="radar/frames")
    assert isinstance(srcs[0].file.array, h5py.Dataset)  # read lazily, per window
    np.testing.assert_array_equal(srcs[0].read(3, 5)[:, 0], seqs[0, 3:5])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no sequences"):
        discover_sources(tmp_path / "empty")


def test_time_split_never_straddles_and_file_split_keeps_files_whole() -> None:
    windows, ranges = split_windows([40, 23], window=6, stride=2, split="time",
                                    fractions=(0.6, 0.2, 0.2))
    owner = {}
    for split, rs in ranges.items():
        for i, lo, hi in rs:
            for t in range(lo, hi):
                assert (i, t) not in owner  # a frame belongs to one split
                owner[i, t] = split
    for split, ws in windows.items():
        assert ws, split
        for i, t in ws:
            assert {owner[i, u] for u in range(t, t + 6)} == {split}  # whole window inside
    # the windows that would straddle the train/val cut of sequence 0 (frame 24) are dropped
    assert not [t for i, t in windows["train"] + windows["val"] if i == 0 and t < 24 < t + 6]

    windows, ranges = split_windows([10] * 7, window=4, stride=1, split="file",
                                    fractions=(0.6, 0.2, 0.2), seed=3)
    files = {s: {i for i, _ in ws} for s, ws in windows.items()}
    assert files["train"] and files["val"] and files["test"]
    assert not (files["train"] & files["val"]) and not (files["train"] & files["test"])
    assert sum(len(f) for f in files.values()) == 7
    with pytest.raises(ValueError, match="a sequence per split"):
        split_windows([10, 10], 4, 1, "file", (0.6, 0.2, 0.2))


def test_normalization_fit_apply_invert() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.normal(3.0, 2.0, (4, 8, 8)) for _ in range(5)]
    allf = np.concatenate(frames)
    mm = fit_normalization("minmax", iter(frames))
    assert (mm.low, mm.high) == (allf.min(), allf.max())
    assert mm.apply(allf).min() == 0 and mm.apply(allf).max() == 1
    st = fit_normalization("standard", iter(frames))
    assert st.mean == pytest.approx(allf.mean()) and st.std == pytest.approx(allf.std())
    np.testing.assert_allclose(st.invert(st.apply(allf)), allf)
    assert Normalization.from_dict(st.to_dict()) == st
    fixed = fit_normalization("minmax", iter([]), value_range=(0, 70))
    assert fixed.apply(35.0) == 0.5
    with pytest.raises(ValueError, match="valid: none, minmax, standard"):
        fit_normalization("zscore", iter(frames))


def test_prepare_frames_gray_resize_scale() -> None:
    rgb = np.zeros((2, 3, 8, 12), np.uint8)  # [T, C, H, W], as sources read them
    rgb[:, 1] = 255  # pure green
    out = prepare_frames(rgb, channels=1, size=(4, 6))
    assert out.shape == (2, 1, 4, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, 0.587, rtol=1e-5)  # BT.601 luma of green, scaled to [0, 1]
    assert prepare_frames(rgb[:, :1], channels=3).shape == (2, 3, 8, 12)


def test_datamodule_minmax_stats_from_train_only(tmp_path) -> None:
    """A ramp in time: minmax must use the training frames' range, and the windows line up."""
    t = np.arange(50, dtype=np.float32)
    data = np.broadcast_to(t[:, None, None], (50, 4, 4)).copy()  # frame t has value t
    np.save(tmp_path / "ramp.npy", data)
    dm = FramesDataModule(str(tmp_path / "ramp.npy"), input_frames=3, output_frames=2,
                          stride=5, normalization="minmax", split_fractions=(0.6, 0.2, 0.2),
                          batch_size=2)
    dm.setup()
    assert (dm.normalization.low, dm.normalization.high) == (0.0, 29.0)  # train: frames 0..29
    assert [w for w in dm.val_set.windows] == [(0, 30), (0, 35)]  # 30..39, none crosses 40
    x, y = dm.val_set[1]
    np.testing.assert_allclose(x[:, 0, 0, 0] * 29, [35, 36, 37])
    np.testing.assert_allclose(y[:, 0, 0, 0] * 29, [38, 39])
    d = dm.describe()
    assert d.frame_size == (4, 4) and d.channels == 1
    assert d.normalization.kind == "minmax" and d.value_scale == 1.0


def _ramp(first: int, num_frames: int, size: int = 4) -> np.ndarray:
    """float32 `[T, size, size]` frames whose value is the frame number, counted from `first`."""
    t = np.arange(first, first + num_frames, dtype=np.float32)
    return np.broadcast_to(t[:, None, None], (num_frames, size, size)).copy()


def test_datamodule_separate_val_test_paths(tmp_path) -> None:
    """A ready-made split: val/test take all their own windows in order; path trains alone."""
    np.save(tmp_path / "train.npy", _ramp(0, 20))
    (tmp_path / "val").mkdir()  # a folder of two sequences of different lengths
    np.save(tmp_path / "val" / "a.npy", _ramp(100, 7))
    np.save(tmp_path / "val" / "b.npy", _ramp(200, 6))
    np.save(tmp_path / "test.npy", _ramp(50, 8))
    dm = FramesDataModule(str(tmp_path / "train.npy"), val_path=str(tmp_path / "val"),
                          test_path=str(tmp_path / "test.npy"), input_frames=3, output_frames=2,
                          stride=1, normalization="minmax", batch_size=2)
    dm.setup()
    assert dm.train_set.windows == [(0, t) for t in range(16)]  # all of path, no split
    assert dm.val_set.windows == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert dm.test_set.windows == [(0, t) for t in range(4)]
    # minmax from the training ramp only (0..19), though val/test reach 204
    assert (dm.normalization.low, dm.normalization.high) == (0.0, 19.0)
    x, y = dm.val_set[3]  # second val sequence, from its first frame
    np.testing.assert_allclose(x[:, 0, 0, 0] * 19, [200, 201, 202], rtol=1e-6)
    np.testing.assert_allclose(y[:, 0, 0, 0] * 19, [203, 204], rtol=1e-6)
    x, _ = next(iter(dm.test_dataloader()))  # in order, unshuffled
    np.testing.assert_allclose(x[:, 0, 0, 0, 0] * 19, [50, 51], rtol=1e-6)
    assert len(list(dm.train_dataloader())) == 8  # the resumable loader: 16 windows / 2
    d = dm.describe()
    assert d.normalization.high == 19.0 and d.source == str(tmp_path / "train.npy")

    # only val_path: path is cut into train/test by the fractions renormalised, 0.8:0.1 -> 8:1
    dm = FramesDataModule(str(tmp_path / "train.npy"), val_path=str(tmp_path / "val"),
                          input_frames=1, output_frames=1, stride=1, normalization="standard",
                          split_fractions=(0.8, 0.1, 0.1))
    dm.setup()
    assert dm.val_set.windows == [(0, t) for t in range(6)] + [(1, t) for t in range(5)]
    assert dm.train_set.windows == [(0, t) for t in range(17)]  # frames 0..17 (20 * 8/9 = 18)
    assert dm.test_set.windows == [(0, 18)]  # frames 18, 19 of path
    assert dm.normalization.mean == pytest.approx(8.5)  # mean of training frames 0..17 only
    # uint8 frames (scaled by 1/255) against float ones: a clear error, not silent misscaling
    write_frame_folder(tmp_path / "test_png", _ramp(50, 8).astype(np.uint8))
    with pytest.raises(ValueError, match=r"value type \['float32'\] vs \['uint8'\]"):
        FramesDataModule(str(tmp_path / "train.npy"), test_path=str(tmp_path / "test_png"),
                         input_frames=2, output_frames=1).setup()


def test_datamodule_separate_paths_must_match(tmp_path) -> None:
    np.save(tmp_path / "train.npy", _ramp(0, 12, size=4))
    np.save(tmp_path / "val.npy", _ramp(0, 12, size=6))
    train, val = str(tmp_path / "train.npy"), str(tmp_path / "val.npy")
    with pytest.raises(ValueError, match="frame size") as err:
        FramesDataModule(train, val_path=val, input_frames=2, output_frames=1).setup()
    assert train in str(err.value) and val in str(err.value) and "frame_size" in str(err.value)
    dm = FramesDataModule(train, val_path=val, input_frames=2, output_frames=1, frame_size=4)
    dm.setup()  # resized alike: fine
    assert tuple(dm.val_set[0][0].shape) == (2, 1, 4, 4)

    write_frame_folder(tmp_path / "rgb", squares_rgb(6, 8, 8))
    write_frame_folder(tmp_path / "gray", squares_rgb(6, 8, 8)[..., 0])
    with pytest.raises(ValueError, match=r"channels \[1\] vs \[3\]"):
        FramesDataModule(str(tmp_path / "gray"), test_path=str(tmp_path / "rgb"),
                         input_frames=2, output_frames=1).setup()
    FramesDataModule(str(tmp_path / "gray"), test_path=str(tmp_path / "rgb"), channels=1,
                     input_frames=2, output_frames=1).setup()

    with pytest.raises(FileNotFoundError, match="val_path .*missing.* not found"):
        FramesDataModule(train, val_path=str(tmp_path / "missing"), input_frames=2,
                         output_frames=1).setup()
    np.save(tmp_path / "short.npy", _ramp(0, 4))
    with pytest.raises(ValueError, match="no window of 5 frames fits in test_path"):
        FramesDataModule(train, test_path=str(tmp_path / "short.npy"), input_frames=4,
                         output_frames=1).setup()


def test_cli_fit_with_separate_val_test_paths(tmp_path, one_thread) -> None:
    """The new init args reach the datamodule from the command line and land in config.yaml."""
    import yaml

    np.save(tmp_path / "train.npy", shapes_array(2, 12))
    np.save(tmp_path / "val.npy", shapes_array(1, 8, seed=1))
    np.save(tmp_path / "test.npy", shapes_array(1, 8, seed=2))
    cli("fit", *FIT_QUIET, "--trainer.default_root_dir", tmp_path / "run",
        "--trainer.max_steps", 2, "--model.model_name", "next_frame", "--model.model_kwargs",
        "{hidden_channels: 2}", "--data", "convcast.data.FramesDataModule",
        "--data.path", tmp_path / "train.npy", "--data.val_path", tmp_path / "val.npy",
        "--data.test_path", tmp_path / "test.npy", "--data.input_frames", 3,
        "--data.output_frames", 2, "--data.normalization", "minmax", "--data.batch_size", 4,
        "--images", "null")
    log_dir = tmp_path / "run" / "lightning_logs" / "version_0"
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["data"]["init_args"]["val_path"] == str(tmp_path / "val.npy")
    assert config["data"]["init_args"]["test_path"] == str(tmp_path / "test.npy")
    cli("test", "--ckpt_path", log_dir / "checkpoints" / "last.ckpt", "--out", tmp_path / "rep",
        "--animation", "none", *FIT_QUIET)
    assert (tmp_path / "rep" / "metrics.json").exists()


def test_datamodule_on_video_converts_and_batches(tiny_video) -> None:
    dm = FramesDataModule(str(tiny_video), input_frames=4, output_frames=2, stride=3,
                          frame_size=(12, 16), channels=1, batch_size=2, num_workers=1)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))  # through a worker process: sources pickle
    assert x.shape == (2, 4, 1, 12, 16) and y.shape == (2, 2, 1, 12, 16)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_resumable_sampler_order_is_a_function_of_seed_and_position() -> None:
    pos = {"done": 0}
    a = ResumableSampler(range(20), shuffle=True, seed=1, batch_size=4, batches_per_epoch=5,
                         position=lambda: pos["done"])
    epoch0 = list(a)
    pos["done"] = 7  # epoch 1, two batches in
    rest = list(a)
    pos["done"] = 5
    epoch1 = list(a)
    assert sorted(epoch0) == list(range(20)) and epoch0 != epoch1
    assert rest == epoch1[8:]
    b = ResumableSampler(range(20), num_replicas=2, rank=1, shuffle=True, seed=1, batch_size=2,
                         batches_per_epoch=5, position=lambda: 0)
    assert list(b) == epoch0[1::2]  # rank 1 takes every other index of the same permutation
    assert torch.utils.data.DistributedSampler in type(b).__mro__

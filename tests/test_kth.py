"""KTH and labelled video folders: scanning, splits by person, clips, flips, decoding once,
prediction windows, the download's offline and checksum errors, a prediction config's step."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli, write_video

import convcast.data.download as net
import convcast.data.kth.datamodules as dms
import convcast.data.kth.download as dl
from convcast.data.kth import (
    SPLITS,
    KTHDataModule,
    KTHPredictionDataModule,
    LabelledVideoDataModule,
    load_video,
    scan_folder,
    split_groups,
    write_synthetic_kth,
)
from convcast.data.sources.video import VideoSource

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CLASSES = ["boxing", "handwaving", "walking"]  # the synthetic tree's: still, horizontal, vertical


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x 6 persons (1, 2, 4, 5 train, 3 val, 13 test under `tutorial`) x scenario d1,
    20 frames of 24x32 each."""
    return write_synthetic_kth(tmp_path_factory.mktemp("kth") / "kth")


def _module(tree: Path, **kwargs) -> KTHDataModule:
    return KTHDataModule(root=str(tree), frame_len=8, frame_size=(24, 32), batch_size=4,
                         **kwargs)


# ---- folders and splits ------------------------------------------------------------------------
def test_scan_reads_classes_and_persons(tree: Path) -> None:
    classes, videos = scan_folder(tree)
    assert classes == CLASSES
    assert len(videos) == 18 and {v.group for v in videos} == {1, 2, 3, 4, 5, 13}
    assert all(v.path.parent.name == classes[v.label] for v in videos)


def test_scan_errors_name_the_problem(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_folder(tmp_path / "nothing")
    with pytest.raises(ValueError, match="jogging.*not found"):
        scan_folder(tree, classes=["boxing", "jogging"])
    bad = tmp_path / "bad" / "walking"
    bad.mkdir(parents=True)
    (tmp_path / "bad" / "running").mkdir()
    write_video(bad / "clip.avi", np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"clip\.avi.*group_pattern"):
        scan_folder(tmp_path / "bad")
    with pytest.raises(ValueError, match="at least two"):
        scan_folder(tmp_path / "bad", group_pattern=r"(clip)")


def test_named_splits_cover_every_person_once() -> None:
    for name, split in SPLITS.items():
        persons = [p for stage in split.values() for p in stage]
        assert sorted(persons) == list(range(1, 26)), name
    assert SPLITS["schuldt"]["train"] == tuple(range(11, 19))  # Schuldt et al., as listed
    assert set(SPLITS["prediction"]["test"]) == set(range(17, 26))


def test_split_by_groups(tmp_path: Path) -> None:
    groups = [1, 2, 3, 4, 5, 6, "x"]
    mine = split_groups(groups, {"train": [1, 2, 3, "x"], "val": [4], "test": [5, 6]})
    assert mine == {"train": {1, 2, 3, "x"}, "val": {4}, "test": {5, 6}}
    a, b = split_groups(groups, "random", seed=3), split_groups(groups, "random", seed=3)
    assert a == b and set().union(*a.values()) == set(groups)
    assert sum(len(v) for v in a.values()) == len(groups)  # no group in two splits
    with pytest.raises(ValueError, match=r"group\(s\) \[6\] belong to no split"):
        split_groups(groups, {"train": [1, 2, 3, 4, 5, "x"]})
    with pytest.raises(ValueError, match="two splits"):
        split_groups([1, 2], {"train": [1, 2], "test": [2]})
    with pytest.raises(ValueError, match="unknown split 'nope'.*tutorial"):
        split_groups(groups, "nope")


# ---- classification clips ----------------------------------------------------------------------
def test_no_person_in_two_splits_and_clips_are_labelled(tree: Path) -> None:
    dm = _module(tree)
    dm.setup()
    persons = {s: {v.group for v in dm.splits[s]} for s in ("train", "val", "test")}
    assert persons == {"train": {1, 2, 4, 5}, "val": {3}, "test": {13}}
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (24, 6, 6)  # 2 clips/video
    clip, label = dm.val_set[0]
    assert clip.shape == (8, 1, 24, 32) and clip.dtype == torch.float32
    assert float(clip.min()) >= 0 and float(clip.max()) <= 1 and label == 0
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 8, 1, 24, 32) and y.dtype == torch.long
    info = dm.data_info()
    assert info["classes"] == CLASSES and info["clip_frames"] == 8
    assert info["frame_size"] == [24, 32] and info["channels"] == 1


def test_flips_only_in_training(tree: Path) -> None:
    dm = _module(tree)
    dm.setup()
    plain = torch.from_numpy(np.array(dm.train_set.videos[0][:8])).float() / 255  # clip 0
    torch.manual_seed(0)
    seen = [dm.train_set[0][0] for _ in range(20)]
    flipped = [torch.equal(c, plain.flip(-1)) for c in seen]
    assert any(flipped) and not all(flipped)
    assert all(torch.equal(c, plain) for c, f in zip(seen, flipped, strict=True) if not f)
    assert not dm.val_set.flip and not dm.test_set.flip
    val_plain = torch.from_numpy(np.array(dm.val_set.videos[0][:8])).float() / 255
    assert all(torch.equal(dm.val_set[0][0], val_plain) for _ in range(10))


def test_each_video_is_decoded_once(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return load_video(path, *args, **kwargs)

    monkeypatch.setattr(dms, "load_video", counting)
    dm = _module(tree)
    dm.setup("fit")
    assert len(calls) == 15  # 12 training and 3 validation videos
    for _ in range(2):  # two epochs read the decoded frames
        for _batch in dm.train_dataloader():
            pass
    dm.setup("fit")
    dm.setup("test")
    dm.setup("validate")
    assert len(calls) == 18 and len(set(calls)) == 18  # + the 3 test videos, nothing twice


def test_a_later_run_reads_the_decoded_frame_cache(tree: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVCAST_CACHE", str(tmp_path / "cache"))
    first = _module(tree)
    first.setup("fit")
    assert len(list((tmp_path / "cache" / "frames").glob("*.f32"))) == 15  # train + val videos

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(VideoSource, "_read", no_decoding)
    again = _module(tree)  # a later run with the same settings
    again.setup("fit")
    assert all(torch.equal(again.val_set[i][0], first.val_set[i][0]) for i in range(6))


def test_videos_too_short_for_a_clip(tree: Path) -> None:
    with pytest.raises(ValueError, match="no window of 50 frames.*longest has 20"):
        KTHDataModule(root=str(tree), frame_len=50, frame_size=(24, 32)).setup("fit")


def test_generic_folder_and_scenarios(tree: Path, tmp_path: Path) -> None:
    dm = LabelledVideoDataModule(root=str(tree), split={"train": [1, 2, 4, 5, 13], "val": [3]},
                                 frame_len=10, stride=5, frame_size=12, channels=3)
    dm.setup("fit")
    assert len(dm.train_set) == 15 * 3 and dm.train_set[0][0].shape == (10, 3, 12, 12)
    assert dm.data_info()["frame_size"] == [12, 12]
    mixed = tmp_path / "mixed"
    for name, size in (("a", (16, 16)), ("b", (24, 32))):
        (mixed / name).mkdir(parents=True)
        write_video(mixed / name / f"person01_{name}.avi", np.zeros((12, *size, 3), np.uint8))
    stored = LabelledVideoDataModule(root=str(mixed), split={"train": [1]}, frame_len=4,
                                     frame_size=None)
    with pytest.raises(ValueError, match="differ in frame size.*set frame_size"):
        stored.setup("fit")
    with pytest.raises(ValueError, match="unknown KTH scenario"):
        KTHDataModule(root=str(tree), scenarios=["d5"])
    d4 = KTHDataModule(root=str(tree), scenarios=["d4"])
    with pytest.raises(ValueError, match="0 videos"):
        d4.setup("fit")


# ---- prediction windows ------------------------------------------------------------------------
def test_prediction_windows_split_by_person(tmp_path: Path) -> None:
    root = write_synthetic_kth(tmp_path / "kth", persons=(1, 2, 15, 17), num_frames=40,
                               size=(32, 32))
    dm = KTHPredictionDataModule(root=str(root), frame_size=16, flip=True, batch_size=2)
    dm.setup()
    persons = {s: {v.group for v in dm.splits[s]} for s in ("train", "val", "test")}
    assert persons == {"train": {1, 2}, "val": {15}, "test": {17}}  # 1-14 / 15-16 / 17-25
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 10, 1, 16, 16) and y.shape == (2, 20, 1, 16, 16)
    full = torch.from_numpy(np.array(dm.train_set.videos[0][:30])).float() / 255
    torch.manual_seed(1)
    for _ in range(8):  # a flip mirrors input and target together
        x, y = dm.train_set[0]
        assert torch.equal(torch.cat([x, y]), full) or torch.equal(torch.cat([x, y]),
                                                                    full.flip(-1))
    d = dm.describe()  # what checkpoints store: 10 -> 20 gray frames of 16x16, uint8 / 255
    assert (d.input_frames, d.output_frames, d.channels, d.frame_size) == (10, 20, 1, (16, 16))
    assert d.value_scale == 255.0


def test_prediction_config_trains_one_step(tmp_path: Path, one_thread) -> None:
    root = write_synthetic_kth(tmp_path / "kth", persons=(1, 15, 17), num_frames=32)
    run = tmp_path / "run"
    cli("fit", "--config", CONFIGS / "kth_predict-cpu-small.yaml", "--data.root", root,
        *FIT_QUIET, "--trainer.default_root_dir", run, "--trainer.max_steps", 1,
        "--trainer.limit_val_batches", 1, "--data.batch_size", 2)
    ckpt = torch.load(run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)
    assert ckpt["global_step"] == 1
    info = ckpt["convcast_data"]
    assert (info["input_frames"], info["output_frames"], info["frame_size"]) == (10, 20, [32, 32])


# ---- download (offline here: only its failure paths) -------------------------------------------
def test_download_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(net.urllib.request, "urlopen", offline)
    dm = KTHDataModule(root=str(tmp_path / "kth"), download=True)
    with pytest.raises(OSError, match="are you offline.*by hand"):
        dm.prepare_data()
    assert not list((tmp_path / "kth").glob("*/*.avi"))
    assert not list(tmp_path.rglob("*.part"))


def test_download_checksum_failure_removes_the_file(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net.urllib.request, "urlopen",
                        lambda *a, **k: io.BytesIO(b"<html>not the archive</html>"))
    with pytest.raises(OSError, match="SHA-1.*corrupt"):
        dl.fetch_archive("boxing", cache=tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())


def test_download_unpacks_a_verified_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("person01_boxing_d1_uncomp.avi", b"video bytes")
    monkeypatch.setattr(net.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(buf.getvalue()))
    monkeypatch.setitem(dl.ARCHIVE_SHA1, "boxing", hashlib.sha1(buf.getvalue()).hexdigest())
    root = dl.download_kth(tmp_path / "kth", actions=["boxing"], cache=tmp_path / "cache")
    assert (root / "boxing" / "person01_boxing_d1_uncomp.avi").read_bytes() == b"video bytes"
    monkeypatch.setattr(net.urllib.request, "urlopen", None)  # present folders: no download
    dl.download_kth(tmp_path / "kth", actions=["boxing"], cache=tmp_path / "cache")

"""Moving MNIST generator: protocol, reproducibility, disjoint digit pools, the test file."""

import numpy as np
import pytest
import torch

from convcast.data import MovingMNIST, MovingMNISTDataModule, MovingMNISTTestFile, load_digits
from convcast.data.download import download, file_md5
from convcast.data.synthetic.moving_mnist import bouncing_positions, render_sequence


def test_bounces_stay_in_frame_and_reflect():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pos = bouncing_positions(rng, 60, free=36)
        assert pos.min() >= 0 and pos.max() <= 36
        steps = np.abs(np.diff(pos, axis=0))
        assert steps.max() <= 4  # 0.1 × 36 px per frame along each axis, at most
    # a digit that hits a wall comes back: over 60 frames every trajectory changes direction
    d = np.diff(bouncing_positions(np.random.default_rng(3), 60, free=36), axis=0)
    assert (np.sign(d) > 0).any() and (np.sign(d) < 0).any()


def test_sequences_follow_the_protocol():
    ds = MovingMNIST("train", 8)
    x, y = ds[0]
    assert x.shape == (10, 1, 64, 64) and y.shape == (10, 1, 64, 64)
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    seq = ds.sequence(0)
    assert seq.dtype == np.uint8 and seq.shape == (20, 64, 64)
    # each frame holds two 28×28 digits: non-zero pixels fit in two boxes and move over time
    assert all((f > 0).sum() > 50 for f in seq)
    assert not np.array_equal(seq[0], seq[10])


def test_overlap_takes_the_maximum():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, :, :14], digits[1, :, 14:] = 100, 200
    frames = render_sequence(np.random.default_rng(0), digits, seq_len=5, num_digits=6,
                             image_size=28)  # no room to move: all digits overlap fully
    assert set(np.unique(frames)) <= {0, 100, 200}
    assert frames.max() == 200


def test_seeds_reproduce_and_items_differ():
    a, b = MovingMNIST("train", 4, seed=7), MovingMNIST("train", 4, seed=7)
    assert np.array_equal(a.sequence(2), b.sequence(2))
    assert not np.array_equal(a.sequence(2), a.sequence(3))
    assert not np.array_equal(a.sequence(2), MovingMNIST("train", 4, seed=8).sequence(2))
    assert not np.array_equal(a.sequence(2), MovingMNIST("val", 4, seed=7).sequence(2))


def test_digit_pools_are_disjoint_and_real():
    pools = {s: load_digits(s) for s in ("train", "val", "test")}
    assert [len(p) for p in pools.values()] == [3500, 500, 1000]
    keys = {s: {d.tobytes() for d in p} for s, p in pools.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"]
    assert not keys["val"] & keys["test"]
    d = pools["train"][0]
    assert d.shape == (28, 28) and d.max() > 200 and (d == 0).mean() > 0.5  # ink on black


def test_three_digit_out_of_domain_test_set():
    dm = MovingMNISTDataModule(batch_size=2, train_size=4, val_size=2, test_size=2,
                               test_num_digits=3)
    dm.setup()
    assert dm.test_set.num_digits == 3 and dm.train_set.num_digits == 2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 10, 1, 64, 64)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_digits("holdout")
    with pytest.raises(ValueError, match="embedded, full"):
        load_digits("train", source="kaggle")
    with pytest.raises(IndexError):
        MovingMNIST("train", 2).sequence(5)


def test_standard_test_file_reader(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", data)
    ds = MovingMNISTTestFile(tmp_path / "mnist_test_seq.npy")
    assert len(ds) == 3
    x, y = ds[1]
    assert torch.allclose(x[:, 0] * 255, torch.from_numpy(data[:10, 1]).float())
    assert torch.allclose(y[:, 0] * 255, torch.from_numpy(data[10:, 1]).float())
    np.save(tmp_path / "bad.npy", data[:, 0])
    with pytest.raises(ValueError, match="expected"):
        MovingMNISTTestFile(tmp_path / "bad.npy")


def test_download_is_checksummed_and_cached(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"digits" * 100)
    md5 = file_md5(src)
    got = download(src.as_uri(), "copy.bin", md5, root=tmp_path / "cache")
    assert got.read_bytes() == src.read_bytes()
    src.unlink()  # cached now: no second fetch
    assert download(src.as_uri(), "copy.bin", md5, root=tmp_path / "cache") == got
    with pytest.raises(OSError, match="md5"):
        download((tmp_path / "cache" / "copy.bin").as_uri(), "other.bin", "0" * 32, tmp_path)
    assert not list(tmp_path.glob(".other.bin*"))  # no partial file left behind
    with pytest.raises(OSError, match="offline"):
        download((tmp_path / "missing.bin").as_uri(), "m.bin", md5, root=tmp_path)

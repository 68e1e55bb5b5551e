"""Augmentation of training windows: physical transforms of the whole window, drawn per
(seed, epoch, window), never on validation or test windows, resume-exact."""

import numpy as np
import pytest
import torch

from convcast.data.augment import VideoAugment
from convcast.data.loader import ResumableSampler

pytestmark = pytest.mark.usefixtures("one_thread")


def _window(T: int = 6, size: int = 8) -> torch.Tensor:
    """A bright square moving right by one pixel per frame, [T, 1, size, size] in [0, 1]."""
    seq = torch.zeros(T, 1, size, size)
    for t in range(T):
        seq[t, 0, 2:4, t:t + 2] = 0.8
    return seq


def test_transforms_keep_the_window_consistent():
    seq = _window()
    flipped = VideoAugment(flip=True)
    draws = [flipped(seq, i, 0) for i in range(12)]
    assert any(torch.equal(d, seq.flip(-1)) for d in draws)  # mirrored: moving left ...
    assert any(torch.equal(d, seq) for d in draws)  # ... or not, each about half the time
    back = VideoAugment(flip=False, reverse=1.0)(seq, 0, 0)
    assert torch.equal(back, seq.flip(0))  # played backwards: the square moves left
    same = VideoAugment(flip=False)(seq, 3, 1)
    assert torch.equal(same, seq)  # nothing asked, nothing done
    crop = VideoAugment(flip=False, crop_scale=0.5)(seq, 1, 0)
    assert crop.shape == seq.shape and not torch.equal(crop, seq)
    light = VideoAugment(flip=False, brightness=0.5, clip=1.0)(seq * 1.25, 2, 0)
    assert light.max() <= 1.0 and light.min() >= 0.0


def test_draws_are_a_function_of_seed_epoch_and_window():
    aug, seq = VideoAugment(crop_scale=0.6, brightness=0.2), _window()
    assert torch.equal(aug(seq, 5, 2), aug(seq, 5, 2))
    others = [aug(seq, 5, e) for e in range(4)] + [aug(seq, i, 2) for i in range(4)]
    assert len({tuple(o.flatten().tolist()) for o in others}) > 4
    reseeded = VideoAugment(crop_scale=0.6, brightness=0.2, seed=1)
    assert not torch.equal(reseeded(seq, 5, 2), aug(seq, 5, 2))


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="crop_scale must be in"):
        VideoAugment(crop_scale=0)
    with pytest.raises(ValueError, match="unknown augment options \\['rotate'\\]"):
        VideoAugment.of({"rotate": 90})
    assert VideoAugment.of(None) is None and VideoAugment.of(True) == VideoAugment()


class _Indexed(torch.utils.data.Dataset):
    epoch_indices = True

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> int:
        return i


def test_the_sampler_hands_the_epoch_to_augmented_datasets():
    sampler = ResumableSampler(_Indexed(), shuffle=True, seed=0)
    sampler.set_epoch(3)
    got = list(sampler)
    assert sorted(i % 5 for i in got) == list(range(5)) and all(i // 5 == 3 for i in got)


def test_frames_datamodule_augments_training_windows_only(tmp_path):
    from convcast.data import FramesDataModule

    frames = _window(30, 16).numpy()[:, 0]  # [30, 16, 16]
    np.save(tmp_path / "clip.npy", (frames * 255).astype(np.uint8))
    common = dict(input_frames=3, output_frames=2, batch_size=2, split_fractions=(0.6, 0.2, 0.2))
    plain = FramesDataModule(str(tmp_path / "clip.npy"), **common)
    aug = FramesDataModule(str(tmp_path / "clip.npy"), augment={"flip": True, "reverse": 0.5,
                                                                 "brightness": 0.3}, **common)
    for dm in (plain, aug):
        dm.setup()
    assert aug.train_set.augment.clip == 1.0  # 8-bit frames: values stay in [0, 1]
    assert aug.val_set.augment is None and aug.test_set.augment is None
    n = len(aug.train_set)
    x0, _ = plain.train_set[0]
    changed = [not torch.equal(aug.train_set[e * n][0], x0) for e in range(6)]
    assert any(changed) and torch.equal(aug.val_set[0][0], plain.val_set[0][0])
    with pytest.raises(ValueError, match="augment reverse is a probability"):
        FramesDataModule(str(tmp_path / "clip.npy"), augment={"reverse": 2}, **common)

"""One windowing dataset: own data, KTH prediction and radar windows are `Windows` over frame
sequences and differ only in their sequences, their windows and their per-window transform."""

import doctest

import numpy as np
import torch

from convcast.data import ArrayFrames, Windows, windows
from convcast.data.kth import ClipDataset, ForecastWindows
from convcast.data.own import WindowDataset
from convcast.data.radar import RadarWindows


def test_docstring_example_runs() -> None:
    assert doctest.testmod(windows).failed == 0


def test_every_windowed_dataset_is_one_windows() -> None:
    for cls in (WindowDataset, ForecastWindows, ClipDataset, RadarWindows):
        assert issubclass(cls, Windows), cls


def test_windows_read_transform_and_mask() -> None:
    seq = np.arange(2 * 6, dtype=np.float32).reshape(6, 1, 1, 2)  # [T, C, H, W]
    seq[4, 0, 0, 1] = np.nan
    seen = []

    def double(frames: np.ndarray, index: int, epoch: int) -> np.ndarray:
        seen.append((index, epoch))
        return frames * 2

    ds = Windows([ArrayFrames(seq)], [(0, 1), (0, 2)], input_frames=2, output_frames=2,
                 transform=double, masked=True, epoch_indices=True)
    x, y, mask = ds[3]  # epoch 1, window 1: frames 2..5
    assert seen == [(1, 1)]
    assert torch.equal(x.flatten(), torch.tensor([8.0, 10.0, 12.0, 14.0]))
    assert y.flatten().tolist() == [16.0, 0.0, 20.0, 22.0]  # NaN -> 0, masked out
    assert mask.flatten().tolist() == [True, False, True, True]


def test_kth_windows_are_unit_floats_and_flip_whole_windows() -> None:
    video = np.random.default_rng(0).integers(0, 256, (7, 1, 3, 4), dtype=np.uint8)
    ds = ForecastWindows([video], input_frames=2, output_frames=1, stride=2)
    assert len(ds) == 3
    x, y = ds[1]
    np.testing.assert_array_equal(x.numpy(), video[2:4].astype(np.float32) / 255)
    np.testing.assert_array_equal(y.numpy(), video[4:5].astype(np.float32) / 255)
    torch.manual_seed(0)
    flipped = ForecastWindows([video], input_frames=2, output_frames=1, stride=2, flip=True)
    outs = [torch.cat(flipped[1]) for _ in range(16)]
    plain = torch.cat([x, y])
    assert any(torch.equal(o, plain.flip(-1)) for o in outs)
    assert all(torch.equal(o, plain) or torch.equal(o, plain.flip(-1)) for o in outs)

"""Decoded videos for the labelled-folder datasets, and the windows cut from them.

`load_video` is the one place a video is decoded and prepared (training data and `convcast
classify` both go through it, so a video is prepared alike at training and inference time): the
video frame source decodes it and the decoded-frame cache (`convcast.data.cache`) converts the
channels (RGB -> gray by luma) and resizes (area averaging when shrinking) once, on disk, as uint8
`[T, C, H, W]` (all of KTH at 60x80 gray is about 1.4 GB), so later runs never decode it again;
windows are read from the memory-mapped cache on demand, never the whole dataset into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from convcast.data.cache import PreparedFrames
from convcast.data.sources.video import VideoSource
from convcast.data.windows import ArrayFrames, Windows


def load_video(path: str | Path, channels: int = 1,
               size: int | Sequence[int] | None = None, cache: bool = True) -> np.ndarray:
    """All frames of a video as uint8 `[T, C, H, W]`: `channels` (1 or 3), resized to `size`.

    Through the decoded-frame cache (unless `cache=False`): a read-only memory map of the cached
    frames, so windows are read from disk on demand and DataLoader workers share them."""
    frames = PreparedFrames(VideoSource(path), channels, size, cache=cache, store="uint8")
    if cache:
        return frames.stored()  # [T, C, H, W] uint8
    unit = frames.read(0, len(frames))  # [T, C, H, W] float32 in [0, 1]
    return np.round(unit * 255).astype(np.uint8)  # [T, C, H, W]


class VideoWindows(Windows):
    """Windows of `window` frames every `stride` frames of decoded uint8 videos `[T, C, H, W]`,
    as float32 in [0, 1].

    `flip=True` mirrors a window left-right with probability 1/2 (training augmentation; drawn
    from torch's generator, which `seed_everything` seeds).
    """

    def __init__(self, videos: Sequence[np.ndarray], window: int, stride: int,
                 flip: bool = False, input_frames: int | None = None) -> None:
        if window < 1 or stride < 1:
            raise ValueError(f"need window >= 1 and stride >= 1 frames, got {window}, {stride}")
        self.videos, self.window, self.flip = list(videos), window, flip
        starts = [(v, t) for v, f in enumerate(self.videos)
                  for t in range(0, len(f) - window + 1, stride)]  # (video, first frame)
        t_in = window if input_frames is None else input_frames
        super().__init__([ArrayFrames(v) for v in self.videos], starts, input_frames=t_in,
                         output_frames=window - t_in, transform=self.to_unit)

    def to_unit(self, clip: np.ndarray, index: int, epoch: int) -> np.ndarray:
        """uint8 `[window, C, H, W]` -> float32 in [0, 1], mirrored left-right half the time
        with `flip`."""
        clip = clip.astype(np.float32) / np.float32(255)
        if self.flip and bool(torch.rand(()) < 0.5):
            clip = clip[..., ::-1]
        return clip

    def clip(self, i: int) -> tuple[torch.Tensor, int]:
        """Window `i` as float32 `[window, C, H, W]` in [0, 1], and its video's index."""
        return self.load(i)


class ClipDataset(VideoWindows):
    """Item `i`: `(clip [T, C, H, W], label)`, the label of the clip's video."""

    def __init__(self, videos: Sequence[np.ndarray], labels: Sequence[int], window: int,
                 stride: int, flip: bool = False) -> None:
        super().__init__(videos, window, stride, flip)
        self.labels = [int(y) for y in labels]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        clip, v = self.clip(i)
        return clip, self.labels[v]


class ForecastWindows(VideoWindows):
    """Item `i`: `(x [T_in, C, H, W], y [T_out, C, H, W])`, one window cut in two."""

    def __init__(self, videos: Sequence[np.ndarray], input_frames: int, output_frames: int,
                 stride: int, flip: bool = False) -> None:
        super().__init__(videos, input_frames + output_frames, stride, flip, input_frames)

"""One windowing dataset: item `i` is window `i` of a set of frame sequences, cut into `(x, y)`.

Your own videos and arrays (`convcast.data.own`), KTH's prediction windows (`convcast.data.kth`)
and radar archives (`convcast.data.radar`) are all `Windows` over sequences that read frames
`[T, C, H, W]`; they differ only in their sequences, their split (which windows) and what is done
to each window's frames (`transform`: normalisation, augmentation, radar preprocessing). Radar
windows are `masked`: NaN marks missing data, the item is `(x, y, mask)` with NaN set to 0.
Synthetic sets generate each item from its index instead (`convcast.data.synthetic`).

A new kind of data is one frame source (`convcast.data.sources`) and a datamodule that picks its
windows, e.g.:

>>> import numpy as np
>>> frames = ArrayFrames(np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1))  # [T, C, H, W]
>>> ds = Windows([frames], [(0, 0), (0, 2)], input_frames=2, output_frames=1)
>>> x, y = ds[1]
>>> x.flatten().tolist(), y.flatten().tolist()
([2.0, 3.0], [4.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

Transform = Callable[[np.ndarray, int, int], np.ndarray]  # (frames, window, epoch) -> frames


class FrameReader(Protocol):
    """Anything that reads frames `start:stop` of one sequence as `[T, C, H, W]`."""

    def read(self, start: int, stop: int) -> np.ndarray: ...


class ArrayFrames:
    """A sequence held in memory, `[T, C, H, W]` (e.g. a decoded uint8 video)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])


class Windows(Dataset):
    """Item `i`: window `windows[i] = (sequence, first frame)` of `input_frames + output_frames`
    frames of `sequences`, as float32 `(x [T_in, C, H, W], y [T_out, C, H, W])`, or with
    `masked` `(x, y, mask [T_out, C, H, W])`: mask True where `y` is finite, NaN set to 0.

    `transform(frames, window, epoch)` turns the frames read into the model's values (see the
    module docstring). With `epoch_indices` the training loader passes `epoch * len + i` so that
    a random transform draws by epoch and window (a resumed fit sees the same batches).
    """

    def __init__(self, sequences: Sequence[FrameReader], windows: Sequence[tuple[int, int]], *,
                 input_frames: int, output_frames: int, transform: Transform | None = None,
                 masked: bool = False, epoch_indices: bool = False) -> None:
        self.sequences, self.windows = list(sequences), [(int(s), int(t)) for s, t in windows]
        self.input_frames, self.output_frames = input_frames, output_frames
        self.transform, self.masked, self.epoch_indices = transform, masked, epoch_indices

    def __len__(self) -> int:
        return len(self.windows)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """The transformed frames `[T_in + T_out, C, H, W]` of item `index`, and its sequence."""
        epoch, index = divmod(index, len(self.windows))
        s, t = self.windows[index]
        seq = self.sequences[s].read(t, t + self.input_frames + self.output_frames)
        if self.transform is not None:
            seq = self.transform(seq, index, epoch)
        return torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32)), s

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        seq, _ = self.load(index)
        x, y = seq[: self.input_frames], seq[self.input_frames:]
        if not self.masked:
            return x, y
        mask = torch.isfinite(y)  # [T_out, C, H, W]
        return torch.nan_to_num(x, nan=0.0), torch.nan_to_num(y, nan=0.0), mask

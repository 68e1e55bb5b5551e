"""Frame sources over array files: `.npy` and `.npz` (memory-mapped) and HDF5 (lazy).

One file may hold one sequence (`[T,H,W]`, `[T,C,H,W]`, `[T,H,W,C]`) or many (`[N,T,...]`, or any
order named by `layout`, e.g. `TNHW` for the standard `mnist_test_seq.npy`); each sequence becomes
an `ArraySource`. Only the frames of a window are read, so `.npy`, `.npz` (saved with `np.savez`)
and HDF5 data larger than memory train in constant memory; a compressed `.npz` member
(`np.savez_compressed`) is decompressed into memory on first use, with a warning when it is large.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convcast.data.frames_io import (
    array_info,
    check_layout,
    guess_layout,
    index_sequence,
    open_array,
)


class ArrayFile:
    """A lazily opened array in a file, shared by the sources of its sequences."""

    def __init__(self, path: str | Path, key: str | None = None, layout: str | None = None) -> None:
        self.path, self.key = Path(path), key
        self.shape, self.dtype = array_info(self.path, key)  # reads no values
        if layout is None:
            self.layout, self.guessed = guess_layout(self.shape), True
        else:
            self.layout, self.guessed = check_layout(layout, len(self.shape)), False
        if not np.issubdtype(self.dtype, np.number) and self.dtype != np.bool_:
            raise ValueError(f"{self.path} holds {self.dtype} values; frames must be numbers")
        self._arr = None
        self._close = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arr": None, "_close": None}

    @property
    def array(self):
        if self._arr is None:
            self._arr, self._close = open_array(self.path, self.key)
        return self._arr

    @property
    def num_sequences(self) -> int:
        return self.shape[self.layout.index("N")] if "N" in self.layout else 1

    @property
    def num_frames(self) -> int:
        return self.shape[self.layout.index("T")]

    def sources(self) -> list[ArraySource]:
        n = self.num_sequences
        return [ArraySource(self, i if "N" in self.layout else None) for i in range(n)]

    def close(self) -> None:
        if self._close is not None:
            self._close()
        self._arr = self._close = None


class ArraySource:
    """Sequence `index` of an `ArrayFile` (None: the file is one sequence)."""

    def __init__(self, file: ArrayFile, index: int | None) -> None:
        self.file, self.index = file, index
        self.name = file.path.name + (f"[{index}]" if index is not None else "")
        self.num_frames, self.dtype = file.num_frames, file.dtype
        hwc = dict(zip(file.layout, file.shape, strict=True))
        self.frame_shape = (hwc["H"], hwc["W"], hwc.get("C", 1))

    def read(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} out of range for {self.num_frames} in "
                             f"{self.name}")
        frames = index_sequence(self.file.array, self.file.layout, self.index, start, stop)
        if np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
            raise ValueError(f"{self.name} frames {start}:{stop} hold NaN or infinite values; fill "
                             "them (e.g. np.nan_to_num) or give the data a mask")
        return frames

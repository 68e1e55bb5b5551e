"""Frames prepared for a model (channels, size, [0, 1] scale), optionally cached on disk.

Decoding a video and resizing its frames costs far more than a training step of a small model
reads, and every epoch would pay it again. `PreparedFrames(source, ..., cache=True)` pays it once:
the first read decodes, converts and resizes the whole sequence in order (under a file lock, so
DataLoader workers and concurrent runs fill it once) into a float32 memory-mapped file, and every
later read, in this run or the next, slices that file. The cache entry is keyed by the source's
fingerprint (file, size, time of change, and which sequence of it) and the settings that change the
frames, so editing the file or the settings makes a new entry; entries live in
`$CONVCAST_CACHE/frames` (default `~/.cache/convcast/frames`) or `cache_dir`, and deleting them is
always safe. A file appears only once complete, so an interrupted fill never leaves a bad entry.
Frames are stored as float32 (exactly what preparing them gives), or with `store="uint8"` as
round(255 x) for data in [0, 1] (a quarter of the disk and memory, for 8-bit video).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from convcast.atomic import atomic_path, write_text
from convcast.data.download import cache_dir as default_cache_dir
from convcast.data.sources.base import FrameSource
from convcast.data.transform import Size, as_size, dtype_scale, prepare_frames, source_scale

CACHE_VERSION = 1
FILL_CHUNK = 256  # frames decoded per read while filling
STORES = {"float32": np.float32, "uint8": np.uint8}


class PreparedFrames:
    """A source's frames as float32 `[n, C, h, w]` ready for normalisation and the model.

    Args:
        source: the frames on disk.
        channels / size: convert to this many channels (1 or 3) / resize to (h, w); None keeps.
        cache: keep the prepared frames in a memory-mapped file (see the module docstring).
        cache_dir: where the cache lives (default `$CONVCAST_CACHE/frames`).
        store: how the cache keeps the frames: `float32` (exact) or `uint8` (round(255 x)).
        scale: what integer frames are divided by (default: `source_scale` of the source: the
            maximum of a type of at most 16 bits, else the range of the source's values).
    """

    def __init__(self, source: FrameSource, channels: int | None = None, size: Size = None,
                 cache: bool = False, cache_dir: str | os.PathLike | None = None,
                 store: str = "float32", scale: float | None = None) -> None:
        if store not in STORES:
            raise ValueError(f"unknown cache store {store!r}; valid: {', '.join(STORES)}")
        self.source, self.channels, self.size, self.store = source, channels, as_size(size), store
        self.scale = float(scale) if scale is not None else source_scale([source])
        self.name, self.num_frames = source.name, source.num_frames
        c, h, w = source.frame_shape
        self.frame_shape = (channels or c, *(self.size or (h, w)))
        self.cache_path: Path | None = None
        if cache:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "frames"
            key = {"version": CACHE_VERSION, "source": source.fingerprint(),
                   "frames": self.num_frames, "channels": channels, "size": self.size,
                   "dtype": str(source.dtype), "store": store}
            if dtype_scale(source.dtype) is None:  # wide integers: the scale is not the type's
                key["scale"] = self.scale
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
            self.cache_path, self.cache_key = root / f"{digest}.f32", key

    def __len__(self) -> int:
        return self.num_frames

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """Stored frames `[n, C, H, W]` -> float32 `[n, C', h, w]`."""
        return prepare_frames(raw, self.channels, self.size, self.scale)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Prepared frames `start:stop` as float32 `[n, C', h, w]`."""
        if self.cache_path is None:
            return self.prepare(self.source.read(start, stop))
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} out of range for {self.num_frames} frames "
                             f"in {self.name}")
        stored = self._cached()[start:stop]
        if self.store == "uint8":
            return stored.astype(np.float32) / 255
        return np.array(stored)  # a copy: the map is read-only

    def stored(self) -> np.memmap:
        """The cache's read-only memory map `[T, C, h, w]` in the store's dtype (filled first)."""
        if self.cache_path is None:
            raise ValueError(f"{self.name}: no cache (cache=False); use read(start, stop)")
        return self._cached()

    def _cached(self) -> np.memmap:
        """The cache's memory map, filling the cache first if it is not there yet."""
        cached = getattr(self, "_h_map", None)
        if cached is not None and cached[1] == os.getpid():
            return cached[0]
        path = self.cache_path
        shape = (self.num_frames, *self.frame_shape)
        size = int(np.prod(shape)) * np.dtype(STORES[self.store]).itemsize
        if not path.exists() or path.stat().st_size != size:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one filler; the others wait, then read
                if path.exists() and path.stat().st_size != size:  # not what this key holds
                    rank_zero_info(f"the frame cache {path} holds {path.stat().st_size} bytes, "
                                   f"not the {size} of {shape[0]} frames of {self.name}: "
                                   "filling it again")
                    path.unlink()
                if not path.exists():
                    self._fill(path, shape)
        mm = np.memmap(path, dtype=STORES[self.store], mode="r", shape=shape)
        self._h_map = (mm, os.getpid())
        return mm

    def _fill(self, path: Path, shape: tuple[int, ...]) -> None:
        size = int(np.prod(shape)) * np.dtype(STORES[self.store]).itemsize
        rank_zero_info(f"caching the prepared frames of {self.name} ({shape[0]} frames, "
                       f"{size / 2**20:.1f} MiB) in {path.parent}: decoded once, read by every "
                       "later epoch and run")
        with atomic_path(path) as tmp:
            mm = np.memmap(tmp, dtype=STORES[self.store], mode="w+", shape=shape)  # no header
            for i in range(0, shape[0], FILL_CHUNK):
                j = min(i + FILL_CHUNK, shape[0])
                frames = self.prepare(self.source.read(i, j))  # [n, C, h, w] float32
                mm[i:j] = frames if self.store == "float32" else \
                    np.round(np.clip(frames, 0, 1) * 255)
            mm.flush()
            del mm
        write_text(path.with_suffix(".json"), json.dumps(self.cache_key, indent=1) + "\n")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h")}


def prepare_sources(sources: Sequence[FrameSource], channels: int | None, size: Size,
                    cache: bool | str, cache_dir: str | os.PathLike | None = None,
                    scale: float | None = None) -> list[PreparedFrames]:
    """`PreparedFrames` of each source; `cache="auto"` caches videos and image folders (costly
    to decode), `True` every source, `False` none. `scale` divides integer frames (default: the
    `source_scale` of all the sources together, so every sequence is divided alike)."""
    if cache not in (True, False, "auto"):
        raise ValueError(f"cache must be true, false or auto, got {cache!r}")
    scale = source_scale(sources) if scale is None else scale
    return [PreparedFrames(s, channels, size,
                           cache if cache != "auto" else s.kind in ("video", "images"), cache_dir,
                           scale=scale)
            for s in sources]

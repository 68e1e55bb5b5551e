"""Frame sources that read windows on demand: a video (streamed) or a folder of frames.

A source has `name`, `num_frames`, `dtype` and `read(start, stop) -> [n, H, W, C]` raw frames.
Nothing is held but a small cache, so a dataset of any length trains in constant memory. Open
handles are dropped when a source is pickled (DataLoader workers reopen them).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from convcast.data.frames_io import list_images, open_video, read_image, video_frame_count

SEEK_AHEAD = 16  # read forward instead of seeking when the wanted frame is this close ahead


class VideoSource:
    """A video decoded per window, with an LRU cache of the last `cache_frames` decoded frames
    (overlapping windows then decode each frame once) and forward reading between nearby windows.
    """

    def __init__(self, path: str | Path, cache_frames: int = 64) -> None:
        self.path, self.name = Path(path), Path(path).name
        self.num_frames = video_frame_count(self.path)
        self.cache_frames = max(int(cache_frames), 0)
        self._cap: cv2.VideoCapture | None = None
        self._pid = os.getpid()  # the process that opened `_cap`
        self._pos = 0  # index of the frame the capture returns next
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        first = self.read(0, 1)[0]
        self.dtype, self.frame_shape = first.dtype, first.shape  # (H, W, C)
        self.close()  # DataLoader workers forked later must not share an open decoder

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_cap=None, _pos=0, _cache=OrderedDict())
        return state

    def _frame(self, t: int) -> np.ndarray:
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        if self._cap is not None and self._pid != os.getpid():
            self._cap, self._cache = None, OrderedDict()  # a forked worker: the handle is not ours
        if self._cap is None:
            self._cap, self._pos, self._pid = open_video(self.path), 0, os.getpid()
        if not 0 <= t - self._pos <= SEEK_AHEAD:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, t)
            self._pos = t
        while True:
            ok, frame = self._cap.read()
            if not ok:
                raise ValueError(f"video {self.path} ended before frame {t} (its header says "
                                 f"{self.num_frames} frames); the file may be truncated")
            self._pos += 1
            frame = np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB, [H, W, 3]
            if self.cache_frames:
                self._cache[self._pos - 1] = frame
                while len(self._cache) > self.cache_frames:
                    self._cache.popitem(last=False)
            if self._pos - 1 == t:
                return frame

    def read(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} out of range for {self.num_frames} in "
                             f"{self.path}")
        return np.stack([self._frame(t) for t in range(start, stop)])

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FrameFolderSource:
    """A folder of image files, one per frame, in natural name order; images read per window."""

    def __init__(self, path: str | Path) -> None:
        self.path, self.name = Path(path), Path(path).name
        self.files = list_images(self.path)
        if not self.files:
            raise ValueError(f"folder {self.path} holds no image frames")
        self.num_frames = len(self.files)
        first = read_image(self.files[0])
        self.dtype, self.frame_shape = first.dtype, first.shape

    def read(self, start: int, stop: int) -> np.ndarray:
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} out of range for {self.num_frames} in "
                             f"{self.path}")
        frames = [read_image(p) for p in self.files[start:stop]]
        for p, f in zip(self.files[start:stop], frames, strict=True):
            if f.shape != self.frame_shape:
                raise ValueError(f"{p} has shape {f.shape} but {self.files[0].name} has "
                                 f"{self.frame_shape}; all frames of a folder must match")
        return np.stack(frames)

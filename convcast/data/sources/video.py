"""Videos (any container and codec OpenCV's FFmpeg reads), decoded per window.

A window is decoded on demand: nearby windows read forward instead of seeking, and the last
`cache_frames` decoded frames are kept, so overlapping windows decode each frame once. Frames come
out RGB `[n, 3, H, W]` uint8. For training, the decoded-frame cache (`convcast.data.cache`)
decodes each video once for all epochs and runs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from convcast.data.sources.base import FrameSource, register_source

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SEEK_AHEAD = 16  # read forward instead of seeking when the wanted frame is this close ahead


def open_video(path: Path | str) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: the file is corrupt or its codec is not "
                         "supported by OpenCV's FFmpeg; convert it (ffmpeg -i in.ext out.mp4) or "
                         "extract its frames to PNG files")
    return cap


def video_frame_count(path: Path | str, decode: bool = False) -> int:
    """Frames in a video: the container's count, or counted by decoding when it has none (or
    with `decode=True`, for containers whose count is wrong)."""
    cap = open_video(path)
    try:
        n = 0 if decode else int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n == 0:
        raise ValueError(f"video {path} has no frames (empty or corrupt file)")
    return n


@register_source("video", VIDEO_EXTS)
class VideoSource(FrameSource):
    """A video decoded per window (see the module docstring). `count_frames=True` counts the
    frames by decoding the whole file once instead of trusting the container's header."""

    def __init__(self, path: str | Path, cache_frames: int = 64, count_frames: bool = False
                 ) -> None:
        self.path, self.name = Path(path), Path(path).name
        self.num_frames = video_frame_count(self.path, decode=count_frames)
        self.cache_frames = max(int(cache_frames), 0)
        self.metadata = {}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        first = self._decode(0)  # [H, W, 3]
        self.dtype, self.frame_shape = first.dtype, (first.shape[2], *first.shape[:2])
        self.close()  # DataLoader workers started later must not share an open decoder

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_cache": OrderedDict()}

    def _decode(self, t: int) -> np.ndarray:
        """Frame `t` as RGB `[H, W, 3]`."""
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        if getattr(self, "_h_pid", None) != os.getpid():  # not opened, or opened by our parent
            self._h_cap, self._pos, self._h_pid = open_video(self.path), 0, os.getpid()
            self._cache = OrderedDict()
        if not 0 <= t - self._pos <= SEEK_AHEAD:
            self._h_cap.set(cv2.CAP_PROP_POS_FRAMES, t)
            self._pos = t
        while True:
            ok, frame = self._h_cap.read()
            if not ok:
                raise ValueError(f"video {self.path} ended before frame {t} (its header says "
                                 f"{self.num_frames} frames); the file may be truncated, or its "
                                 "header wrong (count_frames=True counts them by decoding)")
            self._pos += 1
            frame = np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB, [H, W, 3]
            if self.cache_frames:
                self._cache[self._pos - 1] = frame
                while len(self._cache) > self.cache_frames:
                    self._cache.popitem(last=False)
            if self._pos - 1 == t:
                return frame

    def _read(self, start: int, stop: int) -> np.ndarray:
        frames = np.stack([self._decode(t) for t in range(start, stop)])  # [n, H, W, 3]
        return frames.transpose(0, 3, 1, 2)  # [n, 3, H, W]

    def close(self) -> None:
        cap = self.__dict__.pop("_h_cap", None)
        if cap is not None and self.__dict__.get("_h_pid") == os.getpid():
            cap.release()
        self.__dict__.pop("_h_pid", None)

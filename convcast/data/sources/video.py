"""Videos (any container and codec FFmpeg reads), decoded by FFmpeg itself, per window.

Frames are what the `ffmpeg` program decodes (the one `imageio-ffmpeg` ships): every decoded
picture once, in order (`-fps_mode passthrough`: no frame repeated or dropped to fill a nominal
frame rate). Frames come out RGB `[n, 3, H, W]` uint8.

The number of frames is the container's count (its header) when the stream agrees with it: the
packets FFmpeg finds in the file (read without decoding, which is fast) are as many. When they
disagree (a truncated file, an AVI whose header counts dropped-frame markers, a file whose header
has no count) the frames are counted by decoding, and a warning says so; `count_frames=True`
always counts by decoding.

A window is decoded on demand by one FFmpeg process reading forward: later windows go on reading,
an earlier one restarts the decoder (decoding forward is exact; a seek by time is not, for every
file), and the last `cache_frames` decoded frames are kept, so overlapping windows decode each
frame once. For training, the decoded-frame cache (`convcast.data.cache`) decodes each video once
for all epochs and runs.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np

from convcast.data.sources.base import FrameSource, register_source
from convcast.ffmpeg import ffmpeg_exe, ffmpeg_reason

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# the first video stream, every decoded picture once (no duplicates or drops for a frame rate)
DECODE_OPTIONS = ["-map", "0:v:0", "-fps_mode", "passthrough"]
COUNT_SIZE = 8  # frames are counted by decoding them scaled to 8x8 gray: the count is the same


def _unreadable(path: Path, reason: str) -> ValueError:
    return ValueError(f"cannot open video {path}: FFmpeg cannot read it ({reason}); the file is "
                      "corrupt or truncated, or its codec is not supported: convert it (ffmpeg -i "
                      "in.ext out.mp4) or extract its frames to PNG files")


def video_header(path: Path | str) -> tuple[int, int, int, float]:
    """What the container declares, read without decoding: `(frames, width, height, fps)` of
    the first video stream (width and height as displayed, after any rotation), 0 where it
    declares nothing."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0, 0, 0, 0.0
        props = (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT)
        n, w, h = (max(int(cap.get(k)), 0) for k in props)
        return n, w, h, max(float(cap.get(cv2.CAP_PROP_FPS)), 0.0)
    finally:
        cap.release()


def header_frame_count(path: Path | str) -> int:
    """The frame count the container declares (0 where it has none)."""
    return video_header(path)[0]


def packet_count(path: Path | str) -> int:
    """Packets of the first video stream that FFmpeg finds in the file, read without decoding."""
    path = Path(path)
    run = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-stats",
                          "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
                         capture_output=True, text=True, errors="replace", check=False)
    counts = re.findall(r"frame=\s*(\d+)", run.stderr)
    if run.returncode != 0 and not counts:
        raise _unreadable(path, ffmpeg_reason(run.stderr))
    return int(counts[-1]) if counts else 0


def decoded_frame_count(path: Path | str) -> int:
    """Frames FFmpeg decodes from the file (the frames a `VideoSource` reads), counted by
    decoding the whole file once."""
    path = Path(path)
    size = f"{COUNT_SIZE}x{COUNT_SIZE}"
    proc = subprocess.Popen([ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-i",
                             str(path), *DECODE_OPTIONS, "-s", size, "-pix_fmt", "gray",
                             "-vcodec", "rawvideo", "-f", "image2pipe", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    total = 0
    try:
        while chunk := proc.stdout.read(1 << 16):
            total += len(chunk)
        stderr = proc.stderr.read().decode(errors="replace")
    finally:
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()
    if total == 0 and proc.returncode != 0:
        raise _unreadable(path, ffmpeg_reason(stderr))
    return total // (COUNT_SIZE * COUNT_SIZE)


@dataclass(frozen=True)
class VideoCount:
    """How many frames a video holds, and how that was found."""

    frames: int  # the frames FFmpeg decodes (what a VideoSource reads)
    header: int  # what the container declares (0: nothing)
    packets: int | None  # packets found in the stream (None: not looked at)
    decoded: bool  # counted by decoding the whole file

    def describe(self) -> str:
        if not self.decoded:
            return f"{self.frames} frames (the header's count, as many as the stream's packets)"
        why = ("asked to" if self.packets is None else
               "the header declares none" if self.header == 0 else
               f"the header declares {self.header} but the stream holds {self.packets} packets")
        return f"{self.frames} frames, counted by decoding ({why})"


def count_video_frames(path: Path | str, decode: bool = False) -> VideoCount:
    """The frames of a video: the header's count where the stream's packets agree with it, else
    (or with `decode=True`) counted by decoding."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    packets = None if decode else packet_count(path)  # first: an unreadable file fails here
    header = header_frame_count(path)
    if not decode and header > 0 and packets == header:
        return VideoCount(header, header, packets, decoded=False)
    n = decoded_frame_count(path)
    if n == 0:
        raise ValueError(f"video {path} has no frames that FFmpeg can decode (empty or corrupt "
                         "file)")
    return VideoCount(n, header, packets, decoded=True)


def video_frame_count(path: Path | str, decode: bool = False) -> int:
    """Frames in a video (see `count_video_frames`)."""
    return count_video_frames(path, decode).frames


class _Decoder:
    """One FFmpeg process decoding a video forward from its first frame: `next()` is the next
    frame RGB `[H, W, 3]` uint8, or None at the end."""

    def __init__(self, path: Path) -> None:
        import imageio_ffmpeg

        self.path, self.pos = path, 0  # pos: index of the frame next() returns
        self._gen: Iterator = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24",
                                                         output_params=list(DECODE_OPTIONS))
        log = logging.getLogger("imageio_ffmpeg")  # it warns of every rotated video's size
        level, _ = log.level, log.setLevel(logging.ERROR)
        try:
            meta = next(self._gen)
        except (OSError, RuntimeError, StopIteration) as err:
            self.close()
            raise _unreadable(path, ffmpeg_reason(str(err))) from None
        finally:
            log.setLevel(level)
        self.width, self.height = (int(v) for v in meta["size"])
        self.fps = float(meta.get("fps") or 0)

    def next(self) -> np.ndarray | None:
        try:
            data = next(self._gen)
        except StopIteration:
            return None
        except RuntimeError as err:  # a frame cut short: the stream ends inside it
            warnings.warn(f"video {self.path}: frame {self.pos} is incomplete ({err}); the "
                          "video is read up to the frame before it", stacklevel=3)
            return None
        self.pos += 1
        return np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3)

    def close(self) -> None:
        self._gen.close()


@register_source("video", VIDEO_EXTS)
class VideoSource(FrameSource):
    """A video decoded per window by FFmpeg (see the module docstring). `count_frames=True`
    counts the frames by decoding the whole file once instead of trusting the container's
    header where the stream agrees with it."""

    def __init__(self, path: str | Path, cache_frames: int = 64, count_frames: bool = False
                 ) -> None:
        self.path, self.name = Path(path), Path(path).name
        self.count = count_video_frames(self.path, decode=count_frames)
        self.num_frames = self.count.frames
        self.cache_frames = max(int(cache_frames), 0)
        self.metadata = {"frame count": self.count.describe()}
        if self.count.decoded and self.count.packets is not None and self.count.header:
            warnings.warn(f"video {self.path}: its header declares {self.count.header} frames "
                          f"but the stream holds {self.count.packets} packets (a truncated file, "
                          "or dropped-frame markers); counted by decoding: "
                          f"{self.num_frames} frames", stacklevel=2)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.dtype = np.dtype(np.uint8)
        _, w, h, self.fps = video_header(self.path)
        if not w or not h:  # the header does not say: FFmpeg's decoder does
            decoder = self._decoder()
            w, h, self.fps = decoder.width, decoder.height, decoder.fps
            self.close()  # DataLoader workers started later must not share an open decoder
        self.frame_shape = (3, h, w)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_cache": OrderedDict()}

    def _decoder(self, restart: bool = False) -> _Decoder:
        """The open decoder (opened here, or again in a worker process, or from frame 0 with
        `restart`)."""
        if getattr(self, "_h_pid", None) != os.getpid():  # not opened, or opened by our parent
            self.__dict__.pop("_h_dec", None)
            self._cache = OrderedDict()
            restart = True
        if restart:
            old = self.__dict__.pop("_h_dec", None)
            if old is not None:
                old.close()
            self._h_dec, self._h_pid = _Decoder(self.path), os.getpid()
            size = (self._h_dec.height, self._h_dec.width)
            if hasattr(self, "frame_shape") and size != tuple(self.frame_shape[1:]):
                self.close()
                raise ValueError(f"video {self.path}: FFmpeg decodes {size[1]}x{size[0]} frames "
                                 f"but its header says {self.frame_shape[2]}x"
                                 f"{self.frame_shape[1]}; convert it (ffmpeg -i in.ext out.mp4)")
        return self._h_dec

    def _decode(self, t: int) -> np.ndarray:
        """Frame `t` as RGB `[H, W, 3]`: from the cache, else decoding forward to it."""
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        dec = self._decoder()
        if t < dec.pos:  # behind the decoder: decode again from the start
            dec = self._decoder(restart=True)
        while True:
            frame = dec.next()
            if frame is None:
                self._ended(dec.pos, t)
            if self.cache_frames:
                self._cache[dec.pos - 1] = frame
                while len(self._cache) > self.cache_frames:
                    self._cache.popitem(last=False)
            if dec.pos - 1 == t:
                return frame

    def _ended(self, decoded: int, wanted: int) -> NoReturn:
        """The decoder ended after `decoded` frames, before frame `wanted`: from now on the
        source holds `decoded` frames, and the read that wanted more fails, saying so."""
        counted = self.num_frames
        self.num_frames = decoded
        self.metadata["frame count"] = f"{decoded} frames, found by decoding to the end"
        self.close()
        raise ValueError(f"video {self.path} ends after {decoded} frames, before frame {wanted}, "
                         f"though {self.count.describe()} gave {counted}; the file is truncated "
                         f"or its header wrong: read frames 0..{decoded - 1}, or count them by "
                         "decoding when the file is opened (count_frames=True; from convcast "
                         "fit: --data.reader_kwargs '{count_frames: true}')")

    def _read(self, start: int, stop: int) -> np.ndarray:
        frames = np.stack([self._decode(t) for t in range(start, stop)])  # [n, H, W, 3]
        return frames.transpose(0, 3, 1, 2)  # [n, 3, H, W]

    def close(self) -> None:
        dec = self.__dict__.pop("_h_dec", None)
        if dec is not None and self.__dict__.get("_h_pid") == os.getpid():
            dec.close()
        self.__dict__.pop("_h_pid", None)

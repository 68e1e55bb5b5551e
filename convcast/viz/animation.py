"""Side-by-side animations and strips of sequences: GIF and MP4 through imageio, PNG strips.

Pictures say what they show: named panels of an animation carry their name (and, given
`input_frames`, the time of the frame: `t-2`, `t0` for inputs, `+1`, `+2`, ... for lead times)
in a band above them; a strip names each row on the left and labels each frame with its time.
Every writer builds the file under a temporary name and moves it into place, so a crash never
leaves a half-written output, and a failure of the encoder or the disk (a full disk) is raised
naming the file, never only printed. GIF and PNG are encoded in memory, then written; MP4 (H.264)
is encoded by the `ffmpeg` program that imageio-ffmpeg ships, whose exit status is checked.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import torch

from convcast.atomic import atomic_path
from convcast.ffmpeg import ffmpeg_exe, ffmpeg_reason

ArrayLike = np.ndarray | torch.Tensor
InputFrames = int | Mapping[str, int] | None
FONT = cv2.FONT_HERSHEY_SIMPLEX
BAND = 14  # height of a label band in pixels
BAND_GREY = 40


def time_label(i: int, n_input: int) -> str:
    """Frame i of a sequence starting with `n_input` input frames: `t-2`, `t0`, then `+1`, ..."""
    k = i - n_input + 1
    return f"t{k}" if k <= 0 else f"+{k}"


def _inputs_of(name: str, length: int, input_frames: InputFrames, default: int) -> int:
    """How many leading frames of the panel or row `name` are inputs."""
    if isinstance(input_frames, Mapping):
        return int(input_frames.get(name, length if name == "input" else 0))
    if input_frames is not None:
        return int(input_frames)
    return length if name == "input" else default


def fits(text: str, width: int) -> bool:
    """Whether `text` fits `width` pixels at the smallest label size."""
    return cv2.getTextSize(text, FONT, 0.3, 1)[0][0] <= width - 2


def _fit_text(text: str, width: int) -> tuple[str, float]:
    """The text and font scale that fit `width` pixels (shrunk, then cut, as needed)."""
    for scale in (0.4, 0.35, 0.3):
        if cv2.getTextSize(text, FONT, scale, 1)[0][0] <= width - 2:
            return text, scale
    while len(text) > 1 and not fits(text + "..", width):
        text = text[:-1]
    return text + "..", 0.3


def text_band(width: int, spans: Sequence[tuple[int, int, str]], height: int | None = None
              ) -> np.ndarray:
    """uint8 `[height, width, 3]` dark band with each text centred in its span `[x0, x1)`; a
    text with line breaks takes one line of `BAND` pixels per line (height: enough for all)."""
    lines = max((t.count("\n") + 1 for *_, t in spans), default=1)
    height = height or BAND * lines
    band = np.full((height, width, 3), BAND_GREY, np.uint8)
    for x0, x1, text in spans:
        if not text or x1 - x0 < 6:
            continue
        rows = text.split("\n")
        top = (height - BAND * len(rows)) // 2
        for i, row in enumerate(rows):
            row, scale = _fit_text(row, x1 - x0)
            (w, h), _ = cv2.getTextSize(row, FONT, scale, 1)
            org = (x0 + max(0, (x1 - x0 - w) // 2), top + i * BAND + (BAND + h) // 2)
            cv2.putText(band, row, org, FONT, scale, (235, 235, 235), thickness=1,
                        lineType=cv2.LINE_AA)
    return band


def to_uint8_frames(seq: ArrayLike, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """`[T,C,H,W]`, `[T,H,W]` (float in [vmin, vmax]) -> uint8 `[T,H,W,3]` for writing."""
    a = seq.detach().float().cpu().numpy() if isinstance(seq, torch.Tensor) else np.asarray(seq)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"expected a sequence [T,C,H,W] or [T,H,W], got shape {a.shape}")
    a = np.nan_to_num((a.astype(np.float32) - vmin) / max(vmax - vmin, 1e-12), nan=0.0)
    a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.shape[1] == 1:
        a = np.repeat(a, 3, axis=1)
    elif a.shape[1] != 3:
        a = np.repeat(a[:, :1], 3, axis=1)  # show the first channel of multi-channel data
    return a.transpose(0, 2, 3, 1)  # [T, H, W, 3]


def _panel_rows(panels: Mapping[str, ArrayLike], vmin: float, vmax: float,
                sep: int = 2, scale: int = 1,
                input_frames: InputFrames = None) -> np.ndarray:
    """Panels side by side, each padded in time to the longest, enlarged `scale` times, under a
    band of names (and times, given `input_frames`) when the panels are named:
    uint8 `[T, H_total, W_total, 3]`."""
    frames = [to_uint8_frames(p, vmin, vmax) for p in panels.values()]
    if scale > 1:
        frames = [f.repeat(scale, axis=1).repeat(scale, axis=2) for f in frames]
    T = max(f.shape[0] for f in frames)
    H = max(f.shape[1] for f in frames)
    cols, spans, x = [], [], 0
    for name, f in zip(panels, frames, strict=True):
        pad = np.zeros((T, H, f.shape[2], 3), np.uint8)
        pad[: f.shape[0], : f.shape[1]] = f
        if f.shape[0] < T:  # hold the last frame of a shorter panel
            pad[f.shape[0]:, : f.shape[1]] = f[-1]
        cols.append(pad)
        cols.append(np.full((T, H, sep, 3), 128, np.uint8))
        spans.append((x, x + f.shape[2], name, len(f)))
        x += f.shape[2] + sep
    video = np.concatenate(cols[:-1], axis=2)
    named = any(name for name, *_ in spans)
    if not named and input_frames is None:
        return video
    timed = input_frames is not None or "input" in panels  # else no time is known
    # name and time on one line where every panel has room ("truth +3"), else on two
    narrow = timed and not all(fits(f"{name} t-10", x1 - x0) for x0, x1, name, _ in spans)
    bands = []
    for t in range(T):
        texts = []
        for x0, x1, name, length in spans:
            when = ""
            if timed:
                when = time_label(min(t, length - 1), _inputs_of(name, length, input_frames, 0))
            texts.append((x0, x1, f"{name}\n{when}" if narrow else f"{name} {when}".strip()))
        bands.append(text_band(video.shape[2], texts))
    return np.concatenate([np.stack(bands), video], axis=1)


def _atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def _write_encoded(path: Path, encode: Callable[[], bytes]) -> Path:
    """Encode in memory, then write the bytes atomically: a disk error is raised once, naming
    `path` (an encoder writing itself may report it late, or twice)."""
    data = encode()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return _atomic_write(path, write)


def encode_mp4(tmp: str, video: np.ndarray, fps: float) -> None:
    """uint8 RGB frames `[T, H, W, 3]` (sides even) as an H.264 MP4 at `tmp`, by the `ffmpeg`
    program that imageio-ffmpeg ships; ffmpeg's failure (a full disk, a missing encoder) is
    raised with its own words, never only printed."""
    t, h, w, _ = video.shape
    rate = str(Fraction(fps).limit_denominator(1000))
    cmd = [ffmpeg_exe(), "-nostdin", "-y", "-hide_banner", "-v", "error", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", rate, "-i", "-", "-an",
           "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", "25", "-f", "mp4", tmp]
    run = subprocess.run(cmd, input=np.ascontiguousarray(video).tobytes(), capture_output=True,
                         check=False)
    if run.returncode != 0:
        log = run.stderr.decode(errors="replace")
        code = errno.ENOSPC if "No space left" in log else errno.EIO
        raise OSError(code, f"the MP4 encoder (ffmpeg) failed with status {run.returncode}: "
                            f"{ffmpeg_reason(log)}")


def write_animation(path: str | Path, panels: Mapping[str, ArrayLike] | ArrayLike,
                    fps: float = 4.0, vmin: float = 0.0, vmax: float = 1.0,
                    scale: int = 1, input_frames: InputFrames = None) -> Path:
    """Write `.gif` or `.mp4` of one sequence or of named panels side by side (e.g. input, truth,
    forecast), each `[T,C,H,W]` or `[T,H,W]`; shorter panels hold their last frame.

    Named panels get a band with their name above them. `input_frames` (the number of input
    frames each panel starts with, or `{name: number}`) adds each frame's time to the band:
    `t-1`, `t0` for inputs, then the lead time `+1`, `+2`, ...; a panel named `input` is all
    inputs. Without it, panels beside an `input` panel are taken as forecasts (`+1`, ...), and
    with no `input` panel no time is shown. The file appears whole or not at all: an encoder's
    or the disk's failure is raised (an `OSError` naming `path`)."""
    path = Path(path)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"cannot write {path}: fps (frames per second) must be a positive "
                         f"number, got {fps!r}")
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"unsupported animation format {path.suffix!r}; use .gif or .mp4")
    if not isinstance(panels, Mapping):
        panels = {"": panels}
    video = _panel_rows(panels, vmin, vmax, scale=max(1, scale), input_frames=input_frames)
    if suffix == ".gif":
        return _write_encoded(path, lambda: iio.imwrite("<bytes>", video, extension=".gif",
                                                        duration=1000 / fps, loop=0))
    h, w = video.shape[1:3]  # codecs want sides in multiples of 16 (macro blocks)
    video = np.pad(video, ((0, 0), (0, -h % 16), (0, -w % 16), (0, 0)))
    return _atomic_write(path, lambda tmp: encode_mp4(tmp, video, fps))


def write_strip(path: str | Path, rows: Mapping[str, ArrayLike], vmin: float = 0.0,
                vmax: float = 1.0, scale: int = 1, input_frames: InputFrames = None) -> Path:
    """PNG with one row per named sequence (e.g. input / truth / forecast), frames left to right,
    the row's name on its left and each frame's time above it: by default a row named `input`
    holds inputs (`t-2`, `t-1`, `t0`) and every other row forecasts (`+1`, `+2`, ...);
    `input_frames` (a number, or `{name: number}`) says how many input frames each row starts
    with instead."""
    strips, spans = [], []
    for name, seq in rows.items():
        f = to_uint8_frames(seq, vmin, vmax)  # [T, H, W, 3]
        if scale > 1:
            f = f.repeat(scale, axis=1).repeat(scale, axis=2)
        n_in = _inputs_of(name, len(f), input_frames, 0)
        w = f.shape[2]
        spans.append([(i * w, (i + 1) * w, time_label(i, n_in)) for i in range(len(f))])
        strips.append(np.concatenate(list(f), axis=1))
    width = max(s.shape[1] for s in strips)
    names = [str(n) for n in rows]
    label_w = 8 + max(cv2.getTextSize(n, FONT, 0.4, 1)[0][0] for n in names) if any(names) else 0
    label_w = min(label_w, 160)
    out = []
    for name, strip, times in zip(names, strips, spans, strict=True):
        body = np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)), constant_values=128)
        body = np.concatenate([text_band(width, times), body])  # times above the frames
        if label_w:
            side = text_band(label_w, [(0, label_w, name)], height=body.shape[0])
            body = np.concatenate([side, body], axis=1)
        out += [body, np.full((2, body.shape[1], 3), 128, np.uint8)]
    img = np.concatenate(out[:-1], axis=0)
    return _write_encoded(Path(path), lambda: iio.imwrite("<bytes>", img, extension=".png"))


def frame_grid(rows: Sequence[ArrayLike], vmin: float = 0.0, vmax: float = 1.0,
               labels: Sequence[str] | None = None) -> np.ndarray:
    """uint8 `[H_total, W_total, 3]` grid, one row per sequence (for TensorBoard images), each
    row named on its left by `labels` when given."""
    strips = [np.concatenate(list(to_uint8_frames(r, vmin, vmax)), axis=1) for r in rows]
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 2), (0, width - s.shape[1]), (0, 0))) for s in strips]
    if labels is not None:
        if len(labels) != len(strips):
            raise ValueError(f"frame_grid: {len(labels)} labels for {len(strips)} rows")
        label_w = 8 + max(cv2.getTextSize(str(n), FONT, 0.4, 1)[0][0] for n in labels)
        strips = [np.concatenate([text_band(label_w, [(0, label_w, str(n))], s.shape[0]), s],
                                 axis=1) for n, s in zip(labels, strips, strict=True)]
    return np.concatenate(strips, axis=0)

"""`convcast predict`: forecast the future of a video, a frame folder or an array (no truth needed).

The input is prepared as the model's training data was (channels, frame size, [0, 1] scaling of
integer frames, the stored normalisation) and every step is reported on stderr. The forecast is
written as `.npy` (`[K, C, H, W]` float32 in the input's value scale: uint8 input gives 0..255),
or as `.gif` / `.mp4` (the input frames, then the forecast); `--strip` adds a PNG strip.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jsonargparse import CLI

from convcast.data.frames_io import (
    VIDEO_EXTS,
    list_images,
    prepare_frames,
    read_frames,
    read_images,
    read_video,
    resize_frames,
    unit_scale,
    video_frame_count,
)
from convcast.data.normalize import Normalization
from convcast.train.checkpoint import load_forecaster
from convcast.viz import write_animation, write_strip

OUTPUTS = (".npy", ".gif", ".mp4")


def _say(msg: str) -> None:
    print(f"convcast predict: {msg}", file=sys.stderr)


def _read_last(path: Path, last: int | None, key: str | None, layout: str | None
               ) -> tuple[np.ndarray, int, str]:
    """The last `last` frames (all if None) `[T, H, W, C]`, the input's frame count, a note."""
    if path.is_file() and path.suffix.lower() in VIDEO_EXTS and last is not None:
        total = video_frame_count(path)  # decode only the frames that are used
        frames = read_video(path, max(0, total - last))
        if len(frames) < min(last, total):  # the container's frame count was wrong: decode all
            frames = read_video(path)
            total, frames = len(frames), frames[-last:]
        return frames, total, f"read the last {len(frames)} of {total} frames of video {path}"
    if path.is_dir() and last is not None and (images := list_images(path)):
        frames = read_images(images[-last:])
        return frames, len(images), (f"read the last {len(frames)} of {len(images)} frames of "
                                     f"folder {path} (sorted by name)")
    frames, note = read_frames(path, key, layout)
    return (frames if last is None else frames[-last:]), len(frames), note


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _check_range(model_in: np.ndarray, norm: Normalization, value_scale: float | None) -> None:
    """Warn when the prepared input lies far outside the values the model was trained on."""
    lo, hi = float(model_in.min()), float(model_in.max())
    if norm.kind == "standard":
        bad = max(abs(lo), abs(hi)) > 10
    elif norm.kind == "minmax" or (value_scale or 1) != 1:  # training values spanned [0, 1]
        bad = lo < -0.5 or hi > 1.5
    else:
        return
    if bad:
        _say(f"warning: the prepared input spans [{lo:.3g}, {hi:.3g}], far from what the model "
             "was trained on; is it the same kind of data (units, value scale)?")


def predict(
    ckpt_path: str,
    input: str,  # noqa: A002 - the flag users type is --input
    out: str,
    horizon: int | None = None,
    strip: str | None = None,
    input_frames: int | None = None,
    output_size: Literal["model", "input"] = "model",
    key: str | None = None,
    layout: str | None = None,
    fps: float = 4.0,
    scale: int | None = None,
    device: str = "cpu",
) -> Path:
    """Forecast the frames that follow an input sequence.

    Args:
        ckpt_path: checkpoint of a `convcast fit` run.
        input: a video (.mp4, .avi, ...), a folder of frames (.png/.jpg, sorted by name) or an
            array (.npy/.npz/.h5) [T,H,W], [T,C,H,W] or [T,H,W,C].
        out: .npy (the forecast [K,C,H,W] in the input's value scale), .gif or .mp4 (input then
            forecast).
        horizon: frames to forecast (default: the training output frames); any number works.
        strip: also write a PNG strip (input row, forecast row) here.
        input_frames: use the last this many frames (default: the training input frames).
        output_size: the forecast's frame size: the model's, or resized back to the input's.
        key: array name inside an .npz/.h5 file with several.
        layout: axis order of an array (e.g. TCHW, THWC) where its shape does not tell.
        fps: frames per second of an animation.
        scale: enlarge animation and strip pixels by this factor (default: to about 128 px).
        device: torch device to run the model on.
    """
    src, dst = Path(input), Path(out)
    if dst.suffix.lower() not in OUTPUTS:
        raise ValueError(f"cannot write {dst}: unknown extension {dst.suffix!r}; valid: "
                         f"{', '.join(OUTPUTS)}")
    if strip is not None and Path(strip).suffix.lower() != ".png":
        raise ValueError(f"--strip {strip}: the strip is a PNG image; name it *.png")
    model, info = load_forecaster(ckpt_path, map_location=device)
    need = input_frames or info.get("input_frames")
    k = horizon or info.get("output_frames") or 1
    if k < 1 or (need is not None and need < 1):
        raise ValueError(f"horizon and input_frames must be positive, got {k}, {need}")
    _say(f"model {info['model_name']} from {ckpt_path} (trained on {info.get('input_frames')} "
         f"-> {info.get('output_frames')} frames, {info.get('channels')} channel(s), "
         f"{info.get('frame_size')} px)")

    raw, total, note = _read_last(src, need, key, layout)
    _say(note)
    if need is not None and total < need:
        raise ValueError(f"{src} has {total} frames but the model reads {need}; give a longer "
                         f"input or --input_frames {total} (fewer frames than trained on)")
    channels, size = info.get("channels"), info.get("frame_size")
    h, w, c = raw.shape[1:]
    scale_in = unit_scale(raw.dtype)
    steps = [f"scaled {raw.dtype} by 1/{scale_in:g}"] if scale_in != 1 else []
    if channels and channels != c:
        steps.append(f"converted {c} -> {channels} channel(s)")
    if size and tuple(size) != (h, w):
        steps.append(f"resized {h}x{w} -> {size[0]}x{size[1]}")
    unit = prepare_frames(raw, channels, size)  # [T, C, H, W] float32
    norm = Normalization.from_dict(info.get("normalization"))
    if norm.kind != "none":
        steps.append(f"normalised {norm.describe()}")
    _say("prepared input: " + (", ".join(steps) or "used as is"))
    model_in = norm.apply(unit)  # [T, C, H, W] as the model saw its training data
    _check_range(model_in, norm, info.get("value_scale"))

    x = torch.from_numpy(model_in).unsqueeze(0).to(device)  # [1, T, C, H, W]
    with torch.no_grad():
        pred = model(x, k)[0].float().cpu()  # [K, C, H, W]
    if not torch.isfinite(pred).all():
        raise ValueError("the model produced NaN or infinite values; is the checkpoint trained?")
    pred_unit = norm.invert(pred.numpy())  # [K, C, H, W] in the [0, 1]-scaled input space
    if output_size == "input" and pred_unit.shape[-2:] != (h, w):
        pred_unit = resize_frames(pred_unit.transpose(0, 2, 3, 1), (h, w)).transpose(0, 3, 1, 2)
        unit = resize_frames(unit.transpose(0, 2, 3, 1), (h, w)).transpose(0, 3, 1, 2)

    if dst.suffix.lower() == ".npy":
        _save_npy(dst, (pred_unit * scale_in).astype(np.float32))
    lo, hi = (0.0, 1.0) if scale_in != 1 else (float(unit.min()), float(unit.max()))
    hi = max(hi, lo + 1e-6)
    zoom = scale or max(1, 128 // max(unit.shape[-2:]))
    if dst.suffix.lower() in (".gif", ".mp4"):
        seq = np.concatenate([unit, pred_unit])  # [T + K, C, H, W]
        write_animation(dst, seq, fps=fps, vmin=lo, vmax=hi, scale=zoom)
    if strip is not None:
        write_strip(strip, {"input": unit, "forecast": pred_unit}, vmin=lo, vmax=hi, scale=zoom)
    _say(f"wrote {dst} ({k} forecast frames of {pred_unit.shape[1]}x{pred_unit.shape[2]}x"
         f"{pred_unit.shape[3]})" + (f" and {strip}" if strip else ""))
    return dst


def main(argv: list[str]) -> int:
    CLI(predict, args=argv, as_positional=False, prog="convcast predict")
    return 0

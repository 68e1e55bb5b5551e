"""`convcast predict`: forecast the future of a video, a frame folder or an array (no truth needed).

The input goes through the one inference path (`convcast.inference.forecast`): the latest
frames are prepared as the model's training data was (channels, frame size, [0, 1] scaling of
integer frames, the stored normalisation), and every step is reported on stderr. The forecast is
written as `.npy` (`[K, C, H, W]` float32 in the input's value scale: uint8 input gives 0..255),
or as `.gif` / `.mp4` (the input frames, then the forecast); `--strip` adds a PNG strip.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import numpy as np
from jsonargparse import CLI

from convcast.atomic import atomic_write, check_output_file
from convcast.inference import forecast, resize_back
from convcast.viz import write_animation, write_strip

OUTPUTS = (".npy", ".gif", ".mp4")


def _say(msg: str) -> None:
    print(f"convcast predict: {msg}", file=sys.stderr)


def predict(
    ckpt_path: str,
    input: str,  # the flag users type is --input
    out: str,
    horizon: int | None = None,
    strip: str | None = None,
    input_frames: int | None = None,
    output_size: Literal["model", "input"] = "model",
    key: str | None = None,
    layout: str | None = None,
    reader: str = "auto",
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
        reader: the frame-source kind that reads the input (auto: by its path).
        fps: frames per second of an animation.
        scale: enlarge animation and strip pixels by this factor (default: to about 128 px).
        device: torch device to run the model on.
    """
    dst = Path(out)
    if dst.suffix.lower() not in OUTPUTS:
        raise ValueError(f"cannot write {dst}: unknown extension {dst.suffix!r}; valid: "
                         f"{', '.join(OUTPUTS)}")
    if strip is not None and Path(strip).suffix.lower() != ".png":
        raise ValueError(f"--strip {strip}: the strip is a PNG image; name it *.png")
    check_output_file(dst)  # before any work: a folder, or a path inside a file, is refused
    if strip is not None:
        check_output_file(strip, "--strip")
    options = {k: v for k, v in (("key", key), ("layout", layout)) if v is not None}
    try:
        fc = forecast(ckpt_path, input, horizon, input_frames=input_frames, device=device,
                      reader=reader, reader_kwargs=options)
    except ValueError as err:
        if "holds no timestamps" not in str(err):
            raise
        raise ValueError(f"{err}. {ckpt_path} is a radar model, whose input needs the time of "
                         "each frame: forecast it with `convcast nowcast --ckpt_path "
                         f"{ckpt_path} --input {input} --start_time TIME --step_minutes "
                         "MINUTES --out DIR`, which has these options") from None
    d = fc.description
    _say(f"model {fc.model_name} from {ckpt_path} (trained on {d.input_frames} -> "
         f"{d.output_frames} frames, {d.channels} channel(s), {list(d.frame_size)} px)")
    for note in fc.notes:
        _say(note)
    inputs, pred, frames = fc.inputs, fc.forecast_data, fc.frames
    if output_size == "input" and tuple(pred.shape[-2:]) != fc.input_size:
        inputs, pred = resize_back(inputs, fc.input_size), resize_back(pred, fc.input_size)
        frames = resize_back(frames, fc.input_size)
    if dst.suffix.lower() == ".npy":
        with atomic_write(dst) as f:
            np.save(f, frames.astype(np.float32))
    lo, hi = (0.0, 1.0) if fc.input_scale != 1 else (float(inputs.min()), float(inputs.max()))
    hi = max(hi, lo + 1e-6)
    zoom = scale or max(1, 128 // max(inputs.shape[-2:]))
    if dst.suffix.lower() in (".gif", ".mp4"):
        write_animation(dst, np.concatenate([inputs, pred]), fps=fps, vmin=lo, vmax=hi,
                        scale=zoom, input_frames=len(inputs))
    if strip is not None:
        write_strip(strip, {"input": inputs, "forecast": pred}, vmin=lo, vmax=hi, scale=zoom)
    k, c, h, w = frames.shape
    _say(f"wrote {dst} ({k} forecast frames of {c}x{h}x{w})" + (f" and {strip}" if strip else ""))
    return dst


def main(argv: list[str]) -> int:
    CLI(predict, args=argv, as_positional=False, prog="convcast predict")
    return 0

"""`convcast classify`: the class of a video, from a classifier checkpoint.

The video is prepared as the training clips were (`convcast.data.kth.load_video`: converted to
the training channels and resized to the training frame size, each step said on stderr), cut
into windows of the training clip length every `--stride` frames (default: the clip length, as
evaluation cuts them), and the class probabilities (softmax) are averaged over the windows.
A video shorter than one clip is classified as one shorter clip, with a warning. Prints one line
per class, most likely first, and as its last line `label: NAME`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from jsonargparse import CLI

from convcast.data.kth import load_video
from convcast.data.sources.video import VIDEO_EXTS, VideoSource
from convcast.train.classify import load_classifier


def _say(msg: str) -> None:
    print(f"convcast classify: {msg}", file=sys.stderr)


def classify(ckpt_path: str, input: str, stride: int | None = None,  # `input`: the CLI's --input
             batch_size: int = 32, device: str = "cpu") -> dict[str, float]:
    """Print the class probabilities of a video and, last, `label: NAME`.

    Args:
        ckpt_path: checkpoint of a classifier trained with `convcast fit` (ClassificationSystem).
        input: the video (.avi, .mp4, ...).
        stride: frames between the windows averaged over (default: the training clip length).
        batch_size: windows per forward pass.
        device: torch device to run the classifier on.
    """
    src = Path(input)
    if not src.is_file():
        raise FileNotFoundError(f"video {src} not found")
    if src.suffix.lower() not in VIDEO_EXTS:
        raise ValueError(f"{src} is not a video (extension {src.suffix!r}); valid: "
                         f"{', '.join(VIDEO_EXTS)}")
    model, info = load_classifier(ckpt_path, map_location=device)
    classes, size, channels = info["classes"], info["frame_size"], info["channels"]
    clip = info.get("clip_frames") or 1
    _say(f"classifier {info['model_name']} from {ckpt_path}: {len(classes)} classes, clips of "
         f"{clip} frames, {channels} channel(s), {size[0]}x{size[1]} px")
    c, h, w = VideoSource(src).frame_shape  # only to report the conversion
    raw = load_video(src, channels, size, cache=False)  # [T, C, H, W] uint8, not cached
    frames = torch.from_numpy(raw).float().div_(255)  # [T, C, H, W]
    steps = [f"resized {h}x{w} -> {size[0]}x{size[1]}" if (h, w) != tuple(size)
             else "size as trained"]
    if channels != c:
        steps.append(f"converted {c} -> {channels} channel(s)")
    _say(f"read {len(frames)} frames of {src}; " + ", ".join(steps))
    if len(frames) < clip:
        _say(f"warning: the video has {len(frames)} frames, fewer than a training clip's {clip};"
             f" classifying it as one {len(frames)}-frame clip")
        clip = len(frames)
    step = stride or clip
    if step < 1:
        raise ValueError(f"--stride must be >= 1, got {stride}")
    starts = list(range(0, len(frames) - clip + 1, step))
    windows = torch.stack([frames[t:t + clip] for t in starts])  # [N, clip, C, H, W]
    with torch.no_grad():
        probs = torch.cat([model(w.to(device)).softmax(-1).cpu()
                           for w in windows.split(batch_size)])  # [N, classes]
    mean = probs.mean(0)  # [classes]
    _say(f"averaged over {len(starts)} window(s) of {clip} frames every {step}")
    result = {c: float(p) for c, p in zip(classes, mean, strict=True)}
    width = max(len(c) for c in classes)
    for c, p in sorted(result.items(), key=lambda kv: -kv[1]):
        print(f"{c:<{width}}  {p:.4f}")
    print(f"label: {classes[int(mean.argmax())]}")
    return result


def main(argv: list[str]) -> int:
    CLI(classify, args=argv, as_positional=False, prog="convcast classify")
    return 0

"""A small KTH-shaped folder of synthetic action videos: try the pipeline without the download.

`write_synthetic_kth(root)` writes `<root>/<class>/personXX_<class>_dY_uncomp.avi` (MJPG AVI,
gray-looking RGB like KTH's), one video per class, person and scenario: a bright square on a
dark, slightly noisy background whose motion tells the class (class 0 stands still, class 1
moves left-right, class 2 up-down, classes 3 and 4 along the diagonals, 5 and 6 left-right and
up-down faster; bouncing off the borders), starting near the centre. Simple enough that a small
ConvLSTM separates the classes in a few dozen steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

# (dy, dx, pixels per frame) of each class in turn: still, left-right, up-down, two diagonals,
# then left-right and up-down again, faster
MOTIONS = ((0, 0, 0), (0, 1, 2), (1, 0, 2), (1, 1, 2), (1, -1, 2), (0, 1, 5), (1, 0, 5))


def action_frames(label: int, num_frames: int, size: tuple[int, int],
                  rng: np.random.Generator, square: int = 6, jitter: int = 2) -> np.ndarray:
    """uint8 `[T, H, W]` frames of one synthetic action of class `label`."""
    if not 0 <= label < len(MOTIONS):
        raise ValueError(f"synthetic actions have {len(MOTIONS)} classes, got label {label}")
    h, w = size
    dy, dx, speed = MOTIONS[label]
    # start near the centre (a few pixels apart per video), so the motion, not the place, differs
    y = (h - square) // 2 + int(rng.integers(-jitter, jitter + 1))
    x = (w - square) // 2 + int(rng.integers(-jitter, jitter + 1))
    frames = rng.integers(20, 45, (num_frames, h, w)).astype(np.uint8)  # [T, H, W] background
    for t in range(num_frames):
        # bounce between the borders: a triangle wave of the travelled distance
        yy = int(abs((y + dy * speed * t) % (2 * (h - square)) - (h - square)))
        xx = int(abs((x + dx * speed * t) % (2 * (w - square)) - (w - square)))
        frames[t, yy:yy + square, xx:xx + square] = 220
    return frames


def write_synthetic_kth(root: str | Path,
                        classes: Sequence[str] = ("boxing", "handwaving", "walking"),
                        persons: Sequence[int] = (1, 2, 4, 5, 3, 13),
                        scenarios: Sequence[str] = ("d1",), num_frames: int = 20,
                        size: tuple[int, int] = (24, 32), fps: float = 25.0,
                        seed: int = 0) -> Path:
    """Write the folder (see the module docstring) and return `root`.

    The default persons fill every split of the `tutorial` split: 1, 2, 4, 5 train, 3 val, 13 test.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for person in persons:
            for scenario in scenarios:
                path = root / name / f"person{person:02d}_{name}_{scenario}_uncomp.avi"
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                         (size[1], size[0]))
                if not writer.isOpened():
                    raise OSError(f"OpenCV cannot write {path} (no MJPG encoder?)")
                for frame in action_frames(label, num_frames, size, rng):
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
                writer.release()
    return root

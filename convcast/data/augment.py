"""Augmentation of training windows that keeps the physics of a video.

A short clip holds few windows; every flip, crop and reversal of a window is another one a
camera could have seen. `VideoAugment` transforms a whole window `[T, C, H, W]` (input and target
frames alike, so the motion stays consistent across the split):

- `flip`: mirror left-right with probability 1/2 (a scene seen from the other side);
- `vflip`: mirror top-bottom with probability 1/2 (off by default: gravity points down in most
  videos; fine for radar and other top-down views);
- `crop_scale`: crop a random box of side `s` × the frame's, `s` uniform in [`crop_scale`, 1],
  and resize it back (the same motion seen closer: several scales);
- `reverse`: the probability of playing the window backwards (for motion that is reversible,
  e.g. rigid objects or advection; off by default);
- `brightness`: multiply the values by a factor uniform in [1 - b, 1 + b] (light changes),
  clipped to [0, `clip`] where given.

Draws are a function of `(seed, epoch, window index)`, so a resumed fit sees the same augmented
batches as an uninterrupted one (`convcast.data.loader` hands datasets with `epoch_indices` the
epoch inside the index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True, kw_only=True)
class VideoAugment:
    """See the module docstring; `VideoAugment.of(dict)` builds one from a config mapping."""

    flip: bool = True
    vflip: bool = False
    crop_scale: float = 1.0
    reverse: float = 0.0
    brightness: float = 0.0
    clip: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"augment crop_scale must be in (0, 1] (the smallest crop, as a "
                             f"fraction of the frame side), got {self.crop_scale}")
        if not 0 <= self.reverse <= 1:
            raise ValueError(f"augment reverse is a probability in [0, 1], got {self.reverse}")
        if not 0 <= self.brightness < 1:
            raise ValueError(f"augment brightness must be in [0, 1) (a factor 1 ± b), got "
                             f"{self.brightness}")

    @classmethod
    def of(cls, options: VideoAugment | dict[str, Any] | bool | None) -> VideoAugment | None:
        """`options` as a `VideoAugment` (True: the defaults; None / False: no augmentation)."""
        if options is None or options is False:
            return None
        if options is True:
            return cls()
        if isinstance(options, VideoAugment):
            return options
        if not isinstance(options, dict):
            raise ValueError(f"augment must be true, false or a mapping of {list(asdict(cls()))}"
                             f", got {options!r}")
        unknown = sorted(set(options) - set(asdict(cls())))
        if unknown:
            raise ValueError(f"unknown augment options {unknown}; valid: "
                             f"{', '.join(asdict(cls()))}")
        return cls(**options)

    def __call__(self, seq: torch.Tensor, index: int, epoch: int) -> torch.Tensor:
        """The window `seq [T, C, H, W]` (data values) transformed by the draws of
        `(seed, epoch, index)`."""
        rng = np.random.default_rng([self.seed, epoch, index])
        flip, vflip, rev = rng.random(3)
        scale, top, left, light = rng.random(4)
        if self.flip and flip < 0.5:
            seq = seq.flip(-1)
        if self.vflip and vflip < 0.5:
            seq = seq.flip(-2)
        if rev < self.reverse:
            seq = seq.flip(0)
        if self.crop_scale < 1:
            H, W = seq.shape[-2:]
            s = self.crop_scale + (1 - self.crop_scale) * scale
            h, w = max(1, round(H * s)), max(1, round(W * s))
            y0, x0 = int(top * (H - h + 1)), int(left * (W - w + 1))
            box = seq[..., y0:y0 + h, x0:x0 + w]  # [T, C, h, w]
            if (h, w) != (H, W):
                seq = F.interpolate(box, size=(H, W), mode="bilinear", align_corners=False)
        if self.brightness:
            seq = seq * (1 - self.brightness + 2 * self.brightness * light)
            if self.clip is not None:
                seq = seq.clamp(0, self.clip)
        return seq.contiguous()

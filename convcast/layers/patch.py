"""Patch reshaping (space-to-depth) of frame sequences, as in Shi et al. and PredRNN.

`patch_size=4` turns a 64×64×1 frame into a 16×16×16 tensor: the recurrent layers then run on a
16× smaller grid, and the inverse reshape restores the frame exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_patch_size(patch_size: int) -> int:
    """A patch size must be a positive int (1: no reshaping)."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int (1: no patches), got {patch_size!r}")
    return patch_size


def _check(x: torch.Tensor, patch_size: int) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected a sequence [B,T,C,H,W], got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ValueError(
            f"frame size {H}×{W} is not divisible by patch_size={patch_size}: resize or crop the "
            "frames, or choose a patch size that divides both sides"
        )


def space_to_depth(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B,T,C,H,W] -> [B,T,C·p²,H/p,W/p]."""
    if check_patch_size(patch_size) == 1:
        return x
    _check(x, patch_size)
    B, T = x.shape[:2]
    y = F.pixel_unshuffle(x.flatten(0, 1), patch_size)  # [B*T, C*p*p, H/p, W/p]
    return y.view(B, T, *y.shape[1:])


def depth_to_space(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B,T,C·p²,H/p,W/p] -> [B,T,C,H,W], the inverse of `space_to_depth`."""
    if check_patch_size(patch_size) == 1:
        return x
    B, T = x.shape[:2]
    y = F.pixel_shuffle(x.flatten(0, 1), patch_size)  # [B*T, C, H, W]
    return y.view(B, T, *y.shape[1:])

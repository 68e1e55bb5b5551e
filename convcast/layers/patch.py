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
            f"frame size {H}×{W} is not divisible by patch_size={patch_size}: call the model "
            "(model(x, horizon) pads and crops back), or resize or crop the frames"
        )


def pad_to_multiple(t: torch.Tensor, multiple: int, size: tuple[int, int] | None = None
                    ) -> torch.Tensor:
    """`t [..., C, H, W]` padded at the bottom and right so both sides are multiples of
    `multiple` (reflected; edge values where a side is too short to reflect). Tensors whose last
    two sides are not `size` (default: their own) are returned as they are."""
    H, W = t.shape[-2:]
    if t.dim() < 3 or (size is not None and tuple(size) != (H, W)):
        return t
    ph, pw = -H % multiple, -W % multiple
    if not ph and not pw:
        return t
    flat = t.reshape(-1, *t.shape[-3:])  # [N, C, H, W]
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(flat, (0, pw, 0, ph), mode=mode).view(*t.shape[:-2], H + ph, W + pw)


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

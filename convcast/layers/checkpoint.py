"""Gradient checkpointing over time steps: trade compute for memory in long rollouts.

A recurrent model keeps every step's intermediate tensors (the concatenated input, the gate
pre-activations, the sigmoids and tanhs) for the backward pass, so training memory grows linearly
with the number of steps: a 10 -> 90 rollout holds ten times what 10 -> 10 holds. With
checkpointing, a cell step keeps only its inputs (x, h, c) and recomputes the rest when the
backward pass reaches it: about one more forward pass of compute (~25-35% more time for a training
step), and a fraction of the memory (benchmarks/RESULTS.md, "Memory").

Gradients are exact: the recomputation repeats the same operations on the same inputs (under the
same autocast state). Any module opts in by carrying a `checkpointing` attribute and running its
step through `maybe_checkpoint`; `set_checkpointing(model)` switches every such module of a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def maybe_checkpoint(module: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, under `torch.utils.checkpoint` when `module.checkpointing` is set
    and a graph is being recorded (in inference there is nothing to save, so nothing to
    recompute). The non-reentrant checkpoint takes keyword arguments too."""
    if getattr(module, "checkpointing", False) and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def set_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Set `checkpointing` on every module of `model` that supports it (the ConvLSTM and ST-LSTM
    cells); returns how many there are (0: the model has no checkpointable step)."""
    found = [m for m in model.modules() if hasattr(m, "checkpointing")]
    for m in found:
        m.checkpointing = enabled
    return len(found)

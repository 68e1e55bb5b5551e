"""Video classification with a ConvLSTM encoder: `forward(x [B,T,C,H,W]) -> logits [B,classes]`.

A stack of ConvLSTM layers reads the clip; the last layer's final hidden state H_T (the clip's
summary, [B, hid, H, W]) is max-pooled (5x5, stride 2, 'same' padding, so H and W halve, rounding
up) and a linear layer maps the flattened map to one score per class:

    H_T = ConvLSTM(X_1, ..., X_T)[-1],   logits = W · vec(maxpool(H_T)) + b

The linear layer's width follows from the frame size, so a classifier is built for one
`frame_size`; data of another size is resized to it (as `convcast classify` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers import ConvLSTM
from convcast.models.registry import register_model, register_variant


@register_model("convlstm_classifier", kind="classifier")
class ConvLSTMClassifier(nn.Module):
    """ConvLSTM encoder, max-pool over its last hidden state, linear to `num_classes` logits.

    Args:
        in_channels: channels of the frames (1 for gray).
        num_classes: number of classes (logits per clip).
        frame_size: (H, W) of the frames the classifier reads; fixes the linear layer's width.
        hidden_channels: channels per ConvLSTM layer (an int repeats for `num_layers` layers).
        num_layers: ConvLSTM layers when `hidden_channels` is an int.
        kernel_size: ConvLSTM kernel size.
        pool_size / pool_stride: the max-pool over the last hidden state.
        dropout: dropout before the linear layer (0: none).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 6,
        frame_size: Sequence[int] = (60, 80),
        hidden_channels: int | Sequence[int] = 32,
        num_layers: int = 2,
        kernel_size: int = 3,
        pool_size: int = 5,
        pool_stride: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        size = (frame_size, frame_size) if isinstance(frame_size, int) else tuple(frame_size)
        if len(size) != 2 or min(size) < 1 or num_classes < 2 or in_channels < 1:
            raise ValueError(f"need frame_size (H, W) >= 1, num_classes >= 2 and in_channels >= 1,"
                             f" got {frame_size}, {num_classes}, {in_channels}")
        if pool_size % 2 == 0:
            raise ValueError(f"pool_size {pool_size} is even; use an odd size such as 5, so the "
                             "pool pads symmetrically")
        hidden = list(hidden_channels) if not isinstance(hidden_channels, int) else (
            [hidden_channels] * num_layers)
        self.in_channels, self.num_classes, self.frame_size = in_channels, num_classes, size
        self.encoder = ConvLSTM(in_channels, hidden, kernel_size, num_layers=len(hidden))
        self.pool = nn.MaxPool2d(pool_size, stride=pool_stride, padding=pool_size // 2)
        ph, pw = (-(-s // pool_stride) for s in size)  # 'same' pooling: ceil(H / stride)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(hidden[-1] * ph * pw, num_classes))

    def check_input(self, x: torch.Tensor) -> None:
        """Clear errors for clips this classifier cannot read."""
        if x.dim() != 5:
            raise ValueError(f"a classifier reads clips [B, T, C, H, W], got shape "
                             f"{tuple(x.shape)}")
        if x.shape[2] != self.in_channels:
            raise ValueError(f"the clip has {x.shape[2]} channels but the classifier was built for"
                             f" {self.in_channels}; convert the frames (gray: 1, RGB: 3)")
        if tuple(x.shape[-2:]) != self.frame_size:
            raise ValueError(f"the clip's frames are {x.shape[-2]}x{x.shape[-1]} but the "
                             f"classifier was built for {self.frame_size[0]}x{self.frame_size[1]}"
                             "; resize the frames to that size (frame_size of the data)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        _, states = self.encoder(x)  # every layer's final (h, c)
        h_last = states[-1][0]  # [B, hid, H, W]
        return self.head(self.pool(h_last))  # [B, num_classes]


register_variant(
    "convlstm_classifier_kth", "convlstm_classifier",
    "the KTH ConvLSTM tutorial's action classifier: 2x32 ConvLSTM, 3x3 kernels, max-pool 5/2, "
    "linear (6 classes, 60x80 gray frames unless the data says otherwise)",
    hidden_channels=[32, 32], kernel_size=3, pool_size=5, pool_stride=2)

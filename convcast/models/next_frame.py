"""The small next-frame model of the moving-squares tutorial in the seeds.

One ConvLSTM layer reads the frames and a 1×1 convolution decodes its hidden state into the next
frame; the prediction is fed back for as many steps as asked (autoregressive rollout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers import ConvLSTM
from convcast.models.base import Forecaster, make_activation
from convcast.models.registry import register_model


@register_model("next_frame")
class NextFrame(Forecaster):
    autoregressive = True

    def __init__(
        self, in_channels: int = 1, hidden_channels: int | Sequence[int] = 16,
        kernel_size: int = 3, num_layers: int = 1, output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.rnn = ConvLSTM(in_channels, hidden_channels, kernel_size, num_layers)
        self.decoder = nn.Conv2d(self.rnn.hidden_channels[-1], in_channels, kernel_size=1)
        self.act = make_activation(output_activation)

    def forward(
        self, x: torch.Tensor, horizon: int, teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_input(x, horizon)
        mask = self.check_teacher(x, horizon, teacher, teacher_mask)
        out, state = self.rnn(x)  # out[0]: [B, T_in, hid, H, W]
        h = out[0][:, -1]  # [B, hid, H, W]
        preds = []
        for k in range(horizon):
            frame = self.act(self.decoder(h))  # [B, C, H, W]
            preds.append(frame)
            if k < horizon - 1:
                inp = self.next_input(frame, k, teacher, mask)
                out, state = self.rnn(inp.unsqueeze(1), state)
                h = out[0][:, 0]
        return torch.stack(preds, dim=1)  # [B, horizon, C, H, W]

"""Seq2seq ConvLSTM with a 3D-conv head, after the Moving-MNIST Lightning tutorial in the seeds.

Two ConvLSTM cells encode, two decode, and a 3-D convolution over the decoded sequence (temporal
extent 1, so it is causal and the model can roll out any number of steps) maps `nf` features to the
frame's channels, followed by a sigmoid. Autoregressive: each predicted frame goes back through the
encoder cells and becomes the decoder's next input.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from convcast.layers import ConvLSTMCell
from convcast.models.base import Forecaster, make_activation
from convcast.models.registry import register_model


@register_model("seq2seq")
class Seq2Seq(Forecaster):
    autoregressive = True

    def __init__(
        self, in_channels: int = 1, nf: int = 64, kernel_size: int = 3,
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.enc1 = ConvLSTMCell(in_channels, nf, kernel_size)
        self.enc2 = ConvLSTMCell(nf, nf, kernel_size)
        self.dec1 = ConvLSTMCell(nf, nf, kernel_size)
        self.dec2 = ConvLSTMCell(nf, nf, kernel_size)
        self.head = nn.Conv3d(nf, in_channels, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.act = make_activation(output_activation)

    def forward(
        self, x: torch.Tensor, horizon: int, teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_input(x, horizon)
        mask = self.check_teacher(x, horizon, teacher, teacher_mask)
        e1 = e2 = d1 = d2 = None
        for t in range(x.shape[1]):
            e1 = self.enc1(x[:, t], e1)  # (h, c), each [B, nf, H, W]
            e2 = self.enc2(e1[0], e2)
        outs = []
        for k in range(horizon):
            d1 = self.dec1(e2[0], d1)
            d2 = self.dec2(d1[0], d2)
            outs.append(d2[0])
            if k < horizon - 1:  # encode this step's frame to drive the next decoder step
                frame = self.act(self.head(d2[0].unsqueeze(2)).squeeze(2))  # [B, C, H, W]
                frame = self.next_input(frame, k, teacher, mask)
                e1 = self.enc1(frame, e1)
                e2 = self.enc2(e1[0], e2)
        feats = torch.stack(outs, dim=2)  # [B, nf, horizon, H, W]
        return self.act(self.head(feats)).transpose(1, 2)  # [B, horizon, C, H, W]

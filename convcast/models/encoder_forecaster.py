"""The encoder–forecaster network of Shi et al. (NIPS 2015), figure 3.

A stack of ConvLSTM layers encodes the input frames; a forecaster stack of the same shape starts
from the encoder's final states (copied layer by layer) and unrolls for `horizon` steps; each
forecast frame is a 1×1 convolution over the concatenated hidden states of every forecaster layer.
Frames are patch-reshaped first (`patch_size=4`: 64×64×1 -> 16×16×16), as in the paper.

The paper's forecaster reads no input. `feedback=True` (not in the paper) feeds it the previous
forecast frame instead, which makes the model autoregressive and lets training use teacher forcing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers import ConvLSTM, ConvLSTMCell, depth_to_space, space_to_depth
from convcast.models.base import Forecaster, make_activation
from convcast.models.registry import register_model


@register_model("encoder_forecaster")
class EncoderForecaster(Forecaster):
    def __init__(
        self,
        in_channels: int = 1,
        hidden_channels: int | Sequence[int] = (64, 64),
        kernel_size: int | Sequence = 5,
        num_layers: int | None = None,
        patch_size: int = 4,
        peephole: bool = False,
        layer_norm: bool = False,
        feedback: bool = False,
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        hidden = list(hidden_channels) if isinstance(hidden_channels, (list, tuple)) else None
        num_layers = num_layers or (len(hidden) if hidden else 2)
        self.in_channels, self.patch_size, self.feedback = in_channels, patch_size, feedback
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        self.encoder = ConvLSTM(pc, hidden_channels, kernel_size, num_layers,
                                peephole=peephole, layer_norm=layer_norm)
        hid, cells = self.encoder.hidden_channels, self.encoder.cells
        self.forecaster = nn.ModuleList(
            ConvLSTMCell((pc if feedback else 0) if i == 0 else hid[i - 1], hid[i],
                         cells[i].kernel_size, peephole=peephole, layer_norm=layer_norm)
            for i in range(num_layers)
        )
        self.head = nn.Conv2d(sum(hid), pc, kernel_size=1)  # 1×1 conv over all forecaster states
        self.act = make_activation(output_activation)

    @property
    def autoregressive(self) -> bool:  # type: ignore[override]
        return self.feedback

    def forward(
        self, x: torch.Tensor, horizon: int, teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_input(x, horizon)
        if teacher is not None and not self.feedback:
            raise ValueError("teacher forcing needs feedback=True: the paper's forecaster reads "
                             "no input frames")
        mask = self.check_teacher(x, horizon, teacher, teacher_mask)
        p = self.patch_size
        xp = space_to_depth(x, p)  # [B, T_in, C*p*p, H/p, W/p]
        tp = space_to_depth(teacher, p) if teacher is not None else None
        _, states = self.encoder(xp)  # per layer (h, c), each [B, hid_l, H/p, W/p]
        frame = xp[:, -1]  # [B, C*p*p, H/p, W/p], fed to the forecaster when feedback=True
        preds = []
        for k in range(horizon):
            inp = frame if self.feedback else None
            for i, cell in enumerate(self.forecaster):
                states[i] = cell(inp, states[i])
                inp = states[i][0]
            hs = torch.cat([h for h, _ in states], dim=1)  # [B, sum(hid), H/p, W/p]
            frame = self.act(self.head(hs))  # [B, C*p*p, H/p, W/p]
            preds.append(frame)
            if self.feedback and k < horizon - 1:
                frame = self.next_input(frame, k, tp, mask)
        return depth_to_space(torch.stack(preds, dim=1), p)  # [B, horizon, C, H, W]

"""Seq2seq ConvLSTM with a 3D-conv head, after a PyTorch Lightning video-prediction tutorial.

Two ConvLSTM cells encode, two decode, and a 3-D convolution over the decoded sequence (temporal
extent 1, so it is causal and the model can roll out any number of steps) maps `nf` features to the
frame's channels, followed by a sigmoid. Autoregressive: each predicted frame goes back through the
encoder cells and becomes the decoder's next input.

The encoder cells read observed and predicted frames alike, so the step that produces future frame
k begins by encoding the frame before it (the last observed frame for k = 0). `encode` therefore
runs the encoder over all frames but the newest and keeps that one in the state (`last`).
With `condition_channels = C` the encoder cells read each frame beside a condition frame: the
condition frame of lead time k at the step that produces future frame k, and an observed frame
itself while encoding (the observation is its own condition).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from convcast.layers import ConvLSTMCell
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    make_activation,
)
from convcast.models.registry import register_model

CELLS = ("e1", "e2")  # the encoder cells, whose states the encoded state holds


@register_model("seq2seq", inputs=("condition", "teacher", "teacher_mask"), tiny={"nf": 4})
class Seq2Seq(RecurrentForecaster):
    autoregressive = True

    def __init__(
        self, in_channels: int = 1, nf: int = 64, kernel_size: int = 3,
        output_activation: str = "sigmoid", condition_channels: int = 0,
    ) -> None:
        super().__init__()
        check_size("seq2seq", "in_channels", in_channels)
        check_size("seq2seq", "nf", nf)
        check_kernel("seq2seq", kernel_size)
        cc = self.set_condition_channels(condition_channels)
        self.shared_anchor(in_channels, cc)
        self.in_channels = in_channels
        self.enc1 = ConvLSTMCell(in_channels + cc, nf, kernel_size)
        self.enc2 = ConvLSTMCell(nf, nf, kernel_size)
        self.dec1 = ConvLSTMCell(nf, nf, kernel_size)
        self.dec2 = ConvLSTMCell(nf, nf, kernel_size)
        self.head = nn.Conv3d(nf, in_channels, kernel_size=(1, 3, 3), padding=(0, 1, 1))
        self.act = make_activation(output_activation)

    def state_keys(self) -> list[str]:
        return ["last"] + [f"{c}{n}" for c in CELLS for n in "hc"]

    def _encode_step(self, frame: torch.Tensor, anchor: torch.Tensor | None, st: State,
                     w: list[torch.Tensor]) -> None:
        """Read one frame (and its condition frame) into the encoder states of `st`."""
        inp = frame if anchor is None else torch.cat([frame, anchor], dim=1)  # [B, C(+Cc), H, W]
        e1 = self.enc1.step(inp, (st["e1h"], st["e1c"]), w[0])  # (h, c), each [B, nf, H, W]
        e2 = self.enc2.step(e1[0], (st["e2h"], st["e2c"]), w[1])
        st["e1h"], st["e1c"], st["e2h"], st["e2c"] = *e1, *e2

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        """Encode every frame of `x [B, k, C, H, W]` but the newest, which waits in `last`."""
        self.check_frames(x)
        x = self.cast(x)
        B, _, _, H, W = x.shape
        if state is None:
            h, c = self.enc1.init_state(B, H, W, x)  # zeros, each [B, nf, H, W]
            st = {"e1h": h, "e1c": c, "e2h": h, "e2c": c}
            frames = list(x.unbind(1))
        else:
            self.check_state(state)
            st = {k: v for k, v in state.items() if k != "last"}  # a copy: state stays
            frames = [state["last"], *x.unbind(1)]
        w = [self.enc1.conv_weight(), self.enc2.conv_weight()]  # built once for all steps
        for frame in frames[:-1]:
            self._encode_step(frame, frame if self.condition_channels else None, st, w)
        st["last"] = frames[-1]  # [B, C, H, W]
        return st

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Roll out `horizon` frames from (a copy of) `state`, feeding each prediction back."""
        cond, teacher, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        st = dict(state)  # a copy: state stays
        frame = st.pop("last")  # [B, C, H, W]
        B, _, H, W = frame.shape
        w = [cell.conv_weight() for cell in (self.enc1, self.enc2, self.dec1, self.dec2)]
        d1 = d2 = self.dec1.init_state(B, H, W, st["e1h"])  # zeros, [B, nf, H, W]
        outs = []
        for k in range(horizon):
            self._encode_step(frame, cond[:, k] if cond is not None else None, st, w)
            d1 = self.dec1.step(st["e2h"], d1, w[2])  # (h, c), each [B, nf, H, W]
            d2 = self.dec2.step(d1[0], d2, w[3])
            outs.append(d2[0])
            if k < horizon - 1:  # this step's frame is what the next step encodes
                frame = self.act(self.head(d2[0].unsqueeze(2)).squeeze(2))  # [B, C, H, W]
                frame = self.next_input(frame, k, teacher, mask)
        feats = torch.stack(outs, dim=2)  # [B, nf, horizon, H, W]
        return self.act(self.head(feats)).transpose(1, 2)  # [B, horizon, C, H, W]

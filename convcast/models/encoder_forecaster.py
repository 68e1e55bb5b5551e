"""The encoder–forecaster network of Shi et al. (NIPS 2015), figure 3.

A stack of ConvLSTM layers encodes the input frames; a forecaster stack of the same shape starts
from the encoder's final states (copied layer by layer) and unrolls for `horizon` steps; each
forecast frame is a 1×1 convolution over the concatenated hidden states of every forecaster layer.
Frames are patch-reshaped first (`patch_size=4`: 64×64×1 -> 16×16×16), as in the paper.

The paper's forecaster reads no input. `feedback=True` (not in the paper) feeds it the previous
forecast frame instead, which makes the model autoregressive and lets training use teacher forcing.
With `condition_channels > 0` the forecaster's first layer also reads the condition frame of the
lead time it produces (patch-reshaped like the frames; without feedback it reads only that).

`encode` runs the encoder and returns its states (`h{i}`, `c{i}` per layer) and the last frame
(`last`, patch-reshaped); `decode` runs the forecaster from a copy of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers import ConvLSTM, ConvLSTMCell, depth_to_space, space_to_depth
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    check_sizes,
    make_activation,
)
from convcast.models.registry import register_model


@register_model("encoder_forecaster", inputs=("condition", "teacher", "teacher_mask"),
                tiny={"hidden_channels": [4, 4], "kernel_size": 3, "patch_size": 2})
class EncoderForecaster(RecurrentForecaster):
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
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        name = "encoder_forecaster"
        check_size(name, "in_channels", in_channels)
        check_sizes(name, "hidden_channels", hidden_channels)
        check_kernel(name, kernel_size)
        check_size(name, "patch_size", patch_size)
        hidden = list(hidden_channels) if isinstance(hidden_channels, (list, tuple)) else None
        if num_layers is None:
            num_layers = len(hidden) if hidden else 2
        check_size(name, "num_layers", num_layers)
        cc = self.set_condition_channels(condition_channels)
        self.in_channels, self.patch_size, self.feedback = in_channels, patch_size, feedback
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        self.encoder = ConvLSTM(pc, hidden_channels, kernel_size, num_layers,
                                peephole=peephole, layer_norm=layer_norm)
        hid, cells = self.encoder.hidden_channels, self.encoder.cells
        first = (pc if feedback else 0) + cc * patch_size**2  # what the first forecaster reads
        self.forecaster = nn.ModuleList(
            ConvLSTMCell(first if i == 0 else hid[i - 1], hid[i],
                         cells[i].kernel_size, peephole=peephole, layer_norm=layer_norm)
            for i in range(num_layers)
        )
        self.head = nn.Conv2d(sum(hid), pc, kernel_size=1)  # 1×1 conv over all forecaster states
        self.act = make_activation(output_activation)

    @property
    def autoregressive(self) -> bool:  # type: ignore[override]
        return self.feedback

    def state_keys(self) -> list[str]:
        return ["last"] + [f"{n}{i}" for i in range(len(self.forecaster)) for n in "hc"]

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        """Advance the encoder by frames `x [B, k, C, H, W]` from `state` (None: zeros)."""
        self.check_frames(x)
        xp = space_to_depth(self.cast(x), self.patch_size)  # [B, k, C*p*p, H/p, W/p]
        L = len(self.forecaster)
        prev = None
        if state is not None:
            self.check_state(state)
            prev = [(state[f"h{i}"], state[f"c{i}"]) for i in range(L)]
        _, states = self.encoder(xp, prev)  # per layer (h, c), each [B, hid_l, H/p, W/p]
        out = {f"{n}{i}": t for i, s in enumerate(states) for n, t in zip("hc", s, strict=True)}
        out["last"] = xp[:, -1]  # [B, C*p*p, H/p, W/p], fed to the forecaster when feedback=True
        return out

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unroll the forecaster for `horizon` steps from (a copy of) the encoder's `state`."""
        cp, tp, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        frame = state["last"]  # [B, C*p*p, H/p, W/p]
        states = [(state[f"h{i}"], state[f"c{i}"]) for i in range(len(self.forecaster))]  # copy
        weights = [cell.conv_weight() for cell in self.forecaster]  # built once for all steps
        preds = []
        for k in range(horizon):
            inp = frame if self.feedback else None
            if cp is not None:
                inp = cp[:, k] if inp is None else torch.cat([inp, cp[:, k]], dim=1)
            for i, cell in enumerate(self.forecaster):
                states[i] = cell.step(inp, states[i], weights[i])
                inp = states[i][0]
            hs = torch.cat([h for h, _ in states], dim=1)  # [B, sum(hid), H/p, W/p]
            frame = self.act(self.head(hs))  # [B, C*p*p, H/p, W/p]
            preds.append(frame)
            if self.feedback and k < horizon - 1:
                frame = self.next_input(frame, k, tp, mask)
        return depth_to_space(torch.stack(preds, dim=1), self.patch_size)  # [B,K,C,H,W]

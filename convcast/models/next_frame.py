"""The small next-frame model of a moving-squares ConvLSTM tutorial.

One ConvLSTM layer reads the frames and a 1×1 convolution decodes its hidden state into the next
frame; the prediction is fed back for as many steps as asked (autoregressive rollout).

The step that reads a frame predicts the one after it, so the step that produces future frame 0
is the one that reads the last observed frame: `encode` runs the stack over all frames but the
newest, which waits in the state (`last`) for `decode`. With `condition_channels = C` every step
reads its frame beside a condition frame: at the step producing future frame k the condition frame
of lead time k, and while encoding the observed frame itself (the observation is its own
condition).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from convcast.layers import ConvLSTM
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    check_sizes,
    make_activation,
)
from convcast.models.registry import register_model


@register_model("next_frame", inputs=("condition", "teacher", "teacher_mask"),
                tiny={"hidden_channels": 4})
class NextFrame(RecurrentForecaster):
    autoregressive = True

    def __init__(
        self, in_channels: int = 1, hidden_channels: int | Sequence[int] = 16,
        kernel_size: int = 3, num_layers: int = 1, output_activation: str = "sigmoid",
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        check_size("next_frame", "in_channels", in_channels)
        check_sizes("next_frame", "hidden_channels", hidden_channels)
        check_kernel("next_frame", kernel_size)
        check_size("next_frame", "num_layers", num_layers)
        cc = self.set_condition_channels(condition_channels)
        self.shared_anchor(in_channels, cc)
        self.in_channels = in_channels
        self.rnn = ConvLSTM(in_channels + cc, hidden_channels, kernel_size, num_layers)
        self.decoder = nn.Conv2d(self.rnn.hidden_channels[-1], in_channels, kernel_size=1)
        self.act = make_activation(output_activation)

    def state_keys(self) -> list[str]:
        return ["last"] + [f"{n}{i}" for i in range(self.rnn.num_layers) for n in "hc"]

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        """Run the stack over every frame of `x [B, k, C, H, W]` but the newest (kept in `last`)."""
        self.check_frames(x)
        x = self.cast(x)
        L = self.rnn.num_layers
        if state is not None:
            self.check_state(state)
            seq = torch.cat([state["last"].unsqueeze(1), x[:, :-1]], dim=1)  # [B, k, C, H, W]
            prev = [(state[f"h{i}"], state[f"c{i}"]) for i in range(L)]
        else:
            seq, prev = x[:, :-1], None  # [B, k-1, C, H, W]
        if seq.shape[1]:
            if self.condition_channels:
                seq = torch.cat([seq, seq], dim=2)  # an observed frame is its own condition
            _, prev = self.rnn(seq, prev)  # per layer (h, c), each [B, hid, H, W]
        elif prev is None:  # one frame and no state: nothing read yet, zero states
            B, _, _, H, W = x.shape
            prev = [cell.init_state(B, H, W, x) for cell in self.rnn.cells]
        out = {f"{n}{i}": t for i, s in enumerate(prev) for n, t in zip("hc", s, strict=True)}
        out["last"] = x[:, -1]  # [B, C, H, W]
        return out

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Roll out `horizon` frames from (a copy of) `state`, feeding each prediction back."""
        cond, teacher, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        frame = state["last"]  # [B, C, H, W]
        cells = self.rnn.cells
        states = [(state[f"h{i}"], state[f"c{i}"]) for i in range(len(cells))]  # a copy
        weights = [cell.conv_weight() for cell in cells]  # built once for all steps
        preds = []
        for k in range(horizon):
            inp = frame if cond is None else torch.cat([frame, cond[:, k]], dim=1)
            for i, cell in enumerate(cells):
                states[i] = cell.step(inp, states[i], weights[i])
                inp = states[i][0]  # [B, hid, H, W]
            pred = self.act(self.decoder(inp))  # [B, C, H, W]
            preds.append(pred)
            if k < horizon - 1:
                frame = self.next_input(pred, k, teacher, mask)
        return torch.stack(preds, dim=1)  # [B, horizon, C, H, W]

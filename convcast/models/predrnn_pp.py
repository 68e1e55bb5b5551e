"""PredRNN++ (Wang et al., ICML 2018): causal LSTMs and a gradient highway.

A stack of causal LSTM cells (`convcast.layers.causal_lstm`) runs over patch-reshaped frames
(`patch_size=4`: 64×64×1 -> 16×16×16), wired as PredRNN: each layer's temporal memory C flows
along time, the spatiotemporal memory M climbs the stack and goes from the top layer at step t to
the bottom layer at step t + 1 (the zigzag). A gradient highway unit sits between the first and
the second layer (equation 5 of the paper): layer 2 reads the highway's state Z_t instead of the
first layer's H_t, and Z_t mixes H_t into Z_{t-1} through a learned gate, a short path for
gradients over many steps. At every step a 1×1 convolution of the top layer's H predicts the next
frame, fed back as the next input once the true inputs run out (autoregressive;
`teacher`/`teacher_mask` as in `base.py`, `input_mask` for reverse scheduled sampling as in
`predrnn.py`). The step that reads the last input frame produces the first forecast, so `encode`
reads all frames but the newest, which waits in the state (`last`) for `decode`. With
`condition_channels = C` the bottom layer reads each frame beside a condition frame: the condition
frame of lead time k at the step producing future frame k, and while reading an input frame that
frame itself.

Extra training loss, returned by `extra_losses()` after a training-mode forward and added by
`ForecastSystem` to its loss: context: `context_weight` × MSE of the model's predictions of input
frames 2..T_in (the authors' code and OpenSTL train on all T_in + T_out - 1 next-frame
predictions; off by default, the configs turn it on).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from convcast.layers.causal_lstm import CausalLSTMCell, GradientHighwayUnit
from convcast.models.base import (
    State,
    make_activation,
)
from convcast.models.registry import register_model, register_variant
from convcast.models.zigzag import ZigzagForecaster


@register_model("predrnn_pp", inputs=("condition", "teacher", "teacher_mask", "input_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2})
class PredRNNpp(ZigzagForecaster):
    """Stacked causal LSTMs with a gradient highway (PredRNN++). Defaults are small; OpenSTL's
    Moving MNIST model is 4×128, kernel 5, patch 4 (variant `predrnn_pp_mmnist`)."""


    def __init__(
        self,
        *,
        in_channels: int = 1,
        hidden_channels: int = 64,
        num_layers: int = 4,
        kernel_size: int = 5,
        patch_size: int = 4,
        layer_norm: bool = False,
        output_activation: str = "sigmoid",
        context_weight: float = 0.0,
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        self.check_stack(in_channels=in_channels, hidden_channels=hidden_channels,
                         num_layers=num_layers, kernel_size=kernel_size, patch_size=patch_size,
                         context_weight=context_weight, min_layers=2,
                         why="the gradient highway unit sits between layers 1 and 2")
        cc = self.set_condition_channels(condition_channels)
        self.shared_anchor(in_channels, cc)
        self.in_channels, self.patch_size = in_channels, patch_size
        self.hidden_channels, self.num_layers = hidden_channels, num_layers
        self.context_weight = context_weight
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        self.cells = nn.ModuleList(
            CausalLSTMCell(pc + cc * patch_size**2 if i == 0 else hidden_channels,
                           hidden_channels, kernel_size, layer_norm=layer_norm)
            for i in range(num_layers)
        )
        self.highway = GradientHighwayUnit(hidden_channels, hidden_channels, kernel_size,
                                           layer_norm=layer_norm)
        self.head = nn.Conv2d(hidden_channels, pc, kernel_size=1)
        self.act = make_activation(output_activation)

    def state_keys(self) -> list[str]:
        return ["last", "m", "z"] + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]

    def fresh_state(self, xp: torch.Tensor) -> State:
        return self.zero_state(xp, self.cells[0], "cmz")  # C, M, Z: >= float32

    def _step(self, inp: torch.Tensor, st: State) -> torch.Tensor:
        """One time step of the stack on `inp` (a patch frame, with its condition frame);
        updates `st` and returns the top layer's H. M climbs the stack, then goes on to layer 0
        at the next step (the zigzag); layer 1 reads the highway's Z instead of layer 0's H."""
        m = st["m"]  # [B, hid, hp, wp]
        for i, cell in enumerate(self.cells):
            st[f"h{i}"], st[f"c{i}"], m = cell(inp, st[f"h{i}"], st[f"c{i}"], m)
            inp = st[f"h{i}"]
            if i == 0:
                st["z"] = inp = self.highway(inp, st["z"])  # [B, hid, hp, wp]
        st["m"] = m
        return inp  # [B, hid, hp, wp]


register_variant(
    "predrnn_pp_mmnist", "predrnn_pp",
    doc="OpenSTL's PredRNN++ on Moving MNIST 10->10: 4x128 causal LSTMs, 5x5, patch 4, no layer "
    "norm (35.3M; OpenSTL reports 38.6M, which counts a convolution its cell builds but never "
    "uses)",
    hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4)

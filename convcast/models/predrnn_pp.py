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
import torch.nn.functional as F

from convcast.layers import depth_to_space, space_to_depth
from convcast.layers.causal_lstm import CausalLSTMCell, GradientHighwayUnit
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    make_activation,
)
from convcast.models.registry import register_model, register_variant


@register_model("predrnn_pp", inputs=("condition", "teacher", "teacher_mask", "input_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2})
class PredRNNpp(RecurrentForecaster):
    """Stacked causal LSTMs with a gradient highway (PredRNN++). Defaults are small; OpenSTL's
    Moving MNIST model is 4×128, kernel 5, patch 4 (variant `predrnn_pp_mmnist`)."""

    autoregressive = True

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
        name = type(self).model_name
        check_size(name, "in_channels", in_channels)
        check_size(name, "num_layers", num_layers)
        if num_layers < 2:
            raise ValueError(f"{name}: num_layers must be >= 2 (the gradient highway unit sits "
                             f"between layers 1 and 2), got {num_layers}")
        if not isinstance(hidden_channels, int):
            raise ValueError(
                f"{name}: hidden_channels must be one int (got {hidden_channels!r}): the "
                "spatiotemporal memory passes through every layer, so all layers have the same "
                "width"
            )
        check_size(name, "hidden_channels", hidden_channels)
        check_kernel(name, kernel_size)
        check_size(name, "patch_size", patch_size)
        if context_weight < 0:
            raise ValueError(f"{name}: context_weight must be >= 0, got {context_weight}")
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
        self._extra: dict[str, torch.Tensor] = {}
        self._ctx: list[torch.Tensor] | None = None  # input-frame predictions for the context loss

    def extra_losses(self) -> dict[str, torch.Tensor]:
        """Weighted extra losses of the last training-mode forward (empty in eval mode)."""
        return dict(self._extra) if self.training else {}

    def __getstate__(self) -> dict:  # the stored losses hold a graph: never copy or pickle them
        return {**self.__dict__, "_extra": {}, "_ctx": None}

    def state_keys(self) -> list[str]:
        return ["last", "m", "z"] + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]

    @staticmethod
    def _check_input_mask(x: torch.Tensor, input_mask: torch.Tensor | None) -> torch.Tensor | None:
        if input_mask is None:
            return None
        B, T = x.shape[:2]
        if input_mask.shape != (B, T - 1):
            raise ValueError(f"input_mask must be [B, T_in-1] = [{B}, {T - 1}], got "
                             f"{tuple(input_mask.shape)}")
        return input_mask.to(x.dtype)

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

    def encode(
        self, x: torch.Tensor, state: State | None = None, input_mask: torch.Tensor | None = None,
    ) -> State:
        """Read every frame of `x [B, k, C, H, W]` but the newest, which waits in `last` (the step
        that reads it produces the first forecast). `input_mask [B, k-1]` (reverse scheduled
        sampling, only from a fresh state): 0 replaces input frame t + 1 by its prediction."""
        self.check_frames(x)
        x = self.cast(x)
        imask = self._check_input_mask(x, input_mask)
        xp = space_to_depth(x, self.patch_size)  # [B, k, C*p*p, H/p, W/p]
        if state is None:
            B, _, _, hp, wp = xp.shape
            h = self.cells[0].init_state(B, hp, wp, xp)  # zeros [B, hid, hp, wp]
            mem = self.cells[0].init_state(B, hp, wp, xp, memory=True)  # C, M, Z: >= float32
            st = {k: mem if k[0] in "cmz" else h for k in self.state_keys()[1:]}
            frames = list(xp.unbind(1))
        else:
            if imask is not None:
                raise ValueError("input_mask applies to a fresh sequence only; encode without a "
                                 "state or drop input_mask")
            self.check_state(state)
            st = {k: v for k, v in state.items() if k != "last"}  # a copy: state stays
            frames = [state["last"], *xp.unbind(1)]
        ctx = self._ctx
        frame = frames[0]  # [B, C*p*p, hp, wp]
        for t in range(len(frames) - 1):
            top = self._step(torch.cat([frame, frame], 1) if self.condition_channels else frame, st)
            frame = frames[t + 1]  # the next input: true frame t + 1 ...
            if imask is not None or ctx is not None:
                pred = self.act(self.head(top))  # the prediction of input frame t + 1
                if ctx is not None:
                    ctx.append(pred)
                if imask is not None:  # ... or, where the mask is 0, its prediction
                    w = imask[:, t].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
                    frame = w * frame + (1 - w) * pred
        st["last"] = frame
        return st

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Roll out `horizon` frames from (a copy of) `state`, feeding each prediction back."""
        cp, tp, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        st = dict(state)  # a copy: state stays
        frame = st.pop("last")  # [B, C*p*p, hp, wp]
        preds = []
        for k in range(horizon):  # step k reads frame k - 1 (the last input for k = 0)
            inp = frame if cp is None else torch.cat([frame, cp[:, k]], dim=1)
            pred = self.act(self.head(self._step(inp, st)))  # [B, C*p*p, hp, wp]
            preds.append(pred)
            if k < horizon - 1:
                frame = self.next_input(pred, k, tp, mask)
        return depth_to_space(torch.stack(preds, dim=1), self.patch_size)  # [B,K,C,H,W]

    def forward(
        self,
        x: torch.Tensor,
        horizon: int,
        teacher: torch.Tensor | None = None,
        teacher_mask: torch.Tensor | None = None,
        input_mask: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self.check_horizon(horizon)
        self._extra = {}
        self._ctx = [] if self.training and self.context_weight > 0 else None
        try:
            state = self.encode(x, input_mask=input_mask)
            y = self.decode(state, horizon, condition, teacher, teacher_mask)
            if self._ctx:
                xp = space_to_depth(self.cast(x), self.patch_size)  # [B, T_in, C*p*p, hp, wp]
                err = F.mse_loss(torch.stack(self._ctx, dim=1), xp[:, 1:])
                self._extra["context"] = self.context_weight * err
        finally:
            self._ctx = None
        return y.to(x.dtype)  # [B, horizon, C, H, W]


register_variant(
    "predrnn_pp_mmnist", "predrnn_pp",
    doc="OpenSTL's PredRNN++ on Moving MNIST 10->10: 4x128 causal LSTMs, 5x5, patch 4, no layer "
    "norm (35.3M; OpenSTL reports 38.6M, which counts a convolution its cell builds but never "
    "uses)",
    hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4)

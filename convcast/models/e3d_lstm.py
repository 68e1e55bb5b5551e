"""E3D-LSTM (Eidetic 3D LSTM, Wang et al., ICLR 2019).

A stack of Eidetic 3D LSTM cells (`convcast.layers.e3d_lstm`) runs over patch-reshaped frames
(`patch_size=4`: 64×64×1 -> 16×16×16) as PredRNN's stack does, but each step reads a window of the
last `window` frames (zeros before the first frame) through 3-D convolutions, and each layer
recalls its last `tau` cell memories through attention. A 3-D convolution spanning the window
(`window`×1×1, as in the reference code) reads the top layer's H out as the next frame, which is
fed back as the next input once the true inputs run out (autoregressive; `teacher`/`teacher_mask`
as in `base.py`). The step that reads the last input frame produces the first forecast, so
`encode` reads all frames but the newest, which waits in the state (`last`, the window of the last
`window` frames, the newest last) for `decode`. With `condition_channels = C` the bottom layer
reads the window beside a condition frame repeated over it: the condition frame of lead time k at
the step producing future frame k, and while reading an input frame that frame itself (the
observation is its own condition).

The state is a dict of tensors: `last` `[B, window, C·p², H/p, W/p]`; per layer i, `h{i}`
`[B, hid, window, H/p, W/p]` and `c{i}`, the layer's last n ≤ `tau` cell memories
`[B, n, hid, window, H/p, W/p]` (the newest last; a fresh state holds one zero memory, as the
reference's history starts with the zero initial cell); and, with `memory_flow=True`, `m`, the
spatiotemporal memory.

Follows the reference code (OpenSTL's `e3dlstm_model.py`, a port of google/e3d_lstm) where it
differs from the paper; see the cell's docstring for the cell. In the model:
    - the released cells return the memory M they were given, so every cell reads M = 0 and only
      the input X_t drives M_t (`memory_flow=False`, the default). `memory_flow=True` passes M_t up
      the stack and from the top layer at t to the bottom layer at t + 1, as the paper describes;
    - the reference recalls every memory since the first step (the zero initial one included);
      `tau` bounds the history so that a stream's state stays finite: any `tau` >= the number of
      steps (T_in + horizon - 1) gives the reference's forecast.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from convcast.layers import depth_to_space, space_to_depth
from convcast.layers.e3d_lstm import Eidetic3DLSTMCell
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    make_activation,
)
from convcast.models.registry import register_model, register_variant


@register_model("e3d_lstm", inputs=("condition", "teacher", "teacher_mask"),
                tiny={"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2,
                      "window": 2, "tau": 2})
class E3DLSTM(RecurrentForecaster):
    """Stacked E3D-LSTM forecaster. Defaults are small (2×64); OpenSTL's Moving MNIST model
    (variant `e3d_lstm_mmnist`) uses 4×128, kernel 5, window 2, patch 4.

    At PyTorch's default initialisation (the reference's) each layer of the default cell weakens
    the input's influence on the output about tenfold (with 4 layers an input frame moves the
    first forecast by ~1e-5); training recovers, and `layer_norm=True` or `memory_flow=True`
    start much closer to the input.
    """

    autoregressive = True

    def __init__(
        self,
        *,
        in_channels: int = 1,
        hidden_channels: int = 64,
        num_layers: int = 2,
        kernel_size: int = 5,
        patch_size: int = 4,
        window: int = 2,
        tau: int = 10,
        layer_norm: bool = False,
        memory_flow: bool = False,
        output_activation: str = "sigmoid",
        condition_channels: int = 0,
    ) -> None:
        super().__init__()
        name = type(self).model_name
        check_size(name, "in_channels", in_channels)
        check_size(name, "num_layers", num_layers)
        if not isinstance(hidden_channels, int):
            raise ValueError(
                f"{name}: hidden_channels must be one int (got {hidden_channels!r}): the "
                "spatiotemporal memory passes through every layer, so all layers have the same "
                "width"
            )
        check_size(name, "hidden_channels", hidden_channels)
        if isinstance(kernel_size, list):
            raise ValueError(f"{name}: kernel_size must be one int or (kh, kw) pair for every "
                             f"layer, got {kernel_size!r}")
        check_kernel(name, kernel_size)
        check_size(name, "patch_size", patch_size)
        check_size(name, "window", window)
        check_size(name, "tau", tau)
        cc = self.set_condition_channels(condition_channels)
        self.shared_anchor(in_channels, cc)
        self.in_channels, self.patch_size = in_channels, patch_size
        self.hidden_channels, self.num_layers = hidden_channels, num_layers
        self.window, self.tau, self.memory_flow = window, tau, bool(memory_flow)
        pc = in_channels * patch_size**2  # channels of a patch-reshaped frame
        self.cells = nn.ModuleList(
            Eidetic3DLSTMCell(pc + cc * patch_size**2 if i == 0 else hidden_channels,
                              hidden_channels, kernel_size=kernel_size, window=window,
                              layer_norm=layer_norm)
            for i in range(num_layers)
        )
        # one frame from the top layer's window of H (the reference's window×1×1 convolution)
        self.head = nn.Conv3d(hidden_channels, pc, (window, 1, 1), bias=False)
        self.act = make_activation(output_activation)

    def state_keys(self) -> list[str]:
        keys = ["last"] + [f"{n}{i}" for i in range(self.num_layers) for n in "hc"]
        return keys + ["m"] if self.memory_flow else keys

    def _step(self, window: torch.Tensor, cond: torch.Tensor | None, st: State) -> torch.Tensor:
        """One time step of the stack on `window [B, w, C*p*p, hp, wp]` (the last frames, the
        newest last) and `cond [B, Cc*p*p, hp, wp]` (or None); updates `st`, returns the top
        layer's H `[B, hid, w, hp, wp]`."""
        inp = window.transpose(1, 2)  # [B, C*p*p, w, hp, wp]
        if cond is not None:
            inp = torch.cat([inp, cond.unsqueeze(2).expand(-1, -1, self.window, -1, -1)], dim=1)
        if self.memory_flow:
            m = st["m"]
        else:  # the reference: every cell reads a zero M (see the module docstring)
            B, _, _, hp, wp = inp.shape
            m = self.cells[0].init_state(B, hp, wp, inp, memory=True)  # [B, hid, w, hp, wp]
        for i, cell in enumerate(self.cells):
            memories = st[f"c{i}"]  # [B, n, hid, w, hp, wp]
            h, c, m_next = cell(inp, st[f"h{i}"], memories, m)
            st[f"h{i}"] = h
            st[f"c{i}"] = torch.cat([memories, c.unsqueeze(1)], dim=1)[:, -self.tau:]
            if self.memory_flow:
                m = m_next
            inp = h
        if self.memory_flow:
            st["m"] = m
        return inp  # [B, hid, w, hp, wp]

    def _read_out(self, top: torch.Tensor) -> torch.Tensor:
        return self.act(self.head(top).squeeze(2))  # [B, C*p*p, hp, wp]

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        """Read every frame of `x [B, k, C, H, W]` but the newest, which waits at the end of the
        window `last` (the step that reads it produces the first forecast)."""
        self.check_frames(x)
        xp = space_to_depth(self.cast(x), self.patch_size)  # [B, k, C*p*p, hp, wp]
        if state is None:
            B, _, pc, hp, wp = xp.shape
            cell = self.cells[0]
            h = cell.init_state(B, hp, wp, xp)  # zeros [B, hid, w, hp, wp]
            mem = cell.init_state(B, hp, wp, xp, memory=True)  # C and M: >= float32
            st = {f"h{i}": h for i in range(self.num_layers)}
            st.update({f"c{i}": mem.unsqueeze(1) for i in range(self.num_layers)})
            if self.memory_flow:
                st["m"] = mem
            pad = xp.new_zeros(B, self.window - 1, pc, hp, wp)  # zeros before the first frame
            window = torch.cat([pad, xp[:, :1]], dim=1)  # [B, w, C*p*p, hp, wp]
            frames = list(xp[:, 1:].unbind(1))
        else:
            self.check_state(state)
            st = {k: v for k, v in state.items() if k != "last"}  # a copy: state stays
            window, frames = state["last"], list(xp.unbind(1))
        for frame in frames:
            self._step(window, window[:, -1] if self.condition_channels else None, st)
            window = torch.cat([window[:, 1:], frame.unsqueeze(1)], dim=1)
        st["last"] = window
        return st

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Roll out `horizon` frames from (a copy of) `state`, feeding each prediction back."""
        cp, tp, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        st = dict(state)  # a copy: state stays
        window = st.pop("last")  # [B, w, C*p*p, hp, wp]
        preds = []
        for k in range(horizon):  # step k reads frame k - 1 (the last input for k = 0)
            pred = self._read_out(self._step(window, None if cp is None else cp[:, k], st))
            preds.append(pred)  # [B, C*p*p, hp, wp]
            if k < horizon - 1:
                frame = self.next_input(pred, k, tp, mask)
                window = torch.cat([window[:, 1:], frame.unsqueeze(1)], dim=1)
        return depth_to_space(torch.stack(preds, dim=1), self.patch_size)  # [B, K, C, H, W]


register_variant(
    "e3d_lstm_mmnist", "e3d_lstm",
    doc="OpenSTL's Moving MNIST E3D-LSTM (configs/mmnist/E3DLSTM.py): 4 layers × 128, 5×5 "
        "kernels over a window of 2 frames, patch 4 (64×64×1 -> 16×16×16), linear read-out; "
        "50.82M weights (OpenSTL: 51.0M; its per-element LayerNorm of C adds 0.52M at 16×16). "
        "tau 20 recalls every memory of a 10 -> 10 sequence, as the reference does.",
    in_channels=1, hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4, window=2,
    tau=20, output_activation="identity",
)

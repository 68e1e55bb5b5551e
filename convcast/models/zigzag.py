"""The frame loop the PredRNN family shares (PredRNN, PredRNN-v2, PredRNN++, MIM).

A stack of memory cells runs over patch-reshaped frames; at every step a 1×1 convolution of the
top layer's H predicts the next frame, which is fed back once the true inputs run out. The step
that reads the last input frame produces the first forecast, so `encode` reads all frames but
the newest, which waits in the state (`last`) for `decode`. A subclass builds its cells and says
what one step of its stack is (`_step(inp, state) -> top H`, updating the state dict) and what a
fresh state holds (`fresh_state(xp)`); the loop, reverse scheduled sampling over the inputs
(`input_mask`), teacher forcing, condition frames and the `context` loss are here, once.

With `condition_channels = C` the bottom layer reads each frame beside a condition frame: the
condition frame of lead time k at the step producing future frame k, and while reading an input
frame that frame itself (the observation is its own condition).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convcast.layers import depth_to_space, space_to_depth
from convcast.models.base import RecurrentForecaster, State, check_kernel, check_size


class ZigzagForecaster(RecurrentForecaster):
    """Base of the stacked-memory forecasters; see the module docstring.

    Subclasses set `cells`, `head` (hidden -> patch channels), `act`, `patch_size`,
    `num_layers`, `context_weight` and `condition_channels` (`check_stack` validates the sizes),
    and implement `state_keys`, `fresh_state` and `_step`.
    """

    autoregressive = True
    _ctx: list[torch.Tensor] | None = None  # input-frame predictions for the context loss
    _extra: dict[str, torch.Tensor]

    def check_stack(self, *, in_channels: int, hidden_channels: int, num_layers: int,
                    kernel_size: int, patch_size: int, context_weight: float,
                    min_layers: int = 1, why: str = "") -> None:
        """The sizes every member of the family checks alike."""
        name = type(self).model_name
        check_size(name, "in_channels", in_channels)
        check_size(name, "num_layers", num_layers)
        if num_layers < min_layers:
            raise ValueError(f"{name}: num_layers must be >= {min_layers} ({why}), got "
                             f"{num_layers}")
        if not isinstance(hidden_channels, int):
            raise ValueError(
                f"{name}: hidden_channels must be one int (got {hidden_channels!r}): the "
                "spatiotemporal memory passes through every layer, so all layers have the same "
                "width")
        check_size(name, "hidden_channels", hidden_channels)
        check_kernel(name, kernel_size)
        check_size(name, "patch_size", patch_size)
        if context_weight < 0:
            raise ValueError(f"{name}: context_weight must be >= 0, got {context_weight}")
        self._extra = {}

    def extra_losses(self) -> dict[str, torch.Tensor]:
        """Weighted extra losses of the last training-mode forward (empty in eval mode)."""
        return dict(self._extra) if self.training else {}

    def __getstate__(self) -> dict:  # the stored losses hold a graph: never copy or pickle them
        return {**self.__dict__, "_extra": {}, "_ctx": None}

    # ---- what a subclass says -------------------------------------------------------------------
    def fresh_state(self, xp: torch.Tensor) -> State:
        """The state before any frame of patch frames `xp [B, k, C*p*p, hp, wp]`, without
        `last`."""
        raise NotImplementedError

    def _step(self, inp: torch.Tensor, st: State) -> torch.Tensor:
        """One time step of the stack on `inp`; updates `st`, returns the top layer's H."""
        raise NotImplementedError

    def zero_state(self, xp: torch.Tensor, cell: torch.nn.Module, memory: str) -> State:
        """Zeros for every state key but `last`: the memories (keys starting with a letter of
        `memory`) in >= float32, the hidden states in the frames' dtype (`cell.init_state`)."""
        B, _, _, hp, wp = xp.shape
        h = cell.init_state(B, hp, wp, xp)  # zeros [B, hid, hp, wp]
        mem = cell.init_state(B, hp, wp, xp, memory=True)
        return {k: mem if k[0] in memory else h for k in self.state_keys() if k != "last"}

    def check_grid(self, xp: torch.Tensor) -> None:
        """Refuse patch frames the cells cannot read (e.g. per-position weights); default: any."""

    # ---- the loop -------------------------------------------------------------------------------
    @staticmethod
    def _check_input_mask(x: torch.Tensor, input_mask: torch.Tensor | None) -> torch.Tensor | None:
        if input_mask is None:
            return None
        B, T = x.shape[:2]
        if input_mask.shape != (B, T - 1):
            raise ValueError(f"input_mask must be [B, T_in-1] = [{B}, {T - 1}], got "
                             f"{tuple(input_mask.shape)}")
        return input_mask.to(x.dtype)

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
        self.check_grid(xp)
        if state is None:
            st = self.fresh_state(xp)
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

    def _begin_extras(self) -> None:
        """Before a forward: start collecting what the model's own extra losses need."""

    def _finish_extras(self) -> None:
        """After a forward: turn what was collected into `self._extra` entries."""

    def _end_extras(self) -> None:
        """After a forward, also when it failed: drop what was collected."""

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
        self._begin_extras()
        try:
            state = self.encode(x, input_mask=input_mask)
            y = self.decode(state, horizon, condition, teacher, teacher_mask)
            self._finish_extras()
            if self._ctx:
                xp = space_to_depth(self.cast(x), self.patch_size)  # [B, T_in, C*p*p, hp, wp]
                err = F.mse_loss(torch.stack(self._ctx, dim=1), xp[:, 1:])  # either layout
                self._extra["context"] = self.context_weight * err
        finally:
            self._ctx = None
            self._end_extras()
        return y.to(x.dtype)  # [B, horizon, C, H, W]

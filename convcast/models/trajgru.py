"""The ConvGRU and TrajGRU encoder–forecasters of the HKO-7 benchmark (Shi et al., NIPS 2017,
"Deep Learning for Precipitation Nowcasting: A Benchmark and a New Model", section 3.1, fig. 1).

One network, two cells (`convcast.layers.conv_gru.ConvGRUCell`, `convcast.layers.trajgru.
TrajGRUCell`), in N levels (HKO-7: 3) of decreasing resolution:

    encoder, per input frame:  stem conv -> RNN 1 -> strided conv -> RNN 2 -> strided conv -> RNN 3
    forecaster, per lead time: RNN 3 -> deconv -> RNN 2 -> deconv -> RNN 1 -> head -> frame

Every conv and deconv is followed by a leaky ReLU (slope 0.2). The stem (`stem = (channels,
kernel, stride, padding)`, HKO-7: 8 channels, 7x7, stride 5: 480x480 -> 96x96) reads each frame
with its normalised x, y coordinates and a constant-one channel (`coordinates=True`, as the
authors' code). `downsample[i] = (kernel, stride, padding)` maps level i to i+1 (HKO-7: 96 -> 32
-> 16) and `upsample[i]` level i+1 back to i with a deconvolution that keeps level i+1's channels;
the head is a deconvolution (`head = (channels, kernel, stride, padding)`, the stem inverted), a
3x3 conv and a 1x1 conv to the frame's channels. The forecaster's top RNN reads no input, and
each forecaster level starts from the encoder's final state of the same level: the forecaster runs
the levels in the reverse order of the encoder. Deconvolutions have no bias (as in the authors'
code), so the sizes and parameter counts equal theirs.

Frame sizes: the down/upsampling maps some frame sizes back to themselves (HKO-7's: multiples of
30, e.g. 480; 2-strided levels: even sizes). Other frames are zero-padded at the bottom and right
to the next size that fits and the forecast is cropped back, so any frame size works.

Not in the paper: `feedback=True` feeds the forecaster the previous frame (the last observed one,
then its own forecasts or, with teacher forcing, the true frames), and `condition_channels=Cc` the
condition frame of the lead time it produces; both go through a stem of their own (same layout as
the encoder's) and join the input of the forecaster's lowest level.

`encode` returns each level's state (`h0` finest ... `h{N-1}`, at the level's resolution) and the
last frame (`last`); `decode` runs the forecaster from a copy of them. Weights start as in the
authors' code: MSRA/Xavier-normal for leaky ReLU (slope 0.2, fan average), zero biases and zero
flow outputs (every TrajGRU link starts as the identity warp). Their weights map one to one:
`stem` = econv1, `encoder[i]` / `forecaster[i]` = ebrnn{i+1} / fbrnn{i+1} (cells: `conv_x` =
i2h, `conv_h` = h2h, `flow_x` / `flow_h` / `flow_out` = i2f_conv1 / h2f_conv1 / f_out),
`down[i]` / `up[i]` = edown{i+1} / fup{i+1}, `head_deconv` / `head_conv` / `head_out` =
fdeconv1 / conv_final / out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from convcast.layers.conv_gru import ACTIVATIONS, LEAKY_SLOPE, ConvGRUCell, kernel_pair
from convcast.layers.trajgru import TrajGRUCell
from convcast.models.base import (
    RecurrentForecaster,
    State,
    check_kernel,
    check_size,
    check_sizes,
    make_activation,
)
from convcast.models.registry import register_model, register_variant

Layout = Sequence[int]  # (kernel, stride, padding), or (channels, kernel, stride, padding)
INPUTS = ("condition", "teacher", "teacher_mask")


def _leaky(t: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(t, LEAKY_SLOPE)


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def _deconv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n - 1) * stride - 2 * padding + kernel


def _per_level(model: str, name: str, value: object, levels: int) -> list:
    """One value per level from a value for all (int, or a tuple for a pair) or a list."""
    values = list(value) if isinstance(value, list) else [value] * levels
    if len(values) != levels:
        raise ValueError(f"{model}: {name} has {len(values)} entries but the model has {levels} "
                         "levels (num_layers / hidden_channels): give one value for all levels "
                         "or a list of one per level")
    return values


def _layout(model: str, name: str, value: object, size: int) -> tuple[int, ...]:
    """A conv layout: `size` ints, (channels,) kernel, stride >= 1 and padding >= 0."""
    what = "(channels, kernel, stride, padding)" if size == 4 else "(kernel, stride, padding)"
    v = tuple(value) if isinstance(value, (list, tuple)) else ()
    if (len(v) != size or any(isinstance(e, bool) or not isinstance(e, int) for e in v)
            or min(v[:-1]) < 1 or v[-1] < 0):
        raise ValueError(f"{model}: {name} must be {what} as ints (padding >= 0, the others "
                         f">= 1), got {value!r}")
    return v


def _coordinates(frames: torch.Tensor) -> torch.Tensor:
    """`frames [N, C, H, W]` with x, y in [-1, 1] and a constant one appended: [N, C+3, H, W]."""
    N, _, H, W = frames.shape
    ys = torch.linspace(-1.0, 1.0, H, dtype=frames.dtype, device=frames.device)
    xs = torch.linspace(-1.0, 1.0, W, dtype=frames.dtype, device=frames.device)
    grid = torch.stack([*torch.meshgrid(xs, ys, indexing="xy"),
                        torch.ones(H, W, dtype=frames.dtype, device=frames.device)])  # [3, H, W]
    return torch.cat([frames, grid.expand(N, -1, -1, -1)], dim=1)


class GRUEncoderForecaster(RecurrentForecaster):
    """The HKO-7 encoder–forecaster around a GRU cell; subclasses say which (`make_cell`)."""

    model_label: ClassVar[str] = "gru_encoder_forecaster"

    def __init__(
        self, in_channels: int, hidden_channels: int | Sequence[int], *,
        num_layers: int | None, stem: Layout, downsample: Sequence[Layout] | None,
        upsample: Sequence[Layout] | None, head: Layout, coordinates: bool, feedback: bool,
        output_activation: str, condition_channels: int, activation: str,
        make_cell: Callable[[int, int, int], nn.Module],
    ) -> None:
        super().__init__()
        name = self.model_label
        check_size(name, "in_channels", in_channels)
        check_sizes(name, "hidden_channels", hidden_channels)
        if num_layers is None:
            num_layers = len(hidden_channels) if isinstance(hidden_channels, (list, tuple)) else 3
        N = check_size(name, "num_layers", num_layers)
        hid = _per_level(name, "hidden_channels", list(hidden_channels) if isinstance(
            hidden_channels, (list, tuple)) else hidden_channels, N)
        if activation not in ACTIVATIONS:
            raise ValueError(f"{name}: unknown activation {activation!r}; valid: "
                             f"{', '.join(ACTIVATIONS)}")
        make_activation(output_activation)  # an unknown name fails here, at build time
        cc = self.set_condition_channels(condition_channels)
        stem = _layout(name, "stem", stem, 4)
        head = _layout(name, "head", head, 4)
        down = [_layout(name, "downsample", d, 3) for d in (
            [(3, 2, 1)] * (N - 1) if downsample is None else downsample)]
        up = [_layout(name, "upsample", u, 3) for u in (
            [(4, 2, 1)] * (N - 1) if upsample is None else upsample)]
        for arg, value in (("downsample", down), ("upsample", up)):
            if len(value) != N - 1:
                raise ValueError(f"{name}: {arg} has {len(value)} entries but the model has {N} "
                                 f"levels: give one (kernel, stride, padding) per pair of levels "
                                 f"({N - 1})")
        self.in_channels, self.feedback, self.coordinates = in_channels, feedback, coordinates
        self.hidden_channels, self.layout = hid, (stem, down, up, head)
        self.stem = nn.Conv2d(in_channels + 3 * coordinates, stem[0], stem[1], stem[2], stem[3])
        self.encoder = nn.ModuleList(
            make_cell(i, stem[0] if i == 0 else hid[i], hid[i]) for i in range(N))
        self.down = nn.ModuleList(nn.Conv2d(hid[i], hid[i + 1], *down[i]) for i in range(N - 1))
        extra = (in_channels if feedback else 0) + cc  # what the forecaster's own stem reads
        self.extra_stem = (nn.Conv2d(extra, stem[0], stem[1], stem[2], stem[3]) if extra
                           else None)
        self.forecaster = nn.ModuleList(
            make_cell(i, (hid[i + 1] if i < N - 1 else 0) + (stem[0] if extra and i == 0 else 0),
                      hid[i]) for i in range(N))
        self.up = nn.ModuleList(  # up[i]: level i+1 -> level i, keeping level i+1's channels
            nn.ConvTranspose2d(hid[i + 1], hid[i + 1], *up[i], bias=False) for i in range(N - 1))
        self.head_deconv = nn.ConvTranspose2d(hid[0], head[0], *head[1:], bias=False)
        self.head_conv = nn.Conv2d(head[0], head[0], 3, padding=1)
        self.head_out = nn.Conv2d(head[0], in_channels, 1)
        self.act = make_activation(output_activation)
        self._fits: dict[int, int] = {}
        self.fit_size(1)  # a layout that fits no frame size fails here, at build time
        self._init_weights()

    def _init_weights(self) -> None:
        """As the authors' code: Xavier-normal for leaky ReLU (MXNet's MSRAPrelu, slope 0.2,
        fan average), zero biases, zero TrajGRU flow outputs."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
                std = math.sqrt(2.0 / (1 + LEAKY_SLOPE**2) / ((fan_in + fan_out) / 2))
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, TrajGRUCell):
                nn.init.zeros_(m.flow_out.weight)
                nn.init.zeros_(m.flow_out.bias)

    @property
    def autoregressive(self) -> bool:  # type: ignore[override]
        return self.feedback

    # ---- frame sizes ------------------------------------------------------------------------
    def _round_trip(self, n: int) -> bool:
        """Whether the down/upsampling maps frames of side `n` back to side `n`."""
        stem, down, up, head = self.layout
        sizes = [_conv_out(n, *stem[1:])]
        for d in down:
            sizes.append(_conv_out(sizes[-1], *d))
        if min(sizes) < 1:
            return False
        return (all(_deconv_out(sizes[i + 1], *up[i]) == sizes[i] for i in range(len(up)))
                and _deconv_out(sizes[0], *head[1:]) == n)

    def fit_size(self, n: int) -> int:
        """The smallest frame side >= `n` that the down/upsampling maps back to itself (frames
        are zero-padded to it)."""
        if n not in self._fits:
            stride = math.prod(s for _, s, _ in self.layout[1]) * self.layout[0][2]
            limit = n + 4 * stride + 2 * max(self.layout[0][1], self.layout[3][1]) * stride
            fit = next((m for m in range(n, limit) if self._round_trip(m)), None)
            if fit is None:
                raise ValueError(
                    f"{self.model_label}: no frame side from {n} to {limit} comes back to its "
                    f"size through stem {self.layout[0]}, downsample {self.layout[1]}, upsample "
                    f"{self.layout[2]} and head {self.layout[3]}; make each upsample (and the "
                    "head) invert its downsample (and the stem), e.g. (3, 2, 1) with (4, 2, 1)")
            self._fits[n] = fit
        return self._fits[n]

    def _pad(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames `[..., H, W]` zero-padded at the bottom/right to the sides that fit."""
        H, W = frames.shape[-2:]
        Hp, Wp = self.fit_size(H), self.fit_size(W)
        return frames if (Hp, Wp) == (H, W) else F.pad(frames, (0, Wp - W, 0, Hp - H))

    # ---- the contract -----------------------------------------------------------------------
    def state_keys(self) -> list[str]:
        return ["last"] + [f"h{i}" for i in range(len(self.encoder))]

    def encode(self, x: torch.Tensor, state: State | None = None) -> State:
        """Advance the encoder by frames `x [B, k, C, H, W]` from `state` (None: zeros)."""
        self.check_frames(x)
        if state is not None:
            self.check_state(state)
        x = self.cast(x)
        B, T = x.shape[:2]
        frames = self._pad(x).flatten(0, 1)  # [B*T, C, H', W']
        if self.coordinates:
            frames = _coordinates(frames)  # [B*T, C+3, H', W']
        seq = _leaky(self.stem(frames))  # [B*T, stem, H0, W0]
        out: State = {}
        for i, cell in enumerate(self.encoder):
            prepared = cell.prepare(seq)  # [B*T, ..., Hi, Wi]: all frames' input convs at once
            prepared = prepared.reshape(B, T, *prepared.shape[1:])
            if state is None:
                h = cell.init_state(B, *prepared.shape[-2:], like=prepared)
            else:
                h = state[f"h{i}"]  # [B, hid_i, Hi, Wi]
                if h.shape != (B, cell.hidden_channels, *prepared.shape[-2:]):
                    raise ValueError(f"{type(self).__name__}: the state's level {i} is "
                                     f"{tuple(h.shape)} but these frames make "
                                     f"{(B, cell.hidden_channels, *prepared.shape[-2:])}; encode "
                                     "frames of the batch and size the state was encoded from")
            hs = []
            for t in range(T):
                h = cell.step(prepared[:, t], h)  # [B, hid_i, Hi, Wi]
                hs.append(h)
            out[f"h{i}"] = h
            if i < len(self.down):
                seq = _leaky(self.down[i](torch.stack(hs, dim=1).flatten(0, 1)))  # [B*T, ...]
        out["last"] = x[:, -1]  # [B, C, H, W], the first frame fed back when feedback=True
        return out

    def decode(
        self, state: State, horizon: int, condition: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None, teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unroll the forecaster for `horizon` steps from (a copy of) the encoder's `state`."""
        cond, teacher, mask = self.decode_inputs(state, horizon, condition, teacher, teacher_mask)
        frame = state["last"]  # [B, C, H, W]
        H, W = frame.shape[-2:]
        hs = [state[f"h{i}"] for i in range(len(self.forecaster))]  # a copy: never changed
        preds = []
        for k in range(horizon):
            parts = ([frame] if self.feedback else []) + ([cond[:, k]] if cond is not None
                                                          else [])
            extra = (_leaky(self.extra_stem(self._pad(torch.cat(parts, dim=1)))) if parts
                     else None)  # [B, stem, H0, W0]
            inp = None
            for i in reversed(range(len(self.forecaster))):  # the top level first
                if i == 0 and extra is not None:
                    inp = extra if inp is None else torch.cat([inp, extra], dim=1)
                cell = self.forecaster[i]
                hs[i] = cell.step(cell.prepare(inp), hs[i])  # [B, hid_i, Hi, Wi]
                if i > 0:
                    inp = _leaky(self.up[i - 1](hs[i]))  # [B, hid_i, H(i-1), W(i-1)]
            y = _leaky(self.head_deconv(hs[0]))  # [B, head, H', W']
            y = self.head_out(_leaky(self.head_conv(y)))[..., :H, :W]  # [B, C, H, W]
            y = self.act(y)
            preds.append(y)
            if self.feedback and k < horizon - 1:
                frame = self.next_input(y, k, teacher, mask)
        return torch.stack(preds, dim=1)  # [B, horizon, C, H, W]


def _check_kernels(model: str, name: str, value: object, levels: int) -> list[tuple[int, int]]:
    """Per-level odd kernels from an int, a (kh, kw) tuple for all levels, or a list per level."""
    kernels = _per_level(model, name, value, levels)
    try:
        return [kernel_pair(k, name) for k in kernels]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{model}: {err}") from None


def _levels(hidden_channels: object, num_layers: int | None) -> int:
    if num_layers is not None:
        return num_layers
    return len(hidden_channels) if isinstance(hidden_channels, (list, tuple)) else 3


@register_model("conv_gru", inputs=INPUTS,
                tiny={"hidden_channels": [4, 8], "kernel_size": 3, "stem": (4, 3, 1, 1),
                      "head": (4, 3, 1, 1)})
class ConvGRUForecaster(GRUEncoderForecaster):
    """The HKO-7 encoder–forecaster with ConvGRU cells (`convcast.layers.conv_gru`).

    `kernel_size`: the state-to-state kernels (one for all levels or a list, HKO-7: [5, 5, 3]);
    `input_kernel_size`: the input-to-state ones (3). See the module docstring for the rest.
    """

    model_label = "conv_gru"

    def __init__(
        self, in_channels: int = 1, hidden_channels: int | Sequence[int] = (32, 64, 64),
        kernel_size: int | Sequence = 5, *, num_layers: int | None = None,
        input_kernel_size: int | Sequence = 3, stem: Layout = (16, 3, 1, 1),
        downsample: Sequence[Layout] | None = None, upsample: Sequence[Layout] | None = None,
        head: Layout = (16, 3, 1, 1), coordinates: bool = True, activation: str = "leaky",
        feedback: bool = False, output_activation: str = "sigmoid", condition_channels: int = 0,
    ) -> None:
        name = self.model_label
        check_sizes(name, "hidden_channels", hidden_channels)  # sizes first: clearer errors
        if num_layers is not None:
            check_size(name, "num_layers", num_layers)
        N = _levels(hidden_channels, num_layers)
        check_kernel(name, kernel_size)
        kh = _check_kernels(name, "kernel_size", kernel_size, N)
        ki = _check_kernels(name, "input_kernel_size", input_kernel_size, N)

        def make_cell(level: int, cin: int, hid: int) -> nn.Module:
            return ConvGRUCell(cin, hid, kh[level], input_kernel_size=ki[level],
                               activation=activation)

        super().__init__(in_channels, hidden_channels, num_layers=num_layers, stem=stem,
                         downsample=downsample, upsample=upsample, head=head,
                         coordinates=coordinates, feedback=feedback,
                         output_activation=output_activation,
                         condition_channels=condition_channels, activation=activation,
                         make_cell=make_cell)


@register_model("trajgru", inputs=INPUTS,
                tiny={"hidden_channels": [4, 8], "links": 2, "flow_channels": 4,
                      "flow_kernel_size": 3, "stem": (4, 3, 1, 1), "head": (4, 3, 1, 1)})
class TrajGRUForecaster(GRUEncoderForecaster):
    """The HKO-7 encoder–forecaster with TrajGRU cells (`convcast.layers.trajgru`).

    `links`: L, the flow fields per level (one for all or a list, HKO-7: [13, 13, 9]);
    `input_kernel_size`: the input-to-state kernels (3); `flow_kernel_size` / `flow_channels`:
    the flow subnetwork's kernels (5) and width (32). See the module docstring for the rest.
    """

    model_label = "trajgru"

    def __init__(
        self, in_channels: int = 1, hidden_channels: int | Sequence[int] = (32, 64, 64),
        links: int | Sequence[int] = 5, *, num_layers: int | None = None,
        input_kernel_size: int | Sequence = 3, flow_kernel_size: int | Sequence = 5,
        flow_channels: int = 32, stem: Layout = (16, 3, 1, 1),
        downsample: Sequence[Layout] | None = None, upsample: Sequence[Layout] | None = None,
        head: Layout = (16, 3, 1, 1), coordinates: bool = True, activation: str = "leaky",
        feedback: bool = False, output_activation: str = "sigmoid", condition_channels: int = 0,
    ) -> None:
        name = self.model_label
        check_sizes(name, "hidden_channels", hidden_channels)
        if num_layers is not None:
            check_size(name, "num_layers", num_layers)
        N = _levels(hidden_channels, num_layers)
        links_ = _per_level(name, "links", list(links) if isinstance(links, (list, tuple))
                            else links, N)
        check_sizes(name, "links", links_)
        check_size(name, "flow_channels", flow_channels)
        ki = _check_kernels(name, "input_kernel_size", input_kernel_size, N)
        kf = _check_kernels(name, "flow_kernel_size", flow_kernel_size, N)

        def make_cell(level: int, cin: int, hid: int) -> nn.Module:
            return TrajGRUCell(cin, hid, links_[level], input_kernel_size=ki[level],
                               flow_kernel_size=kf[level], flow_channels=flow_channels,
                               activation=activation)

        super().__init__(in_channels, hidden_channels, num_layers=num_layers, stem=stem,
                         downsample=downsample, upsample=upsample, head=head,
                         coordinates=coordinates, feedback=feedback,
                         output_activation=output_activation,
                         condition_channels=condition_channels, activation=activation,
                         make_cell=make_cell)


# ---- the papers' sizes --------------------------------------------------------------------------
# HKO-7: the authors' configurations trajgru_55_55_33_1_64_1_192_1_192_13_13_9_b4.yml and
# convgru_55_55_33_1_64_1_192_1_192_b4.yml (480x480 radar maps, 5 frames in, 20 out, leaky ReLU,
# linear output; trained with B-MSE + B-MAE).
HKO7 = dict(hidden_channels=[64, 192, 192], stem=(8, 7, 5, 1), downsample=[(5, 3, 1), (3, 2, 1)],
            upsample=[(5, 3, 1), (4, 2, 1)], head=(8, 7, 5, 1), output_activation="identity")
# Moving MNIST++: the authors' configurations *_1_64_1_96_1_96_{L13,K5}.yml (64x64, 10 in, 10 out)
MMNIST = dict(hidden_channels=[64, 96, 96], stem=(16, 3, 1, 1), downsample=[(3, 2, 1)] * 2,
              upsample=[(4, 2, 1)] * 2, head=(16, 3, 1, 1), output_activation="identity")

register_variant(
    "trajgru_hko7", "trajgru",
    "Shi et al. 2017, the HKO-7 benchmark's TrajGRU: 480x480 -> 96/32/16, 64-192-192 TrajGRU, "
    "L 13-13-9 (12.15M, as the authors' configuration)",
    links=[13, 13, 9], **HKO7)
register_variant(
    "conv_gru_hko7", "conv_gru",
    "Shi et al. 2017, the HKO-7 benchmark's ConvGRU: 480x480 -> 96/32/16, 64-192-192 ConvGRU, "
    "5x5-5x5-3x3 state kernels (13.65M, as the authors' configuration)",
    kernel_size=[5, 5, 3], **HKO7)
register_variant(
    "trajgru_mmnist", "trajgru",
    "Shi et al. 2017, table 1, Moving MNIST++: TrajGRU-L13, 64x64 -> 64/32/16, 64-96-96 (4.00M)",
    links=13, **MMNIST)
register_variant(
    "conv_gru_mmnist", "conv_gru",
    "Shi et al. 2017, table 1, Moving MNIST++: ConvGRU-K5-D1, 64x64 -> 64/32/16, 64-96-96 (4.77M)",
    kernel_size=5, **MMNIST)

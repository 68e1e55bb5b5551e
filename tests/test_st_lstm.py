"""The spatiotemporal LSTM cell of PredRNN: equations, gate layout, biases, norms, increments."""

import math

import pytest
import torch

from convcast.layers.st_lstm import X_GATES, SpatioTemporalLSTMCell

pytestmark = pytest.mark.usefixtures("one_thread")


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_one_channel_step_matches_hand_computation():
    """in=1, hidden=1, 1×1 kernels: every weight a scalar set by hand, the step done on paper."""
    cell = SpatioTemporalLSTMCell(1, 1, kernel_size=1)
    # conv_x blocks (i, f, g, i', f', g', o); conv_h (i, f, g, o); conv_m (i', f', g')
    wx = [0.5, -0.3, 0.8, 0.2, 0.6, -0.7, 0.4]
    bx = [0.1, 1.0, -0.2, 0.05, 1.0, 0.3, -0.1]
    wh = [0.3, 0.2, -0.5, 0.9]
    wm = [-0.4, 0.7, 0.25]
    wo = [0.6, -0.8]  # W_co, W_mo
    wl = [1.1, -0.9]  # the 1×1 fusion of [C, M]
    with torch.no_grad():
        cell.conv_x.weight.copy_(torch.tensor(wx).view(7, 1, 1, 1))
        cell.conv_x.bias.copy_(torch.tensor(bx))
        cell.conv_h.weight.copy_(torch.tensor(wh).view(4, 1, 1, 1))
        cell.conv_m.weight.copy_(torch.tensor(wm).view(3, 1, 1, 1))
        cell.conv_o.weight.copy_(torch.tensor(wo).view(1, 2, 1, 1))
        cell.conv_last.weight.copy_(torch.tensor(wl).view(1, 2, 1, 1))
    x, h0, c0, m0 = 0.7, -0.2, 0.4, -0.6
    i = _sig(wx[0] * x + bx[0] + wh[0] * h0)
    f = _sig(wx[1] * x + bx[1] + wh[1] * h0)
    g = math.tanh(wx[2] * x + bx[2] + wh[2] * h0)
    c1 = f * c0 + i * g
    i2 = _sig(wx[3] * x + bx[3] + wm[0] * m0)
    f2 = _sig(wx[4] * x + bx[4] + wm[1] * m0)
    g2 = math.tanh(wx[5] * x + bx[5] + wm[2] * m0)
    m1 = f2 * m0 + i2 * g2
    o = _sig(wx[6] * x + bx[6] + wh[3] * h0 + wo[0] * c1 + wo[1] * m1)
    h1 = o * math.tanh(wl[0] * c1 + wl[1] * m1)

    full = lambda v: torch.full((2, 1, 3, 4), v)  # noqa: E731
    h, c, m, dc, dm = cell(full(x), full(h0), full(c0), full(m0), return_increments=True)
    for got, want in [(h, h1), (c, c1), (m, m1), (dc, i * g), (dm, i2 * g2)]:
        assert torch.allclose(got, full(want), atol=1e-6)


def test_gate_layout_matches_equations_with_several_channels():
    """in=2, hidden=3, 1×1 kernels: per-gate matrices packed in the documented block order."""
    torch.manual_seed(0)
    n_in, hid = 2, 3
    W = {g: torch.randn(hid, n_in) for g in X_GATES}  # input weights per gate
    b = {g: torch.randn(hid) for g in X_GATES}
    U = {g: torch.randn(hid, hid) for g in ("i", "f", "g", "o")}  # from H
    V = {g: torch.randn(hid, hid) for g in ("i'", "f'", "g'")}  # from M
    Wco, Wmo, W11c, W11m = (torch.randn(hid, hid) for _ in range(4))
    cell = SpatioTemporalLSTMCell(n_in, hid, kernel_size=1)
    with torch.no_grad():
        cell.conv_x.weight.copy_(torch.cat([W[g] for g in X_GATES])[..., None, None])
        cell.conv_x.bias.copy_(torch.cat([b[g] for g in X_GATES]))
        cell.conv_h.weight.copy_(torch.cat([U[g] for g in ("i", "f", "g", "o")])[..., None, None])
        cell.conv_m.weight.copy_(torch.cat([V[g] for g in ("i'", "f'", "g'")])[..., None, None])
        cell.conv_o.weight.copy_(torch.cat([Wco, Wmo], 1)[..., None, None])
        cell.conv_last.weight.copy_(torch.cat([W11c, W11m], 1)[..., None, None])
    x, h0, c0, m0 = torch.randn(4, n_in), *(torch.randn(4, hid) for _ in range(3))
    lin = lambda A, v: v @ A.T  # noqa: E731  a 1×1 convolution at one pixel
    i = torch.sigmoid(lin(W["i"], x) + b["i"] + lin(U["i"], h0))
    f = torch.sigmoid(lin(W["f"], x) + b["f"] + lin(U["f"], h0))
    g = torch.tanh(lin(W["g"], x) + b["g"] + lin(U["g"], h0))
    c1 = f * c0 + i * g
    i2 = torch.sigmoid(lin(W["i'"], x) + b["i'"] + lin(V["i'"], m0))
    f2 = torch.sigmoid(lin(W["f'"], x) + b["f'"] + lin(V["f'"], m0))
    g2 = torch.tanh(lin(W["g'"], x) + b["g'"] + lin(V["g'"], m0))
    m1 = f2 * m0 + i2 * g2
    o = torch.sigmoid(lin(W["o"], x) + b["o"] + lin(U["o"], h0) + lin(Wco, c1) + lin(Wmo, m1))
    h1 = o * torch.tanh(lin(W11c, c1) + lin(W11m, m1))
    as_map = lambda v: v[..., None, None]  # noqa: E731  [4, ch] -> [4, ch, 1, 1]
    h, c, m = cell(as_map(x), as_map(h0), as_map(c0), as_map(m0))
    for got, want in [(h, h1), (c, c1), (m, m1)]:
        assert torch.allclose(got[..., 0, 0], want, atol=1e-5)


def test_forget_biases_start_at_one_and_none_state_is_zero():
    cell = SpatioTemporalLSTMCell(3, 4, 3)
    want = torch.zeros(7, 4)
    want[X_GATES.index("f")] = want[X_GATES.index("f'")] = 1
    assert torch.equal(cell.conv_x.bias.view(7, 4), want)
    assert cell.conv_h.bias is None and cell.conv_m.bias is None  # the offset is counted once
    x, z = torch.randn(2, 3, 6, 6), torch.zeros(2, 4, 6, 6)
    for a, b in zip(cell(x), cell(x, z, z, z), strict=True):
        assert torch.equal(a, b)


def test_layer_norm_any_frame_size_and_bias_on_the_norm():
    cell = SpatioTemporalLSTMCell(2, 4, 3, layer_norm=True)
    assert cell.conv_x.bias is None
    assert torch.equal(cell.norm_x.bias.view(7, 4)[X_GATES.index("f'")], torch.ones(4))
    for size in [(8, 8), (13, 21)]:
        out = cell(torch.randn(2, 2, *size))
        assert all(t.shape == (2, 4, *size) for t in out)
        assert all(torch.isfinite(t).all() for t in out)


def test_increments_are_the_new_memories_from_zero():
    cell = SpatioTemporalLSTMCell(2, 5, 3)
    h, c, m, dc, dm = cell(torch.randn(3, 2, 7, 7), return_increments=True)
    assert torch.allclose(c, dc) and torch.allclose(m, dm)  # C = f∘0 + i∘g, likewise M
    assert not torch.allclose(dc, dm)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="odd"):
        SpatioTemporalLSTMCell(1, 4, kernel_size=4)
    cell = SpatioTemporalLSTMCell(2, 4, 3)
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        cell(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="differ in size"):
        cell(torch.randn(1, 2, 8, 8), torch.zeros(1, 4, 6, 6))


def test_bf16_autocast_keeps_both_memories_in_float32():
    cell = SpatioTemporalLSTMCell(2, 4, 3)
    x = torch.randn(2, 2, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, c, m = cell(x.bfloat16())  # no state: C and M start float32 even for a bf16 input
        h2, c2, m2 = cell(x, h, c, m)
    assert c.dtype == m.dtype == c2.dtype == m2.dtype == torch.float32
    assert h2.dtype == torch.bfloat16


def test_checkpointed_step_gives_the_same_gradients():
    torch.manual_seed(0)
    cell = SpatioTemporalLSTMCell(2, 4, 3)
    x = torch.randn(2, 2, 6, 6, requires_grad=True)
    grads = []
    for on in (False, True):
        cell.checkpointing = on
        cell.zero_grad(set_to_none=True)
        x.grad = None
        h, c, m = cell(x, *cell(x)[:3])  # two steps
        (h.sum() + c.pow(2).sum() + m.sum()).backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in cell.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6)

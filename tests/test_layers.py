"""ConvLSTM cell equations, stacking, layouts, state continuation, peepholes, patches."""

import math

import pytest
import torch

from convcast.layers import ConvLSTM, ConvLSTMCell, depth_to_space, keep_weights, space_to_depth


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _set_1x1_cell(cell: ConvLSTMCell, wx, wh, b) -> None:
    """Weights of a 1-in, 1-hidden, 1×1 cell; gate order (i, f, o, g)."""
    with torch.no_grad():
        cell.conv_x.weight.copy_(torch.tensor(wx).view(4, 1, 1, 1))
        cell.conv_h.weight.copy_(torch.tensor(wh).view(4, 1, 1, 1))
        cell.conv_x.bias.copy_(torch.tensor(b))


def test_cell_step_matches_hand_computation():
    cell = ConvLSTMCell(1, 1, kernel_size=1)
    wx, wh, b = [0.5, -0.3, 0.8, 1.2], [0.1, 0.4, -0.6, 0.7], [0.05, 1.0, -0.1, 0.2]
    _set_1x1_cell(cell, wx, wh, b)
    x, h0, c0 = 0.7, -0.2, 0.4
    i = _sig(wx[0] * x + wh[0] * h0 + b[0])
    f = _sig(wx[1] * x + wh[1] * h0 + b[1])
    o = _sig(wx[2] * x + wh[2] * h0 + b[2])
    g = math.tanh(wx[3] * x + wh[3] * h0 + b[3])
    c1 = f * c0 + i * g
    h1 = o * math.tanh(c1)
    full = lambda v: torch.full((1, 1, 2, 3), v)  # noqa: E731
    h, c = cell(full(x), (full(h0), full(c0)))
    assert torch.allclose(c, full(c1), atol=1e-6)
    assert torch.allclose(h, full(h1), atol=1e-6)


def test_peephole_step_matches_hand_computation():
    cell = ConvLSTMCell(1, 1, kernel_size=1, peephole=True)
    wx, wh, b = [0.3, 0.2, -0.5, 0.9], [-0.4, 0.6, 0.3, 0.1], [0.0, 1.0, 0.1, -0.2]
    _set_1x1_cell(cell, wx, wh, b)
    with torch.no_grad():
        cell.w_ci.fill_(0.25)
        cell.w_cf.fill_(-0.5)
        cell.w_co.fill_(0.75)
    x, h0, c0 = -0.6, 0.3, 0.9
    i = _sig(wx[0] * x + wh[0] * h0 + 0.25 * c0 + b[0])
    f = _sig(wx[1] * x + wh[1] * h0 - 0.5 * c0 + b[1])
    g = math.tanh(wx[3] * x + wh[3] * h0 + b[3])
    c1 = f * c0 + i * g
    o = _sig(wx[2] * x + wh[2] * h0 + 0.75 * c1 + b[2])  # output peephole reads the new cell
    h1 = o * math.tanh(c1)
    full = lambda v: torch.full((2, 1, 3, 3), v)  # noqa: E731
    h, c = cell(full(x), (full(h0), full(c0)))
    assert torch.allclose(c, full(c1), atol=1e-6)
    assert torch.allclose(h, full(h1), atol=1e-6)


def test_peephole_weights_are_per_channel_and_any_size_works():
    cell = ConvLSTMCell(2, 5, 3, peephole=True)
    assert cell.w_ci.shape == (5, 1, 1)
    for size in [(8, 8), (13, 21)]:
        h, c = cell(torch.randn(1, 2, *size))
        assert h.shape == c.shape == (1, 5, *size)


def test_forget_bias_starts_at_one_and_state_none_is_zero():
    cell = ConvLSTMCell(3, 4, 3)
    assert torch.equal(cell.conv_x.bias[4:8], torch.ones(4))
    assert torch.equal(cell.conv_x.bias[:4], torch.zeros(4))
    x = torch.randn(2, 3, 6, 6)
    zeros = (torch.zeros(2, 4, 6, 6), torch.zeros(2, 4, 6, 6))
    for a, b in zip(cell(x), cell(x, zeros), strict=True):
        assert torch.equal(a, b)


def test_layer_norm_cell_any_frame_size_and_forget_bias():
    cell = ConvLSTMCell(1, 4, 3, layer_norm=True)
    assert torch.equal(cell.norm.bias[4:8], torch.ones(4))
    for size in [(8, 8), (10, 6)]:
        h, _ = cell(torch.randn(2, 1, *size))
        assert h.shape == (2, 4, *size) and torch.isfinite(h).all()


def test_input_less_cell_needs_state():
    cell = ConvLSTMCell(0, 3, 3)
    with pytest.raises(ValueError, match="needs a state"):
        cell(None)
    h, c = cell(None, (torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)))
    assert h.shape == (1, 3, 4, 4)


@pytest.mark.parametrize("k", [2, (3, 4)])
def test_even_kernel_refused(k):
    with pytest.raises(ValueError, match="even"):
        ConvLSTMCell(1, 2, k)


def test_per_layer_lengths_must_agree():
    with pytest.raises(ValueError, match="num_layers=3"):
        ConvLSTM(1, [8, 8], 3, num_layers=3)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvLSTM(1, 8, [3, 5], num_layers=3)


def test_stack_shapes_per_layer_settings_and_all_layers():
    m = ConvLSTM(2, [6, 4, 3], [3, 5, (1, 3)], num_layers=3, return_all_layers=True)
    outs, states = m(torch.randn(2, 5, 2, 9, 7))
    assert [o.shape for o in outs] == [(2, 5, c, 9, 7) for c in (6, 4, 3)]
    assert [s[0].shape[1] for s in states] == [6, 4, 3]
    assert torch.equal(outs[-1][:, -1], states[-1][0])
    m.return_all_layers = False
    outs, states = m(torch.randn(2, 5, 2, 9, 7))
    assert len(outs) == 1 and len(states) == 3


def test_time_first_layout_matches_batch_first():
    torch.manual_seed(0)
    bf = ConvLSTM(1, [4, 4], 3, 2)
    tf = ConvLSTM(1, [4, 4], 3, 2, batch_first=False)
    tf.load_state_dict(bf.state_dict())
    x = torch.randn(3, 6, 1, 8, 8)
    (ob,), sb = bf(x)
    (ot,), st = tf(x.transpose(0, 1))
    assert ot.shape == (6, 3, 4, 8, 8)
    assert torch.allclose(ot.transpose(0, 1), ob, atol=1e-6)
    assert torch.allclose(st[1][1], sb[1][1], atol=1e-6)


def test_state_continuation_equals_one_long_run():
    torch.manual_seed(0)
    m = ConvLSTM(1, [5, 3], 3, 2, peephole=True)
    x = torch.randn(2, 20, 1, 10, 10)
    (full,), s_full = m(x)
    (a,), s_a = m(x[:, :10])
    (b,), s_b = m(x[:, 10:], state=s_a)
    assert torch.allclose(torch.cat([a, b], 1), full, atol=1e-5)
    for (h1, c1), (h2, c2) in zip(s_full, s_b, strict=True):
        assert torch.allclose(h1, h2, atol=1e-5) and torch.allclose(c1, c2, atol=1e-5)


def test_stack_errors_are_clear():
    m = ConvLSTM(1, 4, 3, 2)
    with pytest.raises(ValueError, match="5-D"):
        m(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(2, 3, 2, 8, 8))
    with pytest.raises(ValueError, match="layers"):
        m(torch.randn(2, 3, 1, 8, 8), state=[(torch.zeros(2, 4, 8, 8),) * 2])
    _, states = m(torch.randn(2, 3, 1, 8, 8))
    with pytest.raises(ValueError, match="differ in batch or frame size"):
        m(torch.randn(2, 3, 1, 6, 6), state=states)  # continuing at another frame size
    with pytest.raises(ValueError, match="reads no input"):
        ConvLSTMCell(0, 4, 3)(torch.randn(2, 1, 8, 8), states[0])


def test_one_conv_over_x_and_h_equals_separate_input_and_recurrent_convs():
    """The fused step is the paper's W_x * X + W_h * H, with the weights stored apart."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 4, 3)
    x, h, c = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    i, f, o, g = (cell.conv_x(x) + cell.conv_h(h)).chunk(4, 1)
    c_want = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_got, c_got = cell(x, (h, c))
    assert torch.allclose(c_got, c_want, atol=1e-6)
    assert torch.allclose(h_got, torch.sigmoid(o) * torch.tanh(c_want), atol=1e-6)



def test_the_kept_inference_weight_follows_every_change_of_the_weights():
    """Inside `keep_weights()` without autograd the joined W_x|W_h is built once, yet never goes
    stale: an optimizer step, a loaded state dict or a cast each give the new weights; outside
    the scope it is built on every call, so even a write through `.data` (as weight-averaging
    callbacks swap weights) is seen; with autograd gradients still reach both convolutions."""
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 4, 3)
    x, state = torch.randn(1, 2, 6, 6), (torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6))

    def fresh() -> torch.Tensor:  # what the step must use
        return torch.cat([cell.conv_x.weight, cell.conv_h.weight], dim=1)

    with torch.no_grad(), keep_weights():
        first = cell.conv_weight()
        assert cell.conv_weight() is first and torch.equal(first, fresh())
        cell.conv_h.weight.mul_(0.5)  # an in-place update, as an optimizer makes
        assert torch.equal(cell.conv_weight(), fresh())
    cell.load_state_dict({k: torch.randn_like(v) for k, v in cell.state_dict().items()})
    with torch.inference_mode(), keep_weights():
        assert torch.equal(cell.conv_weight(), fresh())
        h_kept, _ = cell(x, state)
    cell.double()
    with torch.no_grad(), keep_weights():
        assert cell.conv_weight().dtype == torch.float64
    cell.float()
    with torch.no_grad():
        kept = cell.conv_weight()
        cell.conv_x.weight.data.copy_(torch.randn_like(cell.conv_x.weight))  # no version bump
        assert cell.conv_weight() is not kept and torch.equal(cell.conv_weight(), fresh())
        cell.conv_x.weight.data.copy_(kept[:, :2])  # back to the weights h_kept was made with
    h_grad, _ = cell(x, state)  # autograd on: built anew, gradients flow
    assert torch.equal(h_grad.detach(), h_kept)
    h_grad.sum().backward()
    assert cell.conv_x.weight.grad is not None and cell.conv_h.weight.grad is not None

def test_gradients_reach_every_parameter():
    m = ConvLSTM(1, [4, 4], 3, 2, peephole=True)
    (out,), _ = m(torch.randn(2, 4, 1, 6, 6))
    out.pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_patch_reshape_round_trip_and_errors():
    x = torch.randn(2, 3, 1, 64, 64)
    y = space_to_depth(x, 4)
    assert y.shape == (2, 3, 16, 16, 16)
    assert torch.equal(depth_to_space(y, 4), x)
    # each 4×4 block of a frame becomes the channel vector of one cell
    assert torch.equal(y[0, 0, :, 0, 0], x[0, 0, 0, :4, :4].reshape(-1))
    with pytest.raises(ValueError, match="not divisible"):
        space_to_depth(torch.randn(1, 1, 1, 30, 32), 4)


def test_bf16_autocast_keeps_the_cell_state_in_float32():
    """Gates in bf16, the cell state C updated in float32 over every step."""
    torch.manual_seed(0)
    m = ConvLSTM(2, [4, 4], 3, 2, peephole=True)
    x = torch.randn(2, 6, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out,), states = m(x)
        h, c = ConvLSTMCell(4, 4, 3)(out[:, -1])  # a bf16 input, no state: C starts float32
    assert all(c_l.dtype == torch.float32 for _, c_l in states) and c.dtype == torch.float32
    assert out.dtype == torch.bfloat16 and h.dtype == torch.bfloat16
    (ref,), ref_states = m(x)  # and the bf16 forecast stays close to float32's
    assert torch.allclose(states[-1][1], ref_states[-1][1], atol=0.05)


@pytest.mark.slow
def test_compiled_gate_arithmetic_matches_eager():
    """`set_compiled_gates`: the same outputs and gradients as the eager arithmetic."""
    import warnings

    from convcast.layers import set_compiled_gates

    torch.manual_seed(0)
    eager = ConvLSTM(1, [3, 3], 3, 2, peephole=True)
    fused = ConvLSTM(1, [3, 3], 3, 2, peephole=True)
    fused.load_state_dict(eager.state_dict())
    assert set_compiled_gates(fused) == 2
    x = torch.randn(2, 3, 1, 6, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (got,), _ = fused(x)
    if any("compiled ConvLSTM gates unavailable" in str(w.message) for w in caught):
        pytest.skip(f"torch.compile cannot build the fused gates here: {caught[-1].message}")
    (want,), _ = eager(x)
    assert torch.allclose(got, want, atol=1e-5)
    got.pow(2).sum().backward()
    want.pow(2).sum().backward()
    for (name, p), q in zip(fused.named_parameters(), eager.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name

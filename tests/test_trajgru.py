"""ConvGRU and TrajGRU (Shi et al., NIPS 2017): the cells against their equations, the warp, the
HKO-7 encoder–forecasters' sizes, streaming, teacher forcing and ONNX export."""

import json

import pytest
import torch
import torch.nn.functional as F

from convcast.cli.export import export
from convcast.layers.conv_gru import ConvGRUCell
from convcast.layers.trajgru import TrajGRUCell, warp
from convcast.models import create_model, model_info

pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _set(conv: torch.nn.Conv2d, weight: list, bias: list) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weight, dtype=torch.float32).view_as(conv.weight))
        conv.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def _shift(h: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """h moved by dx pixels right and dy down, zeros coming in."""
    out = torch.zeros_like(h)
    H, W = h.shape[-2:]
    out[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        h[..., max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    return out


# ---- the cells --------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["leaky", "tanh"])
def test_conv_gru_cell_follows_the_equations(activation):
    """One channel, hand-set weights: W_x 1x1, W_h 3x3 whose h-block reads the left neighbour."""
    cell = ConvGRUCell(1, 1, 3, input_kernel_size=1, activation=activation)
    a, b = (0.7, -0.4, 1.3), (0.1, 0.2, -0.3)  # W_x (r, z, h) and their biases
    c, d = (0.5, 0.9, 0.0), (-0.2, 0.05, 0.4)  # centre taps of W_h and b_h
    wh = torch.zeros(3, 1, 3, 3)
    wh[0, 0, 1, 1], wh[1, 0, 1, 1] = c[0], c[1]
    wh[2, 0, 1, 0] = 1.5  # W_hh * H = 1.5 * H one pixel to the left
    _set(cell.conv_x, list(a), list(b))
    with torch.no_grad():
        cell.conv_h.weight.copy_(wh)
        cell.conv_h.bias.copy_(torch.tensor(d))
    x, h = _rand(2, 1, 3, 4, seed=1) - 0.5, _rand(2, 1, 3, 4, seed=2) - 0.5
    f = (lambda t: F.leaky_relu(t, 0.2)) if activation == "leaky" else torch.tanh
    r = torch.sigmoid(a[0] * x + b[0] + c[0] * h + d[0])
    z = torch.sigmoid(a[1] * x + b[1] + c[1] * h + d[1])
    new = f(a[2] * x + b[2] + r * (1.5 * _shift(h, 1, 0) + d[2]))  # b_hh inside the reset
    torch.testing.assert_close(cell(x, h), (1 - z) * new + z * h, atol=1e-6, rtol=0)
    # input-less (the forecaster's top level): the same without the W_x terms
    top = ConvGRUCell(0, 1, 3)
    with torch.no_grad():
        top.conv_h.weight.copy_(wh)
        top.conv_h.bias.copy_(torch.tensor(d))
    r, z = torch.sigmoid(c[0] * h + d[0]), torch.sigmoid(c[1] * h + d[1])
    want = (1 - z) * F.leaky_relu(r * (1.5 * _shift(h, 1, 0) + d[2]), 0.2) + z * h
    torch.testing.assert_close(top(None, h), want, atol=1e-6, rtol=0)


def test_warp_moves_the_state_along_integer_and_half_pixel_flows():
    h = _rand(2, 3, 5, 6, seed=3)
    flows = torch.zeros(2, 6, 5, 6)
    flows[:, 0], flows[:, 1] = 2.0, -1.0  # link 0: 2 px right, 1 px up
    flows[:, 3] = 1.0  # link 1: 1 px down
    flows[:, 4] = 0.5  # link 2: half a pixel right
    out = warp(h, flows)  # [B, 3 links * 3 channels, H, W]
    assert out.shape == (2, 9, 5, 6)
    torch.testing.assert_close(out[:, 0:3], _shift(h, 2, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 3:6], _shift(h, 0, 1), atol=1e-5, rtol=0)
    half = (h + _shift(h, 1, 0)) / 2  # bilinear: the mean of a pixel and its left neighbour
    torch.testing.assert_close(out[:, 6:9, :, 1:], half[..., 1:], atol=1e-5, rtol=0)


def test_trajgru_with_zero_flows_is_a_convgru_with_one_plain_link():
    """Zero flows (the initial flow output): every link reads H where it is, so the L links'
    1x1 kernels add up to one ConvGRU 1x1 state kernel."""
    torch.manual_seed(0)
    traj = TrajGRUCell(2, 3, 4)
    assert not traj.flow_out.weight.any() and not traj.flow_out.bias.any()
    plain = ConvGRUCell(2, 3, 1)
    with torch.no_grad():
        plain.conv_x.load_state_dict(traj.conv_x.state_dict())
        plain.conv_h.weight.copy_(traj.conv_h.weight.view(9, 4, 3, 1, 1).sum(1))
        plain.conv_h.bias.copy_(traj.conv_h.bias)
    h = h_plain = None
    for t in range(3):
        x = _rand(2, 2, 7, 5, seed=t)
        h, h_plain = traj(x, h), plain(x, h_plain)
        torch.testing.assert_close(h, h_plain, atol=1e-6, rtol=0)


def test_trajgru_integer_flow_shifts_the_state_by_that_many_pixels():
    """Hand-set cell: flow (2, -1) everywhere, R = 1, Z = 0 and W_hh = 1, so H_t = H'_t =
    leaky(warp(H_{t-1})) = H_{t-1} moved 2 px right and 1 px up (H >= 0)."""
    cell = TrajGRUCell(0, 1, 1)
    with torch.no_grad():
        cell.flow_h.weight.zero_()
        cell.flow_out.bias.copy_(torch.tensor([2.0, -1.0]))
    _set(cell.conv_h, [0.0, 0.0, 1.0], [40.0, -40.0, 0.0])  # σ(40) = 1, σ(-40) = 0
    h = _rand(1, 1, 6, 7, seed=4)
    assert torch.equal(cell.flows(None, h), torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)
                       .expand(1, 2, 6, 7))
    h1 = cell(None, h)
    torch.testing.assert_close(h1, _shift(h, 2, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(cell(None, h1), _shift(h, 4, -2), atol=1e-5, rtol=0)


def test_cells_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match="input_kernel_size must be a positive odd int"):
        ConvGRUCell(1, 2, 3, input_kernel_size=2)
    with pytest.raises(ValueError, match="flow_kernel_size"):
        TrajGRUCell(1, 2, 3, flow_kernel_size=0)
    with pytest.raises(ValueError, match="in_channels=0 and reads no input"):
        TrajGRUCell(0, 2, 3)(torch.rand(1, 1, 4, 4), torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"expected input \[N, 1, H, W\]"):
        ConvGRUCell(1, 2)(torch.rand(1, 3, 4, 4))


# ---- the HKO-7 encoder–forecasters ----------------------------------------------------------
# Parameter counts. HKO-7: the authors' configurations (sxjscience/HKO-7, experiments/hko/
# configurations/trajgru_55_55_33_1_64_1_192_1_192_13_13_9_b4.yml and convgru_55_55_33_1_64_1_
# 192_1_192_b4.yml; the paper prints no count for them), counted layer by layer from the MXNet
# network they build. Moving MNIST++: Shi et al. 2017, table 1 (TrajGRU-L13 4.00M, ConvGRU-K5-D1
# 4.77M); the authors' *_1_64_1_96_1_96_{L13,K5}.yml configurations give the exact numbers.
PUBLISHED = {"trajgru_hko7": 12_150_053, "conv_gru_hko7": 13_649_081,
             "trajgru_mmnist": 4_000_397, "conv_gru_mmnist": 4_767_505}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_variants_have_the_papers_parameter_counts(name):
    model = create_model(name)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - PUBLISHED[name]) <= 0.01 * PUBLISHED[name]
    assert n == PUBLISHED[name]
    if name.endswith("hko7"):  # 480x480 -> 96, 32, 16 and back, unpadded
        assert model.fit_size(480) == 480 and model._round_trip(480)
    if name == "trajgru_mmnist":
        assert round(n / 1e6, 2) == 4.00
    if name == "conv_gru_mmnist":
        assert round(n / 1e6, 2) == 4.77


def _tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **{**model_info(name).tiny, **kw}).eval()
    for cell in model.modules():  # non-zero flows, so the warps matter
        if isinstance(cell, TrajGRUCell):
            with torch.no_grad():
                cell.flow_out.weight.normal_(0, 0.1)
                cell.flow_out.bias.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("name", ["trajgru", "conv_gru"])
def test_streaming_equals_the_batch_forward_with_feedback_and_condition(name):
    model = _tiny(name, feedback=True, condition_channels=1)
    x, cond = _rand(2, 5, 1, 9, 11, seed=5), _rand(2, 3, 1, 9, 11, seed=6)  # frames padded
    with torch.no_grad():
        want = model(x, 3, condition=cond)
        state = model.encode(x[:, :2])
        state = model.encode(x[:, 2:3], state)
        state = model.encode(x[:, 3:], state)
        kept = {k: v.clone() for k, v in state.items()}
        got = model.decode(state, 3, condition=cond)
    assert want.shape == (2, 3, 1, 9, 11)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert all(torch.equal(state[k], kept[k]) for k in kept)  # decode leaves the state as it was
    assert set(state) == {"last", "h0", "h1"} and state["h1"].shape[-2:] == (5, 6)


def test_teacher_forcing_feeds_the_true_frames_with_feedback():
    model = _tiny("trajgru", feedback=True)
    assert model.autoregressive and not _tiny("trajgru").autoregressive
    x, teacher = _rand(2, 3, 1, 8, 8, seed=7), _rand(2, 4, 1, 8, 8, seed=8)
    with torch.no_grad():
        free = model(x, 4)
        forced = model(x, 4, teacher=teacher)
        none = model(x, 4, teacher=teacher, teacher_mask=torch.zeros(2, 3, dtype=torch.bool))
    torch.testing.assert_close(forced[:, 0], free[:, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(forced[:, 1:], free[:, 1:])
    torch.testing.assert_close(none, free, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="teacher forcing does not apply"):
        _tiny("trajgru")(x, 2, teacher=teacher)


def test_any_frame_size_is_padded_to_one_that_fits():
    model = _tiny("trajgru")
    assert model.fit_size(16) == 16 and model.fit_size(15) == 16 and model.fit_size(9) == 10
    hko = create_model("trajgru", stem=(2, 7, 5, 1), downsample=[(5, 3, 1)],
                       upsample=[(5, 3, 1)], head=(2, 7, 5, 1), hidden_channels=[2, 2])
    assert hko.fit_size(32) == 45 and hko.fit_size(45) == 45  # multiples of 15
    with torch.no_grad():
        assert hko(_rand(1, 2, 1, 32, 20), 2).shape == (1, 2, 1, 32, 20)


def test_bad_layouts_and_sizes_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match="comes back to its size"):
        create_model("conv_gru", upsample=[(5, 2, 1), (4, 2, 1)])  # 2n+1 never inverts
    with pytest.raises(ValueError, match="upsample has 1 entries but the model has 3 levels"):
        create_model("conv_gru", upsample=[(4, 2, 1)])
    with pytest.raises(ValueError, match=r"stem must be \(channels, kernel, stride, padding\)"):
        create_model("trajgru", stem=(8, 7, 0, 1))
    with pytest.raises(ValueError, match="links has 2 entries but the model has 3 levels"):
        create_model("trajgru", links=[5, 5])
    with pytest.raises(ValueError, match="links must be an int >= 1"):
        create_model("trajgru", links=0)
    with pytest.raises(ValueError, match="kernel_size has 2 entries"):
        create_model("conv_gru", kernel_size=[5, 3])
    with pytest.raises(ValueError, match="input_kernel_size must be a positive odd int"):
        create_model("trajgru", input_kernel_size=4)
    with pytest.raises(ValueError, match="unknown activation"):
        create_model("conv_gru", activation="relu")
    state = _tiny("trajgru").encode(_rand(1, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="encode frames of the batch and size"):
        _tiny("trajgru").encode(_rand(1, 2, 1, 16, 16), state)


def test_onnx_export_with_condition_frames_matches(tmp_path):
    """grid_sample exports at ONNX opset >= 16 (convcast exports at 17)."""
    import onnxruntime as ort

    model = _tiny("trajgru", feedback=True, condition_channels=1)
    info = {"input_frames": 3, "channels": 1, "frame_size": [9, 9], "model_name": "trajgru"}
    meta = export(None, "onnx", 2, tmp_path / "m.onnx", model=model, info=info)
    assert meta["max_abs_diff"] <= 1e-4
    assert json.loads((tmp_path / "m.onnx.json").read_text())["inputs"]["condition"] == [
        "batch", 2, 1, 9, 9]
    x, cond = _rand(4, 3, 1, 9, 9, seed=9), _rand(4, 2, 1, 9, 9, seed=10)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(
        None, {"x": x.numpy(), "condition": cond.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x, 2, condition=cond),
                                   atol=1e-4, rtol=0)

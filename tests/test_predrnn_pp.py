"""PredRNN++: the causal LSTM cell and the gradient highway unit against their equations, the
stack's wiring, the published size, streaming, teacher forcing and ONNX export."""

import math

import pytest
import torch

from convcast.layers.causal_lstm import (
    C2M_GATES,
    C_GATES,
    H_GATES,
    M_GATES,
    X_GATES,
    CausalLSTMCell,
    GradientHighwayUnit,
)
from convcast.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_channels=6, num_layers=3, kernel_size=3, patch_size=2)


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("predrnn_pp", **{**TINY, **kw})


def _x(b: int = 2, t: int = 3, c: int = 1, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, t, c, size, size, generator=torch.Generator().manual_seed(seed))


def _set(conv: torch.nn.Conv2d, weights: list[float], bias: list[float] | None = None) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(weights).view(conv.weight.shape))
        if bias is not None:
            conv.bias.copy_(torch.tensor(bias))


def test_causal_cell_one_channel_steps_match_hand_computation():
    """in=1, hidden=1, 1×1 kernels: every weight a scalar set by hand, two steps done on paper."""
    cell = CausalLSTMCell(1, 1, kernel_size=1)
    wx = [0.5, -0.3, 0.8, 0.2, 0.6, -0.7, 0.4]  # i, f, g, i', f', g', o
    bx = [0.1, 1.0, -0.2, 0.05, 1.0, 0.3, -0.1]
    wh = [0.3, 0.2, -0.5, 0.9]  # i, f, g, o (from H_{t-1})
    wc = [-0.6, 0.4, 0.7]  # i, f, g (from C_{t-1})
    wm = [-0.4, 0.7, 1.3]  # i', f', W_3 (from M)
    wcm = [0.35, -0.45, 0.8, -0.25]  # i', f', g', o (from the new C_t)
    wom = [0.55]  # o (from the new M_t)
    wl = [1.1, -0.9]  # the 1×1 fusion of [C_t, M_t]
    for conv, w, b in [(cell.conv_x, wx, bx), (cell.conv_h, wh, None), (cell.conv_c, wc, None),
                       (cell.conv_m, wm, None), (cell.conv_c2m, wcm, None),
                       (cell.conv_om, wom, None), (cell.conv_last, wl, None)]:
        _set(conv, w, b)

    def step(x, h0, c0, m0):
        i = _sig(wx[0] * x + bx[0] + wh[0] * h0 + wc[0] * c0)
        f = _sig(wx[1] * x + bx[1] + wh[1] * h0 + wc[1] * c0)
        g = math.tanh(wx[2] * x + bx[2] + wh[2] * h0 + wc[2] * c0)
        c1 = f * c0 + i * g
        i2 = _sig(wx[3] * x + bx[3] + wm[0] * m0 + wcm[0] * c1)
        f2 = _sig(wx[4] * x + bx[4] + wm[1] * m0 + wcm[1] * c1)
        g2 = math.tanh(wx[5] * x + bx[5] + wcm[2] * c1)
        m1 = f2 * math.tanh(wm[2] * m0) + i2 * g2
        o = math.tanh(wx[6] * x + bx[6] + wh[3] * h0 + wcm[3] * c1 + wom[0] * m1)
        h1 = o * math.tanh(wl[0] * c1 + wl[1] * m1)
        return h1, c1, m1

    full = lambda v: torch.full((2, 1, 3, 4), v)  # noqa: E731
    want, got = (-0.2, 0.4, -0.6), tuple(full(v) for v in (-0.2, 0.4, -0.6))
    for x in (0.7, -0.3):  # the second step reads the first one's states
        want = step(x, *want)
        got = cell(full(x), *got)
        for g, w in zip(got, want, strict=True):
            assert torch.allclose(g, full(w), atol=1e-6)


def test_causal_cell_gate_layout_matches_equations_with_several_channels():
    """in=2, hidden=3, 1×1 kernels: per-gate matrices packed in the documented block order."""
    torch.manual_seed(0)
    n_in, hid = 2, 3
    W = {g: torch.randn(hid, n_in) for g in X_GATES}
    b = {g: torch.randn(hid) for g in X_GATES}
    U = {g: torch.randn(hid, hid) for g in H_GATES}  # from H_{t-1}
    V = {g: torch.randn(hid, hid) for g in C_GATES}  # from C_{t-1}
    Q = {g: torch.randn(hid, hid) for g in M_GATES}  # from M ("m": W_3)
    R = {g: torch.randn(hid, hid) for g in C2M_GATES}  # from C_t
    Wom, W5c, W5m = (torch.randn(hid, hid) for _ in range(3))
    cell = CausalLSTMCell(n_in, hid, kernel_size=1)
    pack = lambda d, order: torch.cat([d[g] for g in order])[..., None, None]  # noqa: E731
    with torch.no_grad():
        cell.conv_x.weight.copy_(pack(W, X_GATES))
        cell.conv_x.bias.copy_(torch.cat([b[g] for g in X_GATES]))
        cell.conv_h.weight.copy_(pack(U, H_GATES))
        cell.conv_c.weight.copy_(pack(V, C_GATES))
        cell.conv_m.weight.copy_(pack(Q, M_GATES))
        cell.conv_c2m.weight.copy_(pack(R, C2M_GATES))
        cell.conv_om.weight.copy_(Wom[..., None, None])
        cell.conv_last.weight.copy_(torch.cat([W5c, W5m], 1)[..., None, None])
    x, h0, c0, m0 = torch.randn(4, n_in), *(torch.randn(4, hid) for _ in range(3))
    lin = lambda A, v: v @ A.T  # noqa: E731  a 1×1 convolution at one pixel
    i = torch.sigmoid(lin(W["i"], x) + b["i"] + lin(U["i"], h0) + lin(V["i"], c0))
    f = torch.sigmoid(lin(W["f"], x) + b["f"] + lin(U["f"], h0) + lin(V["f"], c0))
    g = torch.tanh(lin(W["g"], x) + b["g"] + lin(U["g"], h0) + lin(V["g"], c0))
    c1 = f * c0 + i * g
    i2 = torch.sigmoid(lin(W["i'"], x) + b["i'"] + lin(Q["i'"], m0) + lin(R["i'"], c1))
    f2 = torch.sigmoid(lin(W["f'"], x) + b["f'"] + lin(Q["f'"], m0) + lin(R["f'"], c1))
    g2 = torch.tanh(lin(W["g'"], x) + b["g'"] + lin(R["g'"], c1))
    m1 = f2 * torch.tanh(lin(Q["m"], m0)) + i2 * g2
    o = torch.tanh(lin(W["o"], x) + b["o"] + lin(U["o"], h0) + lin(R["o"], c1) + lin(Wom, m1))
    h1 = o * torch.tanh(lin(W5c, c1) + lin(W5m, m1))
    as_map = lambda v: v[..., None, None]  # noqa: E731  [4, ch] -> [4, ch, 1, 1]
    h, c, m = cell(as_map(x), as_map(h0), as_map(c0), as_map(m0))
    for got, want in [(h, h1), (c, c1), (m, m1)]:
        assert torch.allclose(got[..., 0, 0], want, atol=1e-5)


def test_gradient_highway_unit_steps_match_hand_computation():
    ghu = GradientHighwayUnit(1, 1, kernel_size=1)
    wx, bx, wz = [0.9, -0.4], [0.2, 0.3], [0.5, 1.2]  # (P, S) blocks of conv_x and conv_z
    _set(ghu.conv_x, wx, bx)
    _set(ghu.conv_z, wz)
    full = lambda v: torch.full((3, 1, 2, 5), v)  # noqa: E731
    z, want = None, 0.0  # None: Z_0 = 0
    for x in (0.8, -0.5, 0.1):
        p = math.tanh(wx[0] * x + bx[0] + wz[0] * want)
        s = _sig(wx[1] * x + bx[1] + wz[1] * want)
        want = s * p + (1 - s) * want
        z = ghu(full(x), z)
        assert torch.allclose(z, full(want), atol=1e-6)


def test_initial_gates_and_zero_states():
    hid = 4
    cell = CausalLSTMCell(3, hid, 3)
    want = torch.zeros(7, hid)
    for gate in ("f", "f'", "o"):
        want[X_GATES.index(gate)] = 1
    assert torch.equal(cell.conv_x.bias.view(7, hid), want)
    assert all(getattr(cell, n).bias is None for n in ("conv_h", "conv_c", "conv_m", "conv_c2m",
                                                       "conv_om", "conv_last"))
    w3 = cell.conv_m.weight[M_GATES.index("m") * hid:][:hid]  # W_3 starts as the identity
    assert torch.equal(w3[:, :, 1, 1], torch.eye(hid)) and w3.abs().sum() == hid
    ghu = GradientHighwayUnit(hid, hid, 3)
    assert max(ghu.conv_x.weight.abs().max(), ghu.conv_z.weight.abs().max()) <= 1e-3
    assert torch.equal(ghu.conv_x.bias, torch.zeros(2 * hid))
    x, z = torch.randn(2, 3, 5, 5), torch.zeros(2, hid, 5, 5)
    for a, b in zip(cell(x), cell(x, z, z, z), strict=True):
        assert torch.equal(a, b)
    h = torch.randn(2, hid, 5, 5)
    assert torch.equal(ghu(h), ghu(h, z))


def test_layer_norm_any_frame_size_and_memories_stay_float32_under_bf16_autocast():
    cell = CausalLSTMCell(2, 4, 3, layer_norm=True)
    ghu = GradientHighwayUnit(4, 4, 3, layer_norm=True)
    assert cell.conv_x.bias is None and ghu.conv_x.bias is None
    assert torch.equal(cell.norm_x.bias.view(7, 4)[X_GATES.index("f'")], torch.ones(4))
    for size in [(8, 8), (13, 21)]:
        out = cell(torch.randn(2, 2, *size))
        z = ghu(out[0])
        assert all(t.shape == (2, 4, *size) and torch.isfinite(t).all() for t in (*out, z))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, c, m = cell(torch.randn(2, 2, 6, 6).bfloat16())
        h, c, m = cell(torch.randn(2, 2, 6, 6), h, c, m)
        z = ghu(h, ghu(h))
    assert c.dtype == m.dtype == z.dtype == torch.float32 and h.dtype == torch.bfloat16


def test_highway_sits_between_layers_one_and_two_and_memory_zigzags():
    model = _model().eval()
    seen = []  # (module, input x, m_in, m_out) in call order

    def hook(name):
        def record(module, args, out):
            if name == "ghu":
                seen.append((name, args[0], None, out))
            else:
                seen.append((name, args[0], args[3], out))
        return record

    for i, cell in enumerate(model.cells):
        cell.register_forward_hook(hook(i))
    model.highway.register_forward_hook(hook("ghu"))
    t_in, horizon, L = 3, 2, len(model.cells)
    with torch.no_grad():
        model(_x(t=t_in), horizon)
    assert [s[0] for s in seen] == [0, "ghu", *range(1, L)] * (t_in + horizon - 1)
    cells = [s for s in seen if s[0] != "ghu"]
    assert torch.equal(cells[0][2], torch.zeros_like(cells[0][2]))  # M starts at zero
    for k in range(1, len(cells)):  # M: every cell reads what the previous call wrote
        assert cells[k][2] is cells[k - 1][3][2]
    for k, s in enumerate(seen):
        if s[0] == "ghu":  # the highway reads layer 0's H; layer 1 reads the highway's Z
            assert s[1] is seen[k - 1][3][0] and seen[k + 1][1] is s[3]
        elif s[0] not in (0, 1):  # higher layers read the layer below's H
            assert s[1] is seen[k - 1][3][0]


def test_streaming_equals_the_batch_forward_and_leaves_the_state():
    model, x = _model().eval(), _x(t=5)
    with torch.no_grad():
        want = model(x, 4)
        state = model.encode(x[:, :2])
        state = model.encode(x[:, 2:3], state)
        state = model.encode(x[:, 3:], state)
        kept = {k: v.clone() for k, v in state.items()}
        got = model.decode(state, 4)
        again = model.decode(state, 2)
    assert sorted(state) == sorted(model.state_keys()) and "z" in state
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, want[:, :2], atol=1e-6, rtol=0)
    assert all(torch.equal(state[k], kept[k]) for k in kept)  # decode changed nothing
    with pytest.raises(ValueError, match="not a state of this model"):
        model.decode({"last": state["last"]}, 2)


def test_teacher_forcing_reads_the_true_frames_and_input_mask():
    model, x, y = _model().eval(), _x(t=3), _x(t=3, seed=2)
    with torch.no_grad():
        free = model(x, 3)
        forced = model(x, 3, teacher=y)
        # a forced step reads the true frame: as if that frame had been an input frame
        assert torch.allclose(forced[:, 1], model(torch.cat([x, y[:, :1]], 1), 1)[:, 0], atol=1e-6)
        assert torch.allclose(forced[:, 2], model(torch.cat([x, y[:, :2]], 1), 1)[:, 0], atol=1e-6)
        mixed = model(x, 3, teacher=y, teacher_mask=torch.tensor([[1, 0], [0, 1]]))
        assert torch.allclose(model(x, 3, input_mask=torch.ones(2, 2)), free, atol=1e-6)
        only_first = model(x, 3, input_mask=torch.zeros(2, 2))
        x2 = x.clone()
        x2[:, 1:] = 1 - x2[:, 1:]  # an all-0 mask reads input frame 0 only
        assert torch.allclose(model(x2, 3, input_mask=torch.zeros(2, 2)), only_first, atol=1e-6)
    assert torch.allclose(forced[:, 0], free[:, 0], atol=1e-6)
    assert not torch.allclose(forced[:, 1:], free[:, 1:])
    # sample 0 reads true frame 0 and then its own frame 1; sample 1 the other way round
    assert torch.allclose(mixed[0, :2], forced[0, :2], atol=1e-6)
    assert not torch.allclose(mixed[0, 2], forced[0, 2])
    assert torch.allclose(mixed[1, :2], free[1, :2], atol=1e-6)
    assert not torch.allclose(mixed[1, 2], free[1, 2])
    with pytest.raises(ValueError, match="input_mask"):
        model(x, 3, input_mask=torch.ones(2, 3))


def test_training_forward_reports_the_context_loss_and_trains_every_parameter():
    model = _model(context_weight=2.0, layer_norm=True, in_channels=2,
                   output_activation="identity").train()
    x = _x(t=4, c=2)
    y = model(x, 2)
    extra = model.extra_losses()
    assert set(extra) == {"context"}
    with torch.no_grad():  # reading the inputs = a teacher-forced rollout from the first frame
        pred = model(x[:, :1], 3, teacher=x[:, 1:])
    want = 2.0 * torch.mean((pred - x[:, 1:]) ** 2).item()
    assert extra["context"].item() == pytest.approx(want, rel=1e-5)
    (y.pow(2).mean() + extra["context"]).backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"
    assert model.eval().extra_losses() == {}


def test_published_size():
    """OpenSTL's Moving MNIST model (4×128, 5×5, patch 4) is reported as 38.6M parameters. That
    count includes a 2·128 -> 128 5×5 convolution each of its cells builds but never calls
    (3,276,800 weights in all); its weights in use are 35,307,520, ours the same plus the gate
    biases of the input convolutions (7·128 per cell, 2·128 in the highway) and the head's 16."""
    with torch.device("meta"):
        model = create_model("predrnn_pp_mmnist")
    assert (model.hidden_channels, model.num_layers, model.patch_size) == (128, 4, 4)
    count = sum(p.numel() for p in model.parameters())
    biases = 4 * 7 * 128 + 2 * 128 + 16
    assert count == 35_307_520 + biases
    unused_in_openstl = 4 * (2 * 128) * 128 * 5 * 5
    assert round((count - biases + unused_in_openstl) / 1e6, 1) == 38.6


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="num_layers.*gradient highway"):
        create_model("predrnn_pp", num_layers=1)
    with pytest.raises(ValueError, match="hidden_channels.*same width"):
        create_model("predrnn_pp", hidden_channels=[8, 8])
    with pytest.raises(ValueError, match="context_weight"):
        create_model("predrnn_pp", context_weight=-1)
    with pytest.raises(ValueError, match="own condition frame"):
        create_model("predrnn_pp", in_channels=2, condition_channels=1)
    with pytest.raises(ValueError, match="patch_size"):  # encode alone does not pad
        _model(patch_size=4).encode(_x(size=6))
    with pytest.raises(ValueError, match="odd"):
        CausalLSTMCell(1, 4, kernel_size=4)
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        CausalLSTMCell(2, 4, 3)(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="differ in size"):
        CausalLSTMCell(2, 4, 3)(torch.randn(1, 2, 8, 8), torch.zeros(1, 4, 6, 6))
    with pytest.raises(ValueError, match="differ in size"):
        GradientHighwayUnit(4, 4, 3)(torch.randn(1, 4, 8, 8), torch.zeros(1, 4, 6, 6))


def test_onnx_export_of_a_checkpoint_matches_the_model(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from convcast.cli.export import export
    from convcast.data.description import DataDescription
    from convcast.data.normalize import Normalization

    T, H, size, kw = 3, 2, 8, {**TINY, "num_layers": 2}
    model = _model(**kw).eval()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_name": "predrnn_pp", "model_kwargs": kw},
                "convcast_data": DataDescription(
                    T, H, 1, (size, size), Normalization("minmax", 0.0, 255.0)).to_dict()},
               tmp_path / "m.ckpt")
    meta = export(tmp_path / "m.ckpt", "onnx", H, tmp_path / "m.onnx")
    assert meta["max_abs_diff"] <= 1e-4
    x = _x(b=3, t=T, size=size)  # a batch size the export never saw
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x, H), atol=1e-4, rtol=0)

"""E3D-LSTM: the cell's equations, the published size, streaming, teacher forcing, export."""

import math

import pytest
import torch

from convcast.cli.export import export
from convcast.layers import set_checkpointing
from convcast.layers.e3d_lstm import M_GATES, X_GATES, Eidetic3DLSTMCell
from convcast.models import create_model, model_info

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_channels=4, num_layers=2, kernel_size=3, patch_size=2)


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("e3d_lstm", **{**TINY, **kw}).eval()


def _x(b: int = 2, t: int = 3, c: int = 1, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, t, c, size, size, generator=torch.Generator().manual_seed(seed))


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_cell_follows_its_equations_on_hand_set_weights():
    """One channel, one pixel, a window of two frames: every gate written out by hand."""
    cell = Eidetic3DLSTMCell(1, 1, kernel_size=1, window=2).double()
    wx = [(0.5, -0.3), (0.2, 0.4), (-0.6, 0.9), (0.3, 0.1), (0.7, -0.2), (-0.4, 0.6), (0.1, 0.8)]
    wh = [(0.2, -0.1), (0.3, 0.5), (0.4, -0.7), (-0.3, 0.2)]
    wm = [(0.6, 0.1), (-0.5, 0.3), (0.2, 0.2), (0.9, -0.4)]
    wc, wmo, wl = (0.3, -0.6), (0.5, 0.2), (0.8, -0.5)
    gamma, beta = 1.3, -0.2
    with torch.no_grad():
        cell.conv_x.weight.copy_(torch.tensor(wx).view(7, 1, 2, 1, 1))
        cell.conv_h.weight.copy_(torch.tensor(wh).view(4, 1, 2, 1, 1))
        cell.conv_m.weight.copy_(torch.tensor(wm).view(4, 1, 2, 1, 1))
        cell.conv_c.weight.copy_(torch.tensor(wc).view(1, 1, 2, 1, 1))
        cell.conv_mo.weight.copy_(torch.tensor(wmo).view(1, 1, 2, 1, 1))
        cell.conv_last.weight.copy_(torch.tensor(wl).view(1, 2, 1, 1, 1))
        cell.norm_c.weight.fill_(gamma)
        cell.norm_c.bias.fill_(beta)
    x, h, m = (0.9, 0.2), (0.4, -0.3), (0.5, -0.1)
    memories = [(0.3, -0.8), (1.2, 0.1), (-0.5, 0.6)]  # C_{t-3}, C_{t-2}, C_{t-1}

    def t(v):  # a window (v0, v1) as [1, 1, 2, 1, 1]
        return torch.tensor(v, dtype=torch.float64).view(1, 1, 2, 1, 1)

    got_h, got_c, got_m = cell(t(x), t(h), torch.stack([t(c) for c in memories], 1), t(m))

    def conv(w, v):  # a 2×1×1 kernel over the window: one value for both frames
        return w[0] * v[0] + w[1] * v[1]

    xg = dict(zip(X_GATES, (conv(w, x) for w in wx), strict=True))
    hg = dict(zip(("i", "g", "r", "o"), (conv(w, h) for w in wh), strict=True))
    mg = dict(zip(M_GATES, (conv(w, m) for w in wm), strict=True))
    i, g = _sig(xg["i"] + hg["i"]), math.tanh(xg["g"] + hg["g"])
    r = _sig(xg["r"] + hg["r"])
    keys = [v for c in memories for v in c]  # one-channel tokens: every stored value
    weights = [math.exp(r * k) for k in keys]
    recalled = sum(w * k for w, k in zip(weights, keys, strict=True)) / sum(weights)
    v = [memories[-1][p] + recalled for p in range(2)]  # C_{t-1} + RECALL, per frame
    mean, var = sum(v) / 2, sum((e - sum(v) / 2) ** 2 for e in v) / 2
    c_new = [gamma * (e - mean) / math.sqrt(var + 1e-5) + beta + i * g for e in v]
    i2, g2 = _sig(xg["i'"] + mg["i'"]), math.tanh(xg["g'"] + mg["g'"])
    f2 = _sig(xg["f'"] + mg["f'"] + 1.0)  # the constant forget bias
    m_new = f2 * math.tanh(mg["m"]) + i2 * g2
    o = math.tanh(xg["o"] + hg["o"] + conv(wc, c_new) + conv(wmo, (m_new, m_new)))
    h_new = [math.tanh(wl[0] * c + wl[1] * m_new) * _sig(o) for c in c_new]
    torch.testing.assert_close(got_c.flatten(), torch.tensor(c_new, dtype=torch.float64))
    torch.testing.assert_close(got_m.flatten(), torch.tensor([m_new] * 2, dtype=torch.float64))
    torch.testing.assert_close(got_h.flatten(), torch.tensor(h_new, dtype=torch.float64))


def test_the_mmnist_variant_has_openstl_size():
    """OpenSTL's Moving MNIST E3D-LSTM: 4×128, 5×5, window 2, patch 4 on 64×64×1: 51.0M."""
    with torch.device("meta"):
        model = create_model("e3d_lstm_mmnist")
    n = sum(p.numel() for p in model.parameters())
    assert n == 50_824_192
    assert abs(n / 51.0e6 - 1) < 0.01


@pytest.mark.parametrize("kw", [{}, {"memory_flow": True, "window": 3, "tau": 2},
                                {"layer_norm": True, "condition_channels": 1}])
def test_streaming_in_chunks_equals_the_batch_forward(kw):
    model, x = _model(**kw), _x(t=5)
    cond = _x(t=3, seed=4) if kw.get("condition_channels") else None
    with torch.no_grad():
        want = model(x, 3, condition=cond)
        state = model.encode(x[:, :1])
        for t in (1, 3):
            state = model.encode(x[:, t:t + 2], state)
        got = model.decode(state, 3, condition=cond)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert sorted(state) == sorted(model.state_keys())
    tau, w = model.tau, model.window
    assert state["c0"].shape == (2, min(tau, 5), 4, w, 4, 4)  # the last tau memories
    assert state["last"].shape == (2, w, 4, 4, 4)  # the window of frames, the newest unread
    assert state["c0"].dtype == torch.float32 and ("m" in state) == model.memory_flow


def test_recall_history_is_bounded_by_tau():
    """A tau covering every step changes nothing; a shorter one forgets the oldest memories."""
    x = _x(t=4)
    with torch.no_grad():
        full = _model(tau=6)(x, 3)  # 4 + 3 - 1 = 6 steps
        assert torch.equal(_model(tau=50)(x, 3), full)
        assert not torch.allclose(_model(tau=2)(x, 3), full)


def test_one_input_frame_reads_a_zero_padded_window():
    model, x = _model(window=3), _x(t=1)
    with torch.no_grad():
        state = model.encode(x)
        assert torch.equal(state["last"][:, :2], torch.zeros_like(state["last"][:, :2]))
        assert model(x, 2).shape == (2, 2, 1, 8, 8)


def test_teacher_forcing_reads_the_true_frames():
    """Forced frame k is the one-step forecast from the inputs and true frames 0..k-1."""
    model, x, y = _model(), _x(), _x(t=4, seed=2)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    with torch.no_grad():
        forced = model(x, 4, teacher=y)
        mixed = model(x, 4, teacher=y, teacher_mask=mask)
        free = model(x, 4)
        for k in range(4):
            one = model(torch.cat([x, y[:, :k]], dim=1), 1)[:, 0]
            torch.testing.assert_close(forced[:, k], one, atol=1e-6, rtol=0)
        # sample 0 is forced at k=1 only; from then on it runs free from its own prediction
        want = model(torch.cat([x[:1], y[:1, :1]], dim=1), 1)[:, 0]
        torch.testing.assert_close(mixed[0, 1], want[0], atol=1e-6, rtol=0)
        assert not torch.allclose(mixed, free) and not torch.allclose(mixed, forced)
        torch.testing.assert_close(mixed[:, 0], free[:, 0], atol=0, rtol=0)


def test_reference_memory_flow_reads_a_zero_memory():
    """As in the released code, every cell reads M = 0 unless memory_flow=True."""
    model, x = _model(), _x()
    seen = []
    for cell in model.cells:
        cell.register_forward_hook(lambda mod, args, out: seen.append(args[3]))
    with torch.no_grad():
        model(x, 2)
    assert seen and all(not m.any() for m in seen)
    flowing = _model(memory_flow=True)
    with torch.no_grad():
        assert not torch.allclose(flowing(x, 2), model(x, 2))


def test_gradient_checkpointing_and_bfloat16_weights():
    model, x = _model().train(), _x()
    model(x, 3).pow(2).mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    assert set_checkpointing(model) == 2
    model(x, 3).pow(2).mean().backward()
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-5)
    half = _model().to(torch.bfloat16)  # the memories stay float32
    with torch.no_grad():
        state = half.encode(x.bfloat16())
        y = half.decode(state, 2)
    assert state["c0"].dtype == torch.float32 and state["h0"].dtype == torch.bfloat16
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_onnx_export_of_the_flowing_model_matches(tmp_path):
    kw = {**model_info("e3d_lstm").tiny, "memory_flow": True, "window": 3}
    model = _model(**kw)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_name": "e3d_lstm", "model_kwargs": kw},
                "convcast_data": {"input_frames": 3, "output_frames": 2, "channels": 1,
                                  "frame_size": [8, 8]}}, tmp_path / "m.ckpt")
    meta = export(tmp_path / "m.ckpt", "onnx", 2, tmp_path / "m.onnx")
    assert meta["max_abs_diff"] <= 1e-5
    import onnxruntime as ort

    x = _x(b=4, seed=3)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("arg", "value"), [("window", 0), ("tau", 0), ("hidden_channels", [4, 4]),
                                            ("kernel_size", [3, 3]), ("kernel_size", 2)])
def test_bad_sizes_are_refused_by_name(arg, value):
    with pytest.raises(ValueError, match=arg):
        create_model("e3d_lstm", **{arg: value})


def test_cell_refuses_a_wrong_window():
    cell = Eidetic3DLSTMCell(3, 4, kernel_size=3, window=2)
    with pytest.raises(ValueError, match=r"window=2"):
        cell(torch.rand(1, 3, 3, 8, 8))
    h, c, m = cell(torch.rand(1, 3, 2, 8, 8))
    assert h.shape == c.shape == m.shape == (1, 4, 2, 8, 8)

"""MIM (Memory In Memory): its modules against the equations, the published size, streaming,
teacher forcing, reverse scheduled sampling and export."""

import json
import math
from itertools import pairwise

import pytest
import torch

from convcast.cli.export import export
from convcast.data.description import DataDescription
from convcast.data.normalize import Normalization
from convcast.layers import set_checkpointing
from convcast.layers.mim import (
    BLOCK_H_GATES,
    BLOCK_M_GATES,
    BLOCK_X_GATES,
    MIMN,
    MIMS,
    PEEP_GATES,
    MIMBlock,
)
from convcast.models import create_model, model_info

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = model_info("mim").tiny
T, H, SIZE = 4, 3, 8


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mim", **{**TINY, **kw}).eval()


def _x(b: int = 2, t: int = T, seed: int = 1, size: int = SIZE) -> torch.Tensor:
    return torch.rand(b, t, 1, size, size, generator=torch.Generator().manual_seed(seed))


# ---- the modules, against the equations (1 channel, 1×1 kernels, hand-set weights) ----------
PEEP = {"wx": [0.5, -0.3, 0.8, 0.4], "bx": [0.1, 1.0, -0.2, 0.05],  # gates (i, f, g, o)
        "wh": [0.3, 0.2, -0.5, 0.9], "wp": [0.6, -0.7, 0.25]}  # peepholes (i, f, o)


def _set_peep(mod: MIMN | MIMS, p: dict) -> None:
    with torch.no_grad():
        mod.conv_x.weight.copy_(torch.tensor(p["wx"]).view(4, 1, 1, 1))
        mod.conv_x.bias.copy_(torch.tensor(p["bx"]))
        mod.conv_h.weight.copy_(torch.tensor(p["wh"]).view(4, 1, 1, 1))
        mod.peephole.copy_(torch.tensor(p["wp"]).view(3, 1, 1, 1))


def _peep_by_hand(p: dict, x: float, h: float, c: float) -> tuple[float, float]:
    """A peephole ConvLSTM step (MIM-N: x=ΔH, h=D, c=N; MIM-S: x=D, h=C, c=S) on paper."""
    wx, bx, wh, wp = p["wx"], p["bx"], p["wh"], p["wp"]
    i = _sig(wx[0] * x + bx[0] + wh[0] * h + wp[0] * c)
    f = _sig(wx[1] * x + bx[1] + wh[1] * h + wp[1] * c)
    g = math.tanh(wx[2] * x + bx[2] + wh[2] * h)
    c1 = f * c + i * g
    o = _sig(wx[3] * x + bx[3] + wh[3] * h + wp[2] * c1)
    return o * math.tanh(c1), c1


def _full(v: float) -> torch.Tensor:
    return torch.full((2, 1, 3, 4), v)


@pytest.mark.parametrize("cls", [MIMN, MIMS])
def test_memory_modules_match_hand_computation(cls):
    mod = cls(1, 1, kernel_size=1)
    assert PEEP_GATES == ("i", "f", "g", "o")
    _set_peep(mod, PEEP)
    x, h, c = 0.7, -0.2, 0.4
    h1, c1 = _peep_by_hand(PEEP, x, h, c)
    got_h, got_c = mod(_full(x), _full(h), _full(c))
    assert torch.allclose(got_h, _full(h1), atol=1e-6) and torch.allclose(got_c, _full(c1),
                                                                          atol=1e-6)
    h2, c2 = _peep_by_hand(PEEP, -0.3, h1, c1)  # a second step from the first one's state
    got_h, got_c = mod(_full(-0.3), got_h, got_c)
    assert torch.allclose(got_h, _full(h2), atol=1e-6) and torch.allclose(got_c, _full(c2),
                                                                          atol=1e-6)
    # no state: zeros; forget bias 1 and zero peepholes at initialisation
    fresh = cls(1, 1, kernel_size=1)
    assert torch.equal(fresh.peephole, torch.zeros(3, 1, 1, 1))
    assert fresh.conv_x.bias.tolist() == [0.0, 1.0, 0.0, 0.0]
    _set_peep(fresh, PEEP)
    want = _peep_by_hand(PEEP, x, 0.0, 0.0)
    got = fresh(_full(x))
    assert all(torch.allclose(g, _full(w), atol=1e-6) for g, w in zip(got, want, strict=True))


def test_per_position_peepholes_and_their_size():
    mod = MIMN(1, 1, kernel_size=1, peephole_size=(2, 3))
    assert mod.peephole.shape == (3, 1, 2, 3)
    with torch.no_grad():
        mod.peephole[0, 0, 1, 2] = 5.0  # W_ni at one position only
    x, c = torch.full((1, 1, 2, 3), 0.3), torch.full((1, 1, 2, 3), 0.5)
    h, n = mod(x, None, c)
    others = torch.ones(2, 3, dtype=torch.bool)
    others[1, 2] = False
    assert torch.allclose(n[0, 0][others], n[0, 0, 0, 0].expand(5))  # same everywhere else
    assert not torch.allclose(n[0, 0, 1, 2], n[0, 0, 0, 0])
    with pytest.raises(ValueError, match="peephole_size"):
        mod(torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="peephole_size must be"):
        MIMN(1, 1, peephole_size=(0, 3))


BLOCK = {"wx": [0.4, 0.3, -0.6, 0.2], "bx": [0.05, 1.0, -0.1, 0.2],  # (i, f', g, o)
         "wh": [0.7, -0.4, 0.35],  # (i, g, o)
         "wm": [-0.2, 0.5, 0.9, -0.3],  # (i', f', g', o)
         "wl": [1.1, -0.8]}  # the 1×1 fusion of [C, M]
MIM_N = {"wx": [0.2, -0.5, 0.9, 0.3], "bx": [0.0, 1.0, 0.1, -0.2],
         "wh": [-0.4, 0.6, 0.3, 0.5], "wp": [0.3, 0.2, -0.4]}


def _block_by_hand(x, delta, h, c, m, d, n, s, has_diff):
    """Equation (4) with the authors' deviations (see convcast.layers.mim), on paper."""
    if has_diff:
        d, n = _peep_by_hand(MIM_N, delta, d, n)  # D_t, N_t
    t, s = _peep_by_hand(PEEP, d, c, s)  # T_t = MIM-S(D_t, C_{t-1}, S_{t-1})
    wx, bx, wh, wm, wl = BLOCK["wx"], BLOCK["bx"], BLOCK["wh"], BLOCK["wm"], BLOCK["wl"]
    i = _sig(wx[0] * x + bx[0] + wh[0] * h)
    g = math.tanh(wx[2] * x + bx[2] + wh[1] * h)
    i2 = _sig(wx[0] * x + bx[0] + wm[0] * m)  # i' and g' share i's and g's input term
    f2 = _sig(wx[1] * x + bx[1] + wm[1] * m)
    g2 = math.tanh(wx[2] * x + bx[2] + wm[2] * m)
    o = _sig(wx[3] * x + bx[3] + wh[2] * h + wm[3] * m)  # W_mo * M entering, no C_t term
    c1 = t + i * g
    m1 = f2 * m + i2 * g2
    h1 = o * math.tanh(wl[0] * c1 + wl[1] * m1)
    return h1, c1, m1, d, n, s


def _hand_block() -> MIMBlock:
    block = MIMBlock(1, 1, kernel_size=1)
    assert (BLOCK_X_GATES, BLOCK_H_GATES, BLOCK_M_GATES) == (
        ("i", "f'", "g", "o"), ("i", "g", "o"), ("i'", "f'", "g'", "o"))
    assert block.conv_x.bias.tolist() == [0.0, 1.0, 0.0, 0.0]  # f' starts at 1
    with torch.no_grad():
        block.conv_x.weight.copy_(torch.tensor(BLOCK["wx"]).view(4, 1, 1, 1))
        block.conv_x.bias.copy_(torch.tensor(BLOCK["bx"]))
        block.conv_h.weight.copy_(torch.tensor(BLOCK["wh"]).view(3, 1, 1, 1))
        block.conv_m.weight.copy_(torch.tensor(BLOCK["wm"]).view(4, 1, 1, 1))
        block.conv_last.weight.copy_(torch.tensor(BLOCK["wl"]).view(1, 2, 1, 1))
    _set_peep(block.mim_n, MIM_N)
    _set_peep(block.mim_s, PEEP)
    return block


@pytest.mark.parametrize("has_diff", [True, False])
def test_mim_block_matches_hand_computation(has_diff):
    block = _hand_block()
    vals = dict(x=0.6, delta=-0.25, h=0.3, c=-0.5, m=0.45, d=0.2, n=-0.1, s=0.35)
    want = _block_by_hand(**vals, has_diff=has_diff)
    x, delta = _full(vals.pop("x")), _full(vals.pop("delta"))
    states = {k: _full(v) for k, v in vals.items()}
    got = block(x, delta, **states, has_diff=has_diff)
    for name, g, w in zip("hcmdns", got, want, strict=True):
        assert torch.allclose(g, _full(w), atol=1e-6), name
    if not has_diff:  # MIM-N kept its state
        assert torch.equal(got[3], _full(0.2)) and torch.equal(got[4], _full(-0.1))
    # a per-sample mask: sample 0 has a difference, sample 1 not
    mask = torch.tensor([True, False]).view(2, 1, 1, 1)
    mixed = block(x, delta, **states, has_diff=mask)
    on = _block_by_hand(0.6, -0.25, **vals, has_diff=True)
    off = _block_by_hand(0.6, -0.25, **vals, has_diff=False)
    for g, w_on, w_off in zip(mixed, on, off, strict=True):
        assert torch.allclose(g[0], _full(w_on)[0], atol=1e-6)
        assert torch.allclose(g[1], _full(w_off)[1], atol=1e-6)


def test_mim_block_states_default_to_zeros_and_memories_to_float32():
    block = _hand_block().double()
    x = _full(0.6).double()
    got = block(x, torch.zeros_like(x), has_diff=False)
    want = _block_by_hand(0.6, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, has_diff=False)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float64 and torch.allclose(g, torch.full_like(g, w), atol=1e-12)
    with pytest.raises(ValueError, match="delta must be"):
        block(x, torch.zeros(2, 2, 3, 4, dtype=torch.float64))


# ---- the model -------------------------------------------------------------------------------
def test_published_variant_has_openstls_parameter_count():
    """OpenSTL's MIM on Moving MNIST (4 × 128, 5×5, patch 4, 64×64): 38.0M parameters."""
    with torch.device("meta"):
        model = create_model("mim_mmnist")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 38.0e6 - 1) < 0.01, n
    assert n == 37_950_864  # OpenSTL's 38,043,648 less its 3 unused 1×1 MIM-N convs, plus biases
    assert model.frame_size == (64, 64) and model.cells[1].mim_n.peephole.shape == (3, 128, 16, 16)


def test_stack_layout_and_size_errors():
    model = _model(num_layers=3)
    assert type(model.cells[0]).__name__ == "SpatioTemporalLSTMCell"
    assert all(isinstance(c, MIMBlock) for c in model.cells[1:])
    assert set(model.encode(_x())) == set(model.state_keys()) >= {"d1", "n2", "s2", "started"}
    with pytest.raises(ValueError, match="num_layers must be >= 2.*predrnn"):
        create_model("mim", num_layers=1)
    with pytest.raises(ValueError, match="frame_size"):
        create_model("mim", frame_size=(30, 32), patch_size=4)
    with pytest.raises(ValueError, match="frame_size"):
        create_model("mim", frame_size=[0, 8])
    pinned = _model(frame_size=SIZE)
    with pytest.raises(ValueError, match="built for 8×8 frames.*frame_size=None"):
        pinned(_x(size=16), 1)


@pytest.mark.parametrize("kw", [{}, {"frame_size": [SIZE, SIZE], "num_layers": 3}])
def test_streaming_equals_the_batch_forward(kw):
    """Chunks of any length (a single first frame included: no step has run, so the next chunk's
    first step is the sequence's first, without a difference) give the batch forward."""
    model, x = _model(**kw), _x(t=5)
    with torch.no_grad():
        want = model(x, H)
        for cuts in ([1], [2], [1, 2, 3, 4], [3]):
            state, edges = None, [0, *cuts, 5]
            for a, b in pairwise(edges):
                state = model.encode(x[:, a:b], state)
            torch.testing.assert_close(model.decode(state, H), want, atol=1e-6, rtol=0)
            assert state["started"].all() and state["started"].shape == (2, 1, 1, 1)
        assert not model.encode(x[:, :1])["started"].any()
        state = model.encode(x)
        before = {k: v.clone() for k, v in state.items()}
        model.decode(state, H)
        assert all(torch.equal(before[k], state[k]) for k in state)  # decode leaves it as it was
    assert state["c1"].dtype == state["s1"].dtype == state["n1"].dtype == torch.float32


def test_teacher_forcing_feeds_the_true_frames():
    model, x = _model(), _x()
    teacher = _x(t=H, seed=5)
    with torch.no_grad():
        forced = model(x, H, teacher=teacher)
        for k in range(H):  # frame k, fed the true frames before it = a forecast from them
            want = model(torch.cat([x, teacher[:, :k]], dim=1), 1)[:, 0]
            torch.testing.assert_close(forced[:, k], want, atol=1e-6, rtol=0)
        mask = torch.tensor([[True, False], [False, False]])
        mixed = model(x, H, teacher=teacher, teacher_mask=mask)
        free = model(x, H)
    torch.testing.assert_close(mixed[0, :2], forced[0, :2], atol=1e-6, rtol=0)  # true frame 0
    assert not torch.allclose(mixed[0, 1], free[0, 1])
    assert not torch.allclose(mixed[0, 2], forced[0, 2])  # predicted frame 1 fed frame 2
    torch.testing.assert_close(mixed[1], free[1], atol=1e-6, rtol=0)  # sample 1 free-running


def test_reverse_scheduled_sampling_and_context_loss():
    model, x = _model(context_weight=0.5), _x()
    with torch.no_grad():
        plain = model(x, H)
        assert torch.equal(model(x, H, input_mask=torch.ones(2, T - 1)), plain)
        own = model(x, H, input_mask=torch.zeros(2, T - 1))
    assert not torch.allclose(own, plain)
    assert model.extra_losses() == {}  # eval mode
    model.train()
    y = model(x, H, input_mask=torch.ones(2, T - 1))
    (y.mean() + model.extra_losses()["context"]).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="input_mask must be"):
        model(x, H, input_mask=torch.ones(2, T))


def test_layer_norm_and_checkpointing_give_the_same_gradients():
    model = _model(layer_norm=True, num_layers=3).train()
    hid = TINY["hidden_channels"]
    assert model.cells[1].norm_x.bias[hid:2 * hid].tolist() == [1.0] * hid  # f' bias in the norm
    assert model.cells[1].conv_x.bias is None
    x = _x()

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        model(x, H).pow(2).mean().backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    assert set_checkpointing(model) == 3  # the ST-LSTM cell and the two MIM blocks
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_onnx_export_matches(tmp_path):
    """With per-position peepholes (the generic export test covers the default)."""
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    kw = {"frame_size": [SIZE, SIZE]}
    model = _model(**kw)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_name": "mim", "model_kwargs": {**TINY, **kw}},
                "convcast_data": DataDescription(
                    T, H, 1, (SIZE, SIZE), Normalization("minmax", 0.0, 255.0)).to_dict()},
               tmp_path / "m.ckpt")
    meta = export(tmp_path / "m.ckpt", "onnx", H, tmp_path / "m.onnx")
    assert meta["max_abs_diff"] <= 1e-5
    assert json.loads((tmp_path / "m.onnx.json").read_text())["horizon"] == H
    x = _x(b=3, seed=7)  # a batch size the export never saw
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x, H), atol=1e-5, rtol=0)

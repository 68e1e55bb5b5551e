"""FC-LSTM encoder–predictor (Srivastava et al. 2015): contract, lazy frame size, paper size."""

import math

import pytest
import torch
from torch.nn.parameter import UninitializedParameter

import convcast.models.fc_lstm  # noqa: F401  registers fc_lstm
from convcast.models import create_model
from convcast.models.fc_lstm import FCLSTMLayer

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("fc_lstm", **{"hidden_sizes": (16, 12), **kw})


def _x(b: int = 2, t: int = 3, c: int = 1, size: int = 8) -> torch.Tensor:
    return torch.rand(b, t, c, size, size, generator=torch.Generator().manual_seed(1))


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_layer_step_matches_hand_computation():
    layer = FCLSTMLayer(1, 1, peephole=True)
    wx, wh, b, wc = [0.5, -0.3, 0.8, 1.2], [0.1, 0.4, -0.6, 0.7], [0.05, 1.0, -0.1, 0.2], \
        [0.25, -0.5, 0.75]  # gate order (i, f, o, g); peepholes (i, f, o)
    with torch.no_grad():
        layer.w_x.copy_(torch.tensor(wx).view(4, 1))
        layer.w_h.copy_(torch.tensor(wh).view(4, 1))
        layer.bias.copy_(torch.tensor(b))
        layer.w_c.copy_(torch.tensor(wc).view(3, 1))
    x, h0, c0 = 0.7, -0.2, 0.4
    i = _sig(wx[0] * x + wh[0] * h0 + wc[0] * c0 + b[0])
    f = _sig(wx[1] * x + wh[1] * h0 + wc[1] * c0 + b[1])
    g = math.tanh(wx[3] * x + wh[3] * h0 + b[3])
    c1 = f * c0 + i * g
    o = _sig(wx[2] * x + wh[2] * h0 + wc[2] * c1 + b[2])
    h, c = layer.step(layer.input_gates(torch.tensor([[x]])), (torch.tensor([[h0]]),
                                                               torch.tensor([[c0]])))
    assert h.item() == pytest.approx(o * math.tanh(c1), abs=1e-6)
    assert c.item() == pytest.approx(c1, abs=1e-6)
    assert torch.equal(FCLSTMLayer(3, 4).bias, torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8))


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("t_in,horizon", [(1, 1), (3, 4)])
def test_shape_any_horizon_no_nan(conditional, t_in, horizon):
    model = _model(conditional=conditional, in_channels=2).eval()
    with torch.no_grad():
        y = model(_x(t=t_in, c=2), horizon)
    assert y.shape == (2, horizon, 2, 8, 8)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("conditional", [False, True])
def test_gradients_reach_every_parameter(conditional):
    model = _model(conditional=conditional, frame_size=(8, 8)).train()
    x = _x().requires_grad_()
    model(x, 3).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"
    assert (x.grad[:, 0].abs().sum() > 0)  # the first input frame reaches the forecast


def test_lazy_frame_size_is_fixed_by_the_first_call():
    model = _model()
    assert isinstance(model.readout_w, UninitializedParameter)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # built before sizing, as Lightning does
    x = _x(size=8)
    loss = model(x, 2).pow(2).mean()
    assert model.readout_w.shape == (64, 12) and model.encoder[0].w_x.shape == (4 * 16, 64)
    loss.backward()
    before = model.readout_w.detach().clone()
    opt.step()
    assert not torch.equal(before, model.readout_w)  # the optimizer holds the sized weights
    with pytest.raises(ValueError, match=r"8×8 frames .* got 10×10.*frame_size=\(10, 10\)"):
        model(_x(size=10), 1)
    fixed = _model(frame_size=(8, 12))
    with pytest.raises(ValueError, match="8×12"):
        fixed(x, 1)


def test_state_dict_loads_into_a_lazy_model():
    trained = _model(conditional=True).eval()
    x = _x()
    with torch.no_grad():
        want = trained(x, 3)
    fresh = _model(conditional=True).eval()
    fresh.load_state_dict(trained.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x, 3), want)
    with pytest.raises(ValueError, match="8×8"):
        fresh(_x(size=4), 1)


def test_teacher_forcing_only_when_conditional():
    model = _model(conditional=True).eval()
    x, teacher = _x(), torch.rand(2, 4, 1, 8, 8)
    with torch.no_grad():
        free, forced = model(x, 4), model(x, 4, teacher=teacher)
        masked = model(x, 4, teacher=teacher, teacher_mask=torch.zeros(2, 3, dtype=torch.bool))
    assert model.autoregressive and not _model().autoregressive
    assert torch.allclose(forced[:, 0], free[:, 0]) and not torch.allclose(forced, free)
    assert torch.allclose(masked, free, atol=1e-6)
    with pytest.raises(ValueError, match="conditional=True"):
        _model()(x, 2, teacher=teacher)


def test_paper_size():
    # Shi et al. 2015, table 1: FC-LSTM-2048-2048 on 64×64 Moving MNIST has 142,667,776 weights
    with torch.device("meta"):
        m = create_model("fc_lstm", hidden_sizes=(2048, 2048), frame_size=(64, 64),
                         peephole=True)
    assert sum(p.numel() for p in m.parameters()) == 142_667_776


def test_lazy_model_trains_in_lightning():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from convcast.train import ForecastSystem

    system = ForecastSystem(model_name="fc_lstm", model_kwargs={"hidden_sizes": (8,)})
    data = TensorDataset(torch.rand(4, 2, 1, 8, 8), torch.rand(4, 2, 1, 8, 8))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    trainer.fit(system, DataLoader(data, batch_size=2))  # summary and optimizer see lazy weights
    assert trainer.global_step == 2 and system.model.readout_w.shape == (64, 8)
    assert system.model.frame_hw.tolist() == [8, 8]

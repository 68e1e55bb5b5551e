"""Gradient checkpointing over time steps: exact outputs and gradients, a fraction of the memory."""

import pytest
import torch

from convcast.layers import ConvLSTM, set_checkpointing
from convcast.models import create_model, list_models, model_info
from convcast.train import ForecastSystem
from convcast.train.precision import peak_memory

pytestmark = pytest.mark.usefixtures("one_thread")

NO_CELLS = {"fc_lstm"}  # fully connected layers, no convolutional cell to checkpoint


def _loss_and_grads(model: torch.nn.Module, x: torch.Tensor, horizon: int):
    model.zero_grad(set_to_none=True)
    y = model(x, horizon)  # [B, horizon, C, H, W]
    loss = y.pow(2).mean() + sum(getattr(model, "extra_losses", dict)().values())
    loss.backward()
    return y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                        if p.grad is not None}


@pytest.mark.parametrize("name", list_models(baselines=False))
def test_checkpointed_steps_give_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, **model_info(name).tiny).train()
    x = torch.rand(2, 3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y_plain, g_plain = _loss_and_grads(model, x, 4)
    cells = set_checkpointing(model, True)
    assert cells > 0 or name in NO_CELLS, f"{name} has no checkpointable cell"
    y_ckpt, g_ckpt = _loss_and_grads(model, x, 4)
    assert torch.allclose(y_ckpt, y_plain, atol=1e-6)
    assert g_ckpt.keys() == g_plain.keys()
    for n, g in g_plain.items():
        assert torch.allclose(g_ckpt[n], g, atol=1e-6, rtol=1e-5), n
    assert set_checkpointing(model, False) == cells


def test_checkpointing_is_idle_without_a_graph():
    m = ConvLSTM(1, [4, 4], 3, 2)
    x = torch.randn(2, 5, 1, 8, 8)
    with torch.no_grad():
        (plain,), _ = m(x)
        set_checkpointing(m)
        (ckpt,), _ = m(x)
    assert torch.equal(plain, ckpt)


def _train_peak(model: torch.nn.Module, x: torch.Tensor, horizon: int) -> int:
    def step() -> None:
        model(x, horizon).pow(2).mean().backward()

    step()  # warm-up; then free the gradients outside the measurement, so that it counts them
    model.zero_grad(set_to_none=True)
    return peak_memory(step)


def test_long_rollout_trains_in_a_fraction_of_the_memory():
    """10 -> 40 frames: the plain step keeps every step's gates, the checkpointed one its states
    (43% here; 37% at 64x64, batch 4, 10 -> 90, benchmarks/RESULTS.md). Allocation sizes do not
    depend on the machine's speed, so the ratio is exact."""
    torch.manual_seed(0)
    model = create_model("encoder_forecaster_demo").train()
    x = torch.rand(2, 10, 1, 32, 32)
    plain = _train_peak(model, x, 40)
    set_checkpointing(model)
    ckpt = _train_peak(model, x, 40)
    assert ckpt < 0.5 * plain, (ckpt, plain)


def test_system_flag_switches_the_cells_and_warns_where_there_are_none():
    system = ForecastSystem("encoder_forecaster_demo", gradient_checkpointing=True)
    assert all(c.checkpointing for c in system.model.modules() if hasattr(c, "checkpointing"))
    assert ForecastSystem("next_frame").model.rnn.cells[0].checkpointing is False
    with pytest.warns(UserWarning, match="no recurrent cell"):
        ForecastSystem("fc_lstm", {"frame_size": [16, 16]}, gradient_checkpointing=True)

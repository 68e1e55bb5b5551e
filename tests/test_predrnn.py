"""PredRNN and PredRNN-v2: the forecaster contract, the zigzag memory, the decoupling loss."""

import copy

import pytest
import torch

import convcast.models.predrnn  # noqa: F401  registers predrnn, predrnn_v2
from convcast.models import create_model
from convcast.models.predrnn import decoupling_loss

NAMES = ["predrnn", "predrnn_v2"]


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_channels=8, num_layers=3, kernel_size=3, patch_size=2)


def _model(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**TINY, **kw})


def _x(b: int = 2, t: int = 3, c: int = 1, size: int = 8) -> torch.Tensor:
    return torch.rand(b, t, c, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t_in,horizon", [(1, 1), (3, 1), (3, 4), (2, 6)])
def test_shape_any_horizon_no_nan(name, t_in, horizon):
    model = _model(name).eval()
    with torch.no_grad():
        y = model(_x(t=t_in), horizon)
    assert y.shape == (2, horizon, 1, 8, 8)
    assert torch.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()  # sigmoid head


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter_through_the_training_loss(name):
    model = _model(name, in_channels=2, output_activation="identity").train()
    y = model(_x(c=2), 3)
    loss = y.pow(2).mean() + sum(model.extra_losses().values())
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_layer_norm_model_runs_on_any_frame_size(name):
    model = _model(name, layer_norm=True).eval()
    for size in (8, 12):
        assert model(_x(size=size), 2).shape == (2, 2, 1, size, size)


def test_zigzag_memory_path():
    """M enters layer 0 at step t + 1 from the top layer at step t, and climbs layer by layer."""
    model = _model("predrnn").eval()
    seen = []  # (layer, m_in, m_out) in call order

    def hook(layer):
        def record(module, args, kwargs, out):
            m_in = args[3] if len(args) > 3 else kwargs["m"]
            seen.append((layer, m_in, out[2]))
        return record

    for i, cell in enumerate(model.cells):
        cell.register_forward_hook(hook(i), with_kwargs=True)
    t_in, horizon, L = 3, 2, len(model.cells)
    with torch.no_grad():
        model(_x(t=t_in), horizon)
    assert [s[0] for s in seen] == list(range(L)) * (t_in + horizon - 1)
    assert torch.equal(seen[0][1], torch.zeros_like(seen[0][1]))  # starts from zero memory
    for k in range(1, len(seen)):  # every cell reads exactly what the previous call wrote
        assert seen[k][1] is seen[k - 1][2]
        if seen[k][0] == 0:  # ... which for layer 0 is the top layer at the previous step
            assert seen[k - 1][0] == L - 1


def test_teacher_forcing_and_input_mask():
    model = _model("predrnn").eval()
    x, teacher = _x(t=4), torch.rand(2, 3, 1, 8, 8)
    with torch.no_grad():
        free = model(x, 3)
        forced = model(x, 3, teacher=teacher)
        assert torch.allclose(model(x, 3, input_mask=torch.ones(2, 3)), free, atol=1e-6)
        no_inputs = model(x, 3, input_mask=torch.zeros(2, 3, dtype=torch.bool))
        x2 = x.clone()
        x2[:, 1:] = torch.rand_like(x2[:, 1:])  # only frame 0 is ever read with an all-0 mask
        assert torch.allclose(model(x2, 3, input_mask=torch.zeros(2, 3)), no_inputs, atol=1e-6)
        one_off = torch.ones(2, 3)
        one_off[0, 1] = 0  # sample 0 predicts its input frame 2 instead of reading it
        part = model(x2, 3, input_mask=one_off)
    assert torch.allclose(forced[:, 0], free[:, 0], atol=1e-6)
    assert not torch.allclose(forced[:, 1:], free[:, 1:])
    assert not torch.allclose(no_inputs, free)
    x3 = x2.clone()
    x3[0, 2] = 0.5  # a frame sample 0 does not read
    with torch.no_grad():
        assert torch.allclose(model(x3, 3, input_mask=one_off)[0], part[0], atol=1e-6)
    with pytest.raises(ValueError, match="input_mask"):
        model(x, 3, input_mask=torch.ones(2, 4))


def test_decoupling_loss_zero_when_orthogonal_and_grows_with_alignment():
    a = torch.zeros(2, 3, 4, 4)
    a[..., :2] = torch.rand(2, 3, 4, 2) + 0.1  # left half
    b = torch.zeros(2, 3, 4, 4)
    b[..., 2:] = torch.rand(2, 3, 4, 2) + 0.1  # right half: orthogonal to `a` in every channel
    assert decoupling_loss(a, b).item() == pytest.approx(0.0, abs=1e-7)
    ua = a / a.flatten(2).norm(dim=2)[..., None, None]
    ub = b / b.flatten(2).norm(dim=2)[..., None, None]
    losses = [decoupling_loss(a, torch.cos(th) * ua + torch.sin(th) * ub).item()
              for th in torch.linspace(torch.pi / 2, 0, 6)]
    assert losses == sorted(losses) and losses[0] < 1e-6
    assert losses[-1] == pytest.approx(1.0)
    assert decoupling_loss(a, -2 * a).item() == pytest.approx(1.0)  # |cos|: anti-parallel counts


def test_extra_losses_only_after_training_forward():
    v2 = _model("predrnn_v2", decouple_beta=0.5).train()
    x = _x()
    v2(x, 2)
    extra = v2.extra_losses()
    assert set(extra) == {"decouple"}
    assert 0 < extra["decouple"].item() <= 0.5 and extra["decouple"].requires_grad
    copy.deepcopy(v2)  # the stored graph is not part of the model's state
    v2.eval()
    assert v2.extra_losses() == {}
    with torch.no_grad():
        v2(x, 2)
    assert v2.train().extra_losses() == {}  # the last forward was in eval mode
    zero = _model("predrnn_v2", decouple_beta=0.0).train()
    zero(x, 2)
    assert zero.extra_losses() == {}
    v1 = _model("predrnn").train()
    v1(x, 2)
    assert v1.extra_losses() == {}


def test_context_loss_is_the_mse_of_the_input_frame_predictions():
    model = _model("predrnn", context_weight=2.0).train()
    x = _x(t=4)
    model(x, 2)
    got = model.extra_losses()["context"]
    with torch.no_grad():  # reading the inputs = a teacher-forced rollout from the first frame
        pred = model(x[:, :1], 3, teacher=x[:, 1:])
    assert got.item() == pytest.approx(2.0 * torch.mean((pred - x[:, 1:]) ** 2).item(), rel=1e-5)


def test_paper_size_and_bad_arguments():
    # PredRNN (Wang et al. 2017), Moving MNIST: 4 layers × 128, 5×5 kernels, patch 4: 23.8M
    with torch.device("meta"):
        m = create_model("predrnn", hidden_channels=128, num_layers=4, kernel_size=5,
                         patch_size=4)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 1) == 23.8
    with pytest.raises(ValueError, match="same width"):
        create_model("predrnn", hidden_channels=[64, 32])
    with pytest.raises(ValueError, match="patch_size"):  # encode alone does not pad
        _model("predrnn", patch_size=4).encode(_x(size=6))
    assert _model("predrnn", patch_size=4)(_x(size=6), 1).shape[-2:] == (6, 6)  # a call pads
    with pytest.raises(ValueError, match="decouple_beta"):
        create_model("predrnn_v2", decouple_beta=-1)

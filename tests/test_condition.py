"""Condition frames per lead time: every learned forecaster reads `condition[:, k]` for frame k."""

import pytest
import torch

from convcast.models import create_model, is_baseline, list_models, model_info

pytestmark = pytest.mark.usefixtures("one_thread")

T_IN, SIZE, H = 3, 16, 4
# every learned forecaster that is built from its own layers (a wrapper may make its own condition)
LEARNED = [n for n in list_models(baselines=False) if model_info(n).conditionable]
BASELINES = [n for n in list_models() if is_baseline(n)]


def test_the_core_models_take_condition_frames():
    assert {"encoder_forecaster", "seq2seq", "next_frame", "predrnn", "fc_lstm"} <= set(LEARNED)


def _build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**model_info(name).tiny, "condition_channels": 1, **kw}).eval()


def _rand(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", LEARNED)
def test_condition_is_read_at_its_own_lead_time(name):
    model = _build(name)
    assert model.condition_channels == 1
    x, cond = _rand(2, T_IN, 1, SIZE, SIZE), _rand(2, H, 1, SIZE, SIZE, seed=2)
    with torch.no_grad():
        y = model(x, H, condition=cond)
        other = cond.clone()
        other[:, 2] = 1 - other[:, 2]  # change lead time 2 only
        y2 = model(x, H, condition=other)
    assert y.shape == (2, H, 1, SIZE, SIZE) and torch.isfinite(y).all()
    assert torch.equal(y[:, :2], y2[:, :2])  # earlier lead times never see condition[:, 2]
    assert not torch.allclose(y[:, 2], y2[:, 2])  # ... and lead time 2 does


@pytest.mark.parametrize("name", LEARNED)
def test_condition_longer_than_horizon_is_cut(name):
    model = _build(name)
    x, cond = _rand(1, T_IN, 1, SIZE, SIZE), _rand(1, H + 3, 1, SIZE, SIZE, seed=2)
    with torch.no_grad():
        assert torch.equal(model(x, H, condition=cond), model(x, H, condition=cond[:, :H]))


@pytest.mark.parametrize("name", LEARNED)
def test_condition_errors_are_clear(name):
    model = _build(name)
    x = _rand(2, T_IN, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="condition_channels=1 and needs condition frames"):
        model(x, H)
    with pytest.raises(ValueError, match=r"condition must be \[B=2, horizon=4"):
        model(x, H, condition=_rand(2, H - 1, 1, SIZE, SIZE))  # too few lead times
    with pytest.raises(ValueError, match=r"condition must be \[B=2"):
        model(x, H, condition=_rand(1, H, 1, SIZE, SIZE))  # wrong batch
    with pytest.raises(ValueError, match=r"condition must be \[B=2"):
        model(x, H, condition=_rand(2, H, 1, SIZE // 2, SIZE // 2))  # wrong frame size
    with pytest.raises(ValueError, match="condition_channels must be an int >= 0"):
        create_model(name, condition_channels=-1)
    plain = create_model(name, **model_info(name).tiny).eval()
    assert plain.condition_channels == 0
    with pytest.raises(ValueError, match="condition_channels=0"):
        plain(x, H, condition=_rand(2, H, 1, SIZE, SIZE))


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_read_no_condition(name):
    model = create_model(name)
    assert model.condition_channels == 0
    x = _rand(1, T_IN, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="reads no condition frames"):
        model(x, 2, condition=_rand(1, 2, 1, SIZE, SIZE))


@pytest.mark.parametrize("name", ["seq2seq", "next_frame", "predrnn"])
def test_shared_cell_models_need_as_many_condition_channels_as_frames(name):
    """Their cells read observed frames too, with the frame itself as its condition frame."""
    with pytest.raises(ValueError, match="own condition frame"):
        _build(name, in_channels=2, condition_channels=1)
    model = _build(name, in_channels=2, condition_channels=2)
    y = model(_rand(1, T_IN, 2, SIZE, SIZE), 2, condition=_rand(1, 2, 2, SIZE, SIZE))
    assert y.shape == (1, 2, 2, SIZE, SIZE)


def test_encoder_forecaster_without_feedback_reads_only_the_condition():
    model = _build("encoder_forecaster", patch_size=4)
    assert model.forecaster[0].in_channels == 16  # 1 condition channel × patch 4²
    fed = _build("encoder_forecaster", feedback=True, condition_channels=3, in_channels=2,
                 patch_size=4)
    assert fed.forecaster[0].in_channels == (2 + 3) * 16
    y = fed(_rand(1, T_IN, 2, SIZE, SIZE), 2, condition=_rand(1, 2, 3, SIZE, SIZE))
    assert y.shape == (1, 2, 2, SIZE, SIZE)


def test_condition_works_with_teacher_forcing_and_training():
    model = _build("predrnn_v2", context_weight=0.5).train()
    x, cond = _rand(2, T_IN, 1, SIZE, SIZE), _rand(2, H, 1, SIZE, SIZE, seed=2)
    y = model(x, H, teacher=_rand(2, H, 1, SIZE, SIZE, seed=3), condition=cond,
              input_mask=torch.ones(2, T_IN - 1))
    (y.mean() + sum(model.extra_losses().values())).backward()
    assert set(model.extra_losses()) == {"decouple", "context"}
    assert all(p.grad is not None for p in model.parameters())

"""Scheduled and reverse scheduled sampling: schedules, masks, and training through the system."""

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import convcast.models.fc_lstm  # registers fc_lstm
import convcast.models.predrnn  # noqa: F401  registers predrnn, predrnn_v2
from convcast.models import Forecaster
from convcast.train import ForecastSystem
from convcast.train.sampling import ReverseScheduledSampling, Sampling, ScheduledSampling

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("step,want", [(0, 1.0), (25, 0.75), (100, 0.0), (400, 0.0)])
def test_linear_schedule(step, want):
    assert ScheduledSampling("linear", decay_steps=100).probability(step) == pytest.approx(want)


def test_floor_and_exponential_and_inverse_sigmoid_by_hand():
    assert ScheduledSampling("linear", decay_steps=100, end=0.1).probability(95) == 0.1
    exp = ScheduledSampling("exponential", k=0.5)
    assert [exp.probability(i) for i in (0, 1, 3)] == [1.0, 0.5, 0.125]
    sig = ScheduledSampling("inverse_sigmoid", k=10.0)
    assert sig.probability(0) == pytest.approx(10 / 11)
    assert sig.probability(10) == pytest.approx(10 / (10 + math.e))
    assert sig.probability(10**7) == 0.0  # no overflow far out
    # defaults: both reach 0.01 at decay_steps, and decrease monotonically
    for schedule in ("exponential", "inverse_sigmoid"):
        s = ScheduledSampling(schedule, decay_steps=5000)
        assert s.probability(5000) == pytest.approx(0.01)
        ps = [s.probability(i) for i in range(0, 10000, 500)]
        assert ps == sorted(ps, reverse=True) and ps[0] > 0.99


def test_reverse_schedule_by_hand():
    rss = ReverseScheduledSampling(r_sampling_step_1=100, r_sampling_step_2=200, r_exp_alpha=50)
    assert [rss.input_probability(i) for i in (0, 99, 200, 1000)] == [0.5, 0.5, 1.0, 1.0]
    assert rss.input_probability(150) == pytest.approx(1 - 0.5 * math.exp(-1))
    assert [rss.probability(i) for i in (0, 99, 150, 200, 1000)] == [0.5, 0.5, 0.25, 0.0, 0.0]
    lin = ReverseScheduledSampling(100, 200, input_schedule="linear")
    assert lin.input_probability(150) == pytest.approx(0.75)


def test_mask_shapes_and_frequencies():
    torch.manual_seed(0)
    m = ScheduledSampling("linear", decay_steps=100).masks(30, 4000, 5, 11, "cpu")
    assert set(m) == {"teacher_mask"}
    assert m["teacher_mask"].shape == (4000, 10) and m["teacher_mask"].dtype == torch.bool
    assert m["teacher_mask"].float().mean().item() == pytest.approx(0.7, abs=0.01)  # 6 sigma
    assert m["teacher_mask"].float().mean(0).std() > 0  # drawn per frame, not once per batch
    assert m["teacher_mask"].float().mean(1).std() > 0  # and per sample
    r = ReverseScheduledSampling(100, 200, r_exp_alpha=50).masks(150, 4000, 10, 1)
    assert r["teacher_mask"].shape == (4000, 0)  # horizon 1 feeds nothing back
    assert r["input_mask"].shape == (4000, 9)
    assert r["input_mask"].float().mean().item() == pytest.approx(1 - 0.5 * math.exp(-1),
                                                                   abs=0.01)
    assert isinstance(r, dict) and issubclass(ReverseScheduledSampling, Sampling)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="valid: linear, exponential, inverse_sigmoid"):
        ScheduledSampling("cosine")
    with pytest.raises(ValueError, match="0 < k < 1"):
        ScheduledSampling("exponential", k=1.5)
    with pytest.raises(ValueError, match="r_sampling_step_1 < r_sampling_step_2"):
        ReverseScheduledSampling(50, 10)
    with pytest.raises(ValueError, match="valid: exponential, linear"):
        ReverseScheduledSampling(input_schedule="step")


class _Spy(Forecaster):
    """An autoregressive stand-in that records the keyword arguments it is called with."""

    autoregressive = True

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.w, self.calls = 1, torch.nn.Parameter(torch.ones(())), []

    def forward(self, x, horizon, **kwargs):
        self.calls.append((self.training, {k: v.shape for k, v in kwargs.items()}))
        return self.w * x[:, -1:].expand(-1, horizon, -1, -1, -1)


def _loader(t_in: int = 3, t_out: int = 3, size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(8, t_in, 1, size, size, generator=g),
                         torch.rand(8, t_out, 1, size, size, generator=g))
    return DataLoader(data, batch_size=4)


def _fit(system: ForecastSystem, steps: int = 2) -> L.Trainer:
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
                        val_check_interval=steps)
    trainer.fit(system, _loader(), _loader())
    return trainer


def test_system_passes_masks_in_training_only():
    spy = _Spy()
    _fit(ForecastSystem(model=spy, sampling=ReverseScheduledSampling(1, 2)))
    train = [kw for training, kw in spy.calls if training]
    evals = [kw for training, kw in spy.calls if not training]
    assert len(train) == 2 and evals and all(kw == {} for kw in evals)
    assert train[0] == {"teacher_mask": (4, 2), "input_mask": (4, 2), "teacher": (4, 3, 1, 8, 8)}


@pytest.mark.parametrize("name,kwargs,sampling", [
    ("seq2seq", {"nf": 4}, ScheduledSampling("linear", decay_steps=10)),
    ("next_frame", {"hidden_channels": 4}, ScheduledSampling("exponential", decay_steps=10)),
    ("encoder_forecaster", {"hidden_channels": (4, 4), "kernel_size": 3, "patch_size": 2,
                            "feedback": True}, ScheduledSampling("inverse_sigmoid", k=2.0)),
    ("predrnn", {"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2},
     ScheduledSampling()),
    ("predrnn_v2", {"hidden_channels": 4, "num_layers": 2, "kernel_size": 3, "patch_size": 2,
                    "context_weight": 1.0}, ReverseScheduledSampling(1, 3, r_exp_alpha=1.0)),
    ("fc_lstm", {"hidden_sizes": (8,), "conditional": True, "frame_size": (8, 8)},
     ScheduledSampling()),
])
def test_autoregressive_models_train_with_sampling(name, kwargs, sampling):
    torch.manual_seed(0)
    system = ForecastSystem(model_name=name, model_kwargs=kwargs, sampling=sampling)
    before = [p.detach().clone() for p in system.parameters()]
    trainer = _fit(system)
    assert trainer.global_step == 2
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/mse"])
    if name == "predrnn_v2":
        assert {"train/decouple", "train/context"} <= set(metrics)
    moved = [not torch.equal(a, b) for a, b in zip(before, system.parameters(), strict=True)]
    assert all(moved), "every parameter should take an optimizer step"


def test_reverse_sampling_with_a_model_that_reads_no_input_mask_names_those_that_do():
    system = ForecastSystem("encoder_forecaster", {"hidden_channels": [4], "kernel_size": 3,
                                                   "patch_size": 2, "feedback": True},
                            sampling=ReverseScheduledSampling(1, 2))
    with pytest.raises(ValueError, match="does not read the input_mask.*predrnn, predrnn_pp"):
        _fit(system)

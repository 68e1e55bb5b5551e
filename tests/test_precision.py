"""Precision and thread count chosen by probes; the timing and memory helpers behind them.

No test asserts a speed: which choice a probe makes depends on the machine and its load, so the
tests check the rules around the probe (when it is skipped, what it reports, that it leaves the
model untouched)."""

import pytest
import torch

from convcast.models import create_model
from convcast.train import precision

pytestmark = pytest.mark.usefixtures("one_thread")


def _model_and_batch():
    torch.manual_seed(0)
    model = create_model("encoder_forecaster", hidden_channels=[4], kernel_size=3, patch_size=2)
    return model, (torch.rand(2, 3, 1, 8, 8), torch.rand(2, 2, 1, 8, 8))


def test_cpu_info_names_the_speed_flags():
    info = precision.cpu_info()
    assert set(info["flags"]) <= set(precision.SPEED_FLAGS)
    assert info["logical_cores"] >= 1 and isinstance(info["model"], str)


def test_no_native_bf16_means_float32_without_a_probe(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    monkeypatch.setattr(precision, "interleaved_times", None)  # a probe would fail loudly
    model, batch = _model_and_batch()
    choice, why = precision.choose_precision(model, batch)
    assert choice == "32-true" and "not probed" in why


def test_native_bf16_is_probed_and_the_model_left_untouched(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    model, batch = _model_and_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    choice, why = precision.choose_precision(model, batch, budget_s=1.0)
    assert choice in ("32-true", "bf16-mixed") and "interleaved steps" in why
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_threads_follow_omp_num_threads_when_set(monkeypatch):
    model, batch = _model_and_batch()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n, why = precision.choose_threads(model, batch)
    assert n == torch.get_num_threads() and "OMP_NUM_THREADS" in why
    monkeypatch.delenv("OMP_NUM_THREADS")
    n, why = precision.choose_threads(model, batch, candidates=[1, 2], budget_s=1.0)
    assert n in (1, 2) and "in a probe" in why
    assert torch.get_num_threads() == 1  # the probe restores the thread count


def test_interleaved_times_alternate_and_stop_on_budget():
    order = []
    times = precision.interleaved_times({"a": lambda: order.append("a"),
                                         "b": lambda: order.append("b")}, rounds=3, warmup=1)
    assert order == ["a", "b"] * 4 and all(len(t) == 3 for t in times.values())
    slow = precision.interleaved_times({"a": lambda: None}, rounds=100, budget_s=0.0)
    assert len(slow["a"]) == 2  # at least two timed rounds, then the budget stops it
    with pytest.raises(ValueError, match="rounds"):
        precision.interleaved_times({"a": lambda: None}, rounds=0)
    r = precision.ratio_summary([2.0, 4.0, 3.0], [1.0, 1.0, 1.0])
    assert r == {"min": 2.0, "median": 3.0, "max": 4.0}


def test_train_step_updates_the_weights_and_peak_memory_counts_tensors():
    model, batch = _model_and_batch()
    step = precision.train_step(model, batch)
    before = [p.detach().clone() for p in model.parameters()]
    assert step() > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    # 4 MB allocated and freed inside: the peak sees them, whatever the machine
    assert precision.peak_memory(lambda: torch.ones(1024, 1024).sum()) >= 4 * 2**20

"""Streaming inference: a stream fed frame by frame forecasts what the model does on the window."""

import pytest
import torch

import convcast
from convcast.inference.stream import Stream, stream
from convcast.models import create_model, is_baseline, list_models, model_info

pytestmark = pytest.mark.usefixtures("one_thread")

T, SIZE, H = 5, 16, 3
CASES = [(n, {}) for n in list_models(baselines=False)] + [
    ("encoder_forecaster", {"feedback": True}), ("fc_lstm", {"conditional": True})]
RECURRENT = [(n, kw) for n, kw in CASES if model_info(n).recurrent]


def _model(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**model_info(name).tiny, **kw}).eval()


def _x(b: int = 2, t: int = T, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, t, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_the_recurrent_models_stream_from_their_state():
    """The registry says which models are recurrent; each of them has encode and decode."""
    assert {"encoder_forecaster", "predrnn", "fc_lstm"} <= {n for n, _ in RECURRENT}
    for name, kw in RECURRENT:
        assert hasattr(_model(name, **kw), "encode")


@pytest.mark.parametrize(("name", "kw"), RECURRENT)
def test_stream_equals_the_model_on_all_frames(name, kw):
    model, x = _model(name, **kw), _x()
    with torch.no_grad():
        want = model(x, H)  # [B, H, C, H, W]
    one = stream(model)
    for t in range(T):
        one.update(x[:, t:t + 1])
    chunks = stream(model).update(x[:, :2]).update(x[:, 2:])
    assert one.frames_seen == chunks.frames_seen == T
    for s in (one, chunks):
        got = s.forecast(H)
        assert got.is_inference()
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        torch.testing.assert_close(s.forecast(H), got, atol=0, rtol=0)  # state left as it was
    with torch.no_grad():
        later = model(torch.cat([x, _x(seed=2)[:, :1]], dim=1), 2)
    torch.testing.assert_close(one.update(_x(seed=2)[:, :1]).forecast(2), later, atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize(("name", "kw"), RECURRENT)
def test_state_dict_round_trip_and_reset(name, kw, tmp_path):
    model, x = _model(name, **kw), _x()
    s = stream(model).update(x[:, :3])
    torch.save(s.state_dict(), tmp_path / "state.pt")
    restored = stream(model)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.frames_seen == 3
    s.update(x[:, 3:])
    restored.update(x[:, 3:])
    torch.testing.assert_close(restored.forecast(H), s.forecast(H), atol=0, rtol=0)
    s.reset()
    assert s.frames_seen == 0
    with pytest.raises(ValueError, match="seen no frames"):
        s.forecast(H)
    with torch.no_grad():
        want = model(x[:, 3:], H)
    torch.testing.assert_close(s.update(x[:, 3:]).forecast(H), want, atol=1e-5, rtol=0)


def test_one_frame_of_one_stream_and_condition():
    model, x = _model("next_frame", condition_channels=1), _x(b=1)
    cond = _x(b=1, t=H, seed=3)
    s = stream(model)
    for t in range(T):
        s.update(x[0, t])  # [C, H, W]
    with torch.no_grad():
        want = model(x, H, condition=cond)
    torch.testing.assert_close(s.forecast(H, condition=cond), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="condition"):
        s.forecast(H)


@pytest.mark.parametrize("name", [n for n in list_models() if is_baseline(n)])
def test_baselines_stream_from_a_window_of_latest_frames(name):
    model, x = _model(name), _x(t=6)
    s = stream(model)
    assert s.kind == "window" and s.window == model.window
    for t in range(6):
        s.update(x[:, t:t + 1])
    with torch.no_grad():
        want = model(x[:, -model.window:], H)
    torch.testing.assert_close(s.forecast(H), want, atol=1e-6, rtol=0)
    assert s.state_dict()["frames"].shape[1] == model.window


def test_window_mode_for_a_recurrent_model_and_for_a_plain_module():
    model, x = _model("seq2seq"), _x(t=6)
    s = stream(model, window=3)
    for t in range(6):
        s.update(x[:, t:t + 1])
    with torch.no_grad():
        torch.testing.assert_close(s.forecast(H), model(x[:, -3:], H), atol=1e-6, rtol=0)

    class Plain(torch.nn.Module):  # a forecaster with neither a state nor a window
        def forward(self, x, horizon):
            return x[:, -1:].repeat(1, horizon, 1, 1, 1)

    with pytest.raises(ValueError, match="cannot stream.*window=T_in"):
        stream(Plain())
    assert stream(Plain(), window=2).update(x).forecast(2).shape == (2, 2, 1, SIZE, SIZE)


def test_stream_errors_are_clear():
    s = stream(_model("next_frame")).update(_x())
    with pytest.raises(ValueError, match=r"one frame \[C, H, W\] or frames \[B, k, C, H, W\]"):
        s.update(torch.rand(2, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="holds 2 stream.*reset"):
        s.update(torch.rand(1, 1, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="holds 2 stream.*1×16×16"):
        s.update(torch.rand(2, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="same model"):
        stream(_model("seq2seq")).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="window must be a positive int"):
        stream(_model("seq2seq"), window=0)


def test_stream_from_a_checkpoint_and_the_package_export(tmp_path):
    model = _model("encoder_forecaster")
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_name": "encoder_forecaster",
                                     "model_kwargs": model_info("encoder_forecaster").tiny},
                "convcast_data": {"input_frames": T, "output_frames": H}}, path)
    s = convcast.stream(path)
    assert isinstance(s, Stream) and s.info["input_frames"] == T
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(s.update(x).forecast(H), model(x, H), atol=1e-6, rtol=0)


def test_float64_frames_come_back_in_float64():
    model, x = _model("next_frame"), _x().double()
    y = stream(model).update(x).forecast(H)
    assert y.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(y, model(x.float(), H).double(), atol=1e-6, rtol=0)

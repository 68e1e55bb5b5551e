"""Generic tests over every registered forecaster, baselines included (the timm pattern)."""

import warnings

import pytest
import torch

import convcast
from convcast.models import create_model, is_baseline, list_models, model_info

T_IN, SIZE = 3, 16  # small frames keep the whole registry fast; 16 divides every patch size


def _build(name: str, in_channels: int = 1) -> torch.nn.Module:
    """The registry's tiny configuration of `name` (every model's entry names one)."""
    torch.manual_seed(0)
    return create_model(name, **{**model_info(name).tiny, "in_channels": in_channels})


def _input(b: int = 2, c: int = 1) -> torch.Tensor:
    return torch.rand(b, T_IN, c, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_registry_lists_the_core_models():
    names = list_models()
    assert {"encoder_forecaster", "seq2seq", "next_frame", "persistence", "blank"} <= set(names)
    assert names == convcast.list_models() == sorted(names)
    assert "persistence" not in list_models(baselines=False)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*persistence"):
        create_model("convlstm9000")
    with pytest.raises(ValueError, match="unknown model 'predrnpp'; did you mean 'predrnn_pp'"):
        create_model("predrnpp")
    with pytest.raises(TypeError, match="create_model\\('seq2seq'\\)"):
        create_model("seq2seq", no_such_argument=1)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("horizon", [1, 4])
def test_shape_any_horizon_no_nan(name, horizon):
    model = _build(name).eval()
    with torch.no_grad():
        y = model(_input(), horizon)
    assert y.shape == (2, horizon, 1, SIZE, SIZE)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", list_models())
def test_multichannel_input(name):
    model = _build(name, in_channels=2).eval()
    with torch.no_grad():
        y = model(_input(c=2), 2)
    assert y.shape == (2, 2, 2, SIZE, SIZE)


@pytest.mark.parametrize("name", list_models())
def test_wrong_input_is_refused_clearly(name):
    model = _build(name)
    with pytest.raises(ValueError, match="channels"):
        model(_input(c=3), 2)
    with pytest.raises(ValueError, match=r"\[B, T_in, C, H, W\]"):
        model(torch.rand(2, 1, SIZE, SIZE), 2)
    with pytest.raises(ValueError, match="horizon"):
        model(_input(), 0)


@pytest.mark.parametrize("name", list_models(baselines=False))
def test_gradients_flow_to_every_parameter(name):
    model = _build(name).train()
    loss = model(_input(), 3).pow(2).mean()
    (loss + sum(getattr(model, "extra_losses", dict)().values())).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f"no finite gradient for {missing}"
    assert sum(p.grad.abs().sum() for p in model.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("name", [n for n in list_models() if is_baseline(n)])
def test_baselines_have_nothing_to_train(name):
    assert sum(p.numel() for p in _build(name).parameters()) == 0


@pytest.mark.parametrize("name", list_models(baselines=False))
def test_first_frames_do_not_depend_on_later_horizon(name):
    """A longer rollout extends a shorter one: frame k never looks at frames after k."""
    model = _build(name).eval()
    with torch.no_grad():
        short, long = model(_input(), 2), model(_input(), 5)
    assert torch.allclose(short, long[:, :2], atol=1e-5)


AUTOREGRESSIVE = [n for n in list_models(baselines=False)
                  if getattr(_build(n), "autoregressive", False)]


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_teacher_forcing_feeds_true_frames(name):
    model = _build(name).eval()
    x = _input()
    teacher = torch.rand(2, 4, 1, SIZE, SIZE)
    with torch.no_grad():
        free = model(x, 4)
        forced = model(x, 4, teacher=teacher)
        other = teacher.clone()
        other[:, 1] = 1 - other[:, 1]  # change the true frame 1 only
        forced2 = model(x, 4, teacher=other)
        none_masked = model(x, 4, teacher=teacher, teacher_mask=torch.zeros(2, 3, dtype=bool))
    assert torch.allclose(forced[:, 0], free[:, 0], atol=1e-6)  # the first frame sees no teacher
    assert not torch.allclose(forced[:, 1:], free[:, 1:])
    assert torch.allclose(forced2[:, :2], forced[:, :2], atol=1e-6)  # frame 1 feeds frame 2 on
    assert not torch.allclose(forced2[:, 2], forced[:, 2])
    assert torch.allclose(none_masked, free, atol=1e-6)  # an all-False mask is free running


def test_persistence_and_blank_values():
    x = _input()
    assert torch.equal(create_model("persistence")(x, 3), x[:, -1:].expand(-1, 3, -1, -1, -1))
    assert torch.equal(create_model("blank")(x, 2), torch.zeros(2, 2, 1, SIZE, SIZE))


def test_encoder_forecaster_matches_the_paper_size():
    # Shi et al. 2015, table 1: the 3-layer 128-64-64 network with 5×5 kernels has 7.585M weights
    m = create_model("encoder_forecaster", hidden_channels=[128, 64, 64], kernel_size=5,
                     patch_size=4)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 2) == 7.58


def test_encoder_forecaster_pads_frames_its_patch_does_not_divide():
    """A 18x18 frame with patch 4 is padded to 20x20 and the forecast cropped back; encode on
    its own (no padding) still says what is wrong."""
    m = create_model("encoder_forecaster", patch_size=4, hidden_channels=[4], kernel_size=3)
    assert m.size_multiple == 4
    with pytest.raises(ValueError, match="patch_size"):
        m.encode(torch.rand(1, 2, 1, 18, 18))
    x = torch.rand(1, 2, 1, 18, 18)
    with torch.no_grad():
        y = m(x, 3)
        padded = m(torch.nn.functional.pad(x[0], (0, 2, 0, 2), mode="reflect")[None], 3)
    assert y.shape == (1, 3, 1, 18, 18)
    torch.testing.assert_close(y, padded[..., :18, :18])


@pytest.mark.parametrize("name", [n for n in list_models() if _build(n).size_multiple > 1])
def test_frames_of_any_size_are_padded_and_cropped_back(name):
    """Every model with a patch forecasts frames whose sides the patch does not divide (e.g. a
    175x175 radar grid), at their own size, and streams them alike."""
    from convcast.inference import stream

    model = _build(name).eval()
    m = model.size_multiple
    x = torch.rand(2, T_IN, 1, 2 * m + 1, 3 * m - 1, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x, 2)
    assert y.shape == (2, 2, 1, *x.shape[-2:]) and torch.isfinite(y).all()
    if model_info(name).recurrent:
        torch.testing.assert_close(stream(model).update(x).forecast(2), y, atol=1e-5, rtol=0)


def test_variants_build_their_papers_sizes_and_accept_overrides():
    from convcast.models import list_variants, resolve

    assert set(list_variants()) <= set(list_models(variants=True))
    assert not set(list_variants()) & set(list_models())
    shi = create_model("encoder_forecaster_shi2015")
    assert sum(p.numel() for p in shi.parameters()) == 7_583_760  # table 1 of Shi et al.
    assert shi.model_spec["name"] == "encoder_forecaster"  # checkpoints need no variant table
    demo = create_model("encoder_forecaster_demo", in_channels=3)
    assert demo.model_spec["kwargs"] == {**resolve("encoder_forecaster_demo")[1], "in_channels": 3}
    with pytest.raises(ValueError, match="valid names: .*encoder_forecaster_demo"):
        create_model("encoder_forecaster_demo2")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_float64_and_bfloat16_inputs_are_computed_in_the_model_dtype(name, dtype):
    """Any float input works: the model computes in its own dtype and answers in the input's."""
    model = _build(name).eval()
    x = _input().to(dtype)
    with torch.no_grad():
        y = model(x, 2)
        want = model(x.float(), 2)
    assert y.dtype == dtype and y.shape == (2, 2, 1, SIZE, SIZE)
    torch.testing.assert_close(y.float(), want, atol=1e-2 if dtype == torch.bfloat16 else 1e-6,
                               rtol=0)


SIZES = {"patch_size": (0, -2), "hidden_channels": (0, [8, 0]), "hidden_sizes": (0,),
         "nf": (0,), "kernel_size": (-3, 0, 4), "num_layers": (0, -1), "in_channels": (0,)}


@pytest.mark.parametrize("name", list_models())
def test_nonsensical_sizes_are_refused_at_build_time(name):
    params = model_info(name).arguments
    tried = 0
    for arg, values in SIZES.items():
        if arg not in params:
            continue
        for value in values:
            with pytest.raises(ValueError, match=arg):
                create_model(name, **{arg: value})
            tried += 1
    assert tried  # every model has at least in_channels


@pytest.mark.parametrize("name", list_models())
def test_nonfinite_input_policy(name):
    model = _build(name).eval()
    x = _input()
    x[1, 1, 0, 3, 5] = float("nan")  # one NaN pixel
    assert model.nonfinite == "raise"
    with torch.no_grad():
        with pytest.raises(ValueError, match="NaN or infinite.*nonfinite"):
            model(x, 2)
        model.nonfinite = "warn"
        with pytest.warns(RuntimeWarning, match="NaN or infinite"):
            model(x, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model(x, 2)  # warned once per model
            model.nonfinite = "ignore"
            model(x, 2)
    with pytest.raises(ValueError, match="nonfinite must be one of raise, warn, ignore"):
        model.nonfinite = "skip"

"""`convcast export`: every learned forecaster as a file that runs without convcast, checked."""

import json

import pytest
import torch

from convcast.cli.export import FORMATS, export
from convcast.data.description import DataDescription
from convcast.data.normalize import Normalization
from convcast.models import create_model, list_models, model_info
from tests.conftest import cli

pytestmark = pytest.mark.usefixtures("one_thread")

T, H, SIZE = 3, 2, 8
FORECASTERS = list_models()
EXPORTABLE = {fmt: [n for n in FORECASTERS if fmt in model_info(n).export] for fmt in FORMATS}
REFUSED = [(n, fmt) for n in FORECASTERS for fmt in FORMATS if fmt not in model_info(n).export]


def checkpoint(path, name: str, **kw):
    """A checkpoint as `convcast fit` writes it (weights, model spec, data description) of the
    registry's tiny configuration of `name`."""
    torch.manual_seed(0)
    kw = {**model_info(name).tiny, **kw}
    model = create_model(name, **kw).eval()
    with torch.no_grad():  # sizes fc_lstm's lazy layers
        model(torch.rand(1, T, 1, SIZE, SIZE), 1, **(
            {"condition": torch.rand(1, 1, 1, SIZE, SIZE)} if kw.get("condition_channels") else {}))
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model_name": name, "model_kwargs": kw},
                "convcast_data": DataDescription(
                    T, H, 1, (SIZE, SIZE), Normalization("minmax", 0.0, 255.0)).to_dict()},
               path)
    return model


def test_every_learned_recurrent_model_exports():
    """A new learned model is exported by default; one that cannot be says why in its entry."""
    for name in list_models(baselines=False):
        entry = model_info(name)
        assert set(entry.export) == set(FORMATS) or entry.export_note, name


@pytest.mark.parametrize(("name", "fmt"), REFUSED)
def test_models_that_cannot_export_are_refused_by_name(name, fmt, tmp_path):
    model = create_model(name, **model_info(name).tiny).eval()
    info = {"input_frames": T, "channels": 1, "frame_size": [SIZE, SIZE], "model_name": name}
    with pytest.raises(ValueError, match=f"model '{name}' cannot be exported as {fmt}"):
        export(None, fmt, H, tmp_path / "m.pt2", model=model, info=info)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("name", "fmt"), [(n, f) for f in ("onnx", "torchscript")
                                           for n in EXPORTABLE[f]])
def test_every_learned_model_exports_and_matches(name, fmt, tmp_path):
    model = checkpoint(tmp_path / "m.ckpt", name)
    out = tmp_path / f"m.{fmt}"
    meta = export(tmp_path / "m.ckpt", fmt, H, out)
    assert meta["max_abs_diff"] <= 1e-4
    side = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert side["inputs"]["x"] == ["batch", T, 1, SIZE, SIZE] and side["horizon"] == H
    assert side["data"]["normalization"] == {"kind": "minmax", "low": 0.0, "high": 255.0,
                                             "mean": 0.0, "std": 1.0}
    x = torch.rand(5, T, 1, SIZE, SIZE)  # a batch size the export never saw
    with torch.no_grad():
        want = model(x, H)
    if fmt == "onnx":
        import onnx
        import onnxruntime as ort

        props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(props["data"])["frame_size"] == [SIZE, SIZE]
        got = torch.from_numpy(ort.InferenceSession(str(out)).run(None, {"x": x.numpy()})[0])
    else:
        files = {"convcast.json": ""}
        got = torch.jit.load(str(out), _extra_files=files)(x)
        assert json.loads(files["convcast.json"])["input_frames"] == T
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["fc_lstm"])  # the model whose lazy sizes blocked export
def test_exported_program_runs_with_torch_alone(name, tmp_path):
    model = checkpoint(tmp_path / "m.ckpt", name)
    export(tmp_path / "m.ckpt", "exported-program", H, tmp_path / "m.pt2")
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.rand(4, T, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x, H), atol=1e-4, rtol=0)


def test_condition_frames_are_a_second_input(tmp_path):
    model = checkpoint(tmp_path / "m.ckpt", "encoder_forecaster", condition_channels=1)
    meta = export(tmp_path / "m.ckpt", "onnx", H, tmp_path / "m.onnx")
    assert meta["inputs"]["condition"] == ["batch", H, 1, SIZE, SIZE]
    import onnxruntime as ort

    x, cond = torch.rand(2, T, 1, SIZE, SIZE), torch.rand(2, H, 1, SIZE, SIZE)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(
        None, {"x": x.numpy(), "condition": cond.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x, H, condition=cond),
                                   atol=1e-4, rtol=0)


def test_the_command_prints_the_difference_and_refuses_bad_requests(tmp_path, capsys):
    checkpoint(tmp_path / "m.ckpt", "next_frame")
    cli("export", "--ckpt_path", tmp_path / "m.ckpt", "--format", "torchscript", "--horizon", 4,
        "--input_frames", 5, "--out", tmp_path / "out" / "m.ts")
    err = capsys.readouterr().err
    assert "max |exported - eager|" in err and (tmp_path / "out" / "m.ts.json").is_file()
    assert json.loads((tmp_path / "out" / "m.ts.json").read_text())["input_frames"] == 5
    with pytest.raises(ValueError, match="ending in .pt2"):
        export(tmp_path / "m.ckpt", "exported-program", 2, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="valid: " + ", ".join(FORMATS)):
        export(tmp_path / "m.ckpt", "tflite", 2, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="horizon"):
        export(tmp_path / "m.ckpt", "onnx", 0, tmp_path / "m.onnx")
    assert not list(tmp_path.glob("*.onnx*")) and not list(tmp_path.glob(".m*"))

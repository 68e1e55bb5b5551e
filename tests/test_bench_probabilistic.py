"""benchmarks/probabilistic.py as a smoke run (no score or time asserted): tiny untrained
checkpoints of the learned ensemble and the probability heads made here, one window per case,
two members, every archive cut to its central 128 x 128 raw pixels. On a tiny FMI-format archive
written here (always), and on the real KNMI composites of `$CONVCAST_RADAR_SAMPLES` (by default
the radar-samples folder beside the checkout) where they exist."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from datetime import datetime, timedelta
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from convcast.models import model_info
from convcast.train import ForecastSystem

pytest.importorskip("pysteps")
pytest.importorskip("pyproj")

from test_radar_archives import FMI_NAME, write_fmi_pgm  # after the skips: needs pyproj

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "probabilistic.py"
SAMPLES = Path(os.environ.get("CONVCAST_RADAR_SAMPLES", ROOT.parent / "shared" / "radar-samples"))
MODELS = {"anchored_ensemble": "ensemble", "steps": "ensemble", "optical_flow": "deterministic",
          "persistence": "deterministic", "exceedance_heads": "probability",
          "lagrangian_probability (slope 1)": "probability",
          "lagrangian_probability (slope 5)": "probability"}


def bench():
    spec = importlib.util.spec_from_file_location("convcast_bench_probabilistic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny anchored_ensemble and exceedance_heads checkpoints (optical-flow anchor, as the
    configs), each after one training step on random 16 x 16 frames."""
    folder = tmp_path_factory.mktemp("checkpoints")
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.rand(2, 5, 1, 16, 16, generator=g),
                                    torch.rand(2, 3, 1, 16, 16, generator=g)), batch_size=2)
    systems = {"ensemble": ForecastSystem("anchored_ensemble", {
                   **model_info("anchored_ensemble").tiny, "anchor": "optical_flow"},
                   loss="fair_crps", members=2),
               "heads": ForecastSystem("exceedance_heads", {
                   **model_info("exceedance_heads").tiny, "anchor": "optical_flow"},
                   loss="exceedance_bce")}
    paths = {}
    for name, system in systems.items():
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(system, data)
        paths[name] = folder / f"{name}.ckpt"
        trainer.save_checkpoint(paths[name])
    return paths


def fmi_like(samples: Path, frames: int = 18, size: int = 128) -> Path:
    """Both FMI events as gzipped PGMs: a rain cell (peak 45 dBZ) moving 2 pixels east and 1
    south per 5 minutes over `size` x `size` 1-km pixels, a corner outside the domain."""
    yy, xx = np.mgrid[:size, :size]
    for event in ("20160928", "20170509"):
        t0 = datetime.strptime(event, "%Y%m%d") + timedelta(hours=12)
        for t in range(frames):
            cy, cx = 40 + t, 30 + 2 * t
            dbz = 45 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 18.0 ** 2)) - 5
            levels = np.where(dbz > 5, 2 * dbz + 64, 0).round().clip(0, 254)
            levels[:16, -16:] = 255  # no data: outside the radar's domain
            when = t0 + timedelta(minutes=5 * t)
            write_fmi_pgm(samples / "fmi" / "pgm" / event / when.strftime(FMI_NAME), levels,
                          when)
    return samples


def run_smoke(tmp_path: Path, samples: Path, providers: list[str],
              checkpoints: dict[str, Path], capsys: pytest.CaptureFixture,
              extra: tuple[str, ...] = ()) -> dict:
    json_path, plots = tmp_path / "probabilistic.json", tmp_path / "plots"
    bench().main(["--smoke", "--samples", str(samples), "--providers", *providers,
                  "--ensemble", str(checkpoints["ensemble"]), "--heads",
                  str(checkpoints["heads"]), "--json", str(json_path), "--plots", str(plots),
                  *extra])
    out = json.loads(json_path.read_text())
    printed = capsys.readouterr().out
    assert "### Goal" in printed and "| crps" in printed
    assert (plots / "crps.png").is_file()
    for case, c in out["cases"].items():
        assert c["windows"] == 1 and c["grid"] == [32, 32]
        moved = {bench().UNMOVED: "ensemble"} if "--vel_pert" in extra else {}
        assert {k: m["kind"] for k, m in c["models"].items()} == {**MODELS, **moved}
        for name, m in c["models"].items():
            assert set(m["brier_skill_score"]) == {"0.5", "2", "5"}
            assert all(len(v) == 12 for v in m["brier_skill_score"].values())
            if m["kind"] != "probability":  # every forecast of values: its CRPS per lead time
                assert len(m["crps"]) == 12 and all(math.isfinite(v) for v in m["crps"]), name
        for name in ("anchored_ensemble", "steps"):
            m = c["models"][name]
            assert m["members"] == 2 and len(m["fair_crps"]) == 12
            assert len(m["rank_histogram"]) == 3 and sum(m["rank_histogram"]) == pytest.approx(1)
        t = c["timing"]
        assert set(t["median_seconds_per_member"]) == {"anchored_ensemble", "steps"}
        assert set(t["median_seconds_per_added_member"]) == {"anchored_ensemble", "steps"}
        assert c["lagrangian_probability"]["best_slope"] in ("1", "5")
        for kind in ("bss", "reliability", "rank"):
            assert (plots / f"{case}-{kind}.png").is_file()
    goal = out["goal"]
    assert set(goal) == {"crps", "bss", "reliability", "member_time", "added_member_time",
                         "pass"}
    for check in ("crps", "bss", "reliability", "member_time", "added_member_time"):
        assert set(goal[check]["cases"]) == set(out["cases"])
        assert isinstance(goal[check]["pass"], bool)
    assert set(goal["bss"]["cases"][next(iter(out["cases"]))]) == {"0.5", "2", "5"}
    run = out["run"]
    assert run["threads"] == 1 and len(run["load_before"]) == 3 and run["cpu"]["model"]
    return out


def test_smoke_run_on_a_tiny_fmi_archive(tmp_path, checkpoints, capsys):
    """With the motion perturbations on (in the archive's km and minutes), scored beside the
    same members unmoved."""
    out = run_smoke(tmp_path, fmi_like(tmp_path / "samples"), ["fmi"], checkpoints, capsys,
                    extra=("--vel_pert",))
    assert set(out["cases"]) == {"fmi-20160928", "fmi-20170509"}
    facts = out["run"]["checkpoints"]["anchored_ensemble"]["fmi"]
    assert facts["vel_pert_method"] == "bps"
    assert out["cases"]["fmi-20160928"]["windows_total"] == 2


def test_smoke_run_on_the_real_knmi_composites(tmp_path, checkpoints, capsys):
    if not (SAMPLES / "KNMI").is_dir():
        pytest.skip(f"the real radar samples are not here ({SAMPLES / 'KNMI'}); set "
                    "CONVCAST_RADAR_SAMPLES to the radar-samples folder to run this test")
    out = run_smoke(tmp_path, SAMPLES, ["knmi"], checkpoints, capsys)
    assert out["cases"]["knmi"]["windows_total"] == 76


def test_missing_checkpoint_and_archive_say_what_to_do(tmp_path, checkpoints):
    module = bench()
    with pytest.raises(SystemExit, match="not found: train one with `convcast fit"):
        module.main(["--ensemble", str(tmp_path / "none.ckpt"), "--heads",
                     str(checkpoints["heads"]), "--samples", str(tmp_path)])
    with pytest.raises(SystemExit, match="holds a 'exceedance_heads' model, not"):
        module.main(["--ensemble", str(checkpoints["heads"]), "--heads",
                     str(checkpoints["heads"]), "--samples", str(tmp_path)])
    with pytest.raises(SystemExit, match="knmi: no archive at"):
        module.main(["--smoke", "--providers", "knmi", "--ensemble",
                     str(checkpoints["ensemble"]), "--heads", str(checkpoints["heads"]),
                     "--samples", str(tmp_path), "--json", str(tmp_path / "p.json"),
                     "--plots", str(tmp_path / "plots")])


def test_a_folder_of_leave_one_provider_out_runs_scores_each_provider_by_its_own(
        tmp_path, checkpoints):
    """`--ensemble DIR`: provider P is forecast by DIR/lopo-P's checkpoint; a provider without
    a run says which command trains it."""
    import shutil

    module = bench()
    for provider, name in (("fmi", "ensemble"), ("knmi", "heads")):
        run = tmp_path / "runs" / f"lopo-{provider}" / "checkpoints"
        run.mkdir(parents=True)
        shutil.copy(checkpoints[name], run / "last.ckpt")
    model, facts = module.learned(tmp_path / "runs", module.ENSEMBLE, "fmi")
    assert type(model).__name__ == "AnchoredEnsemble" and not model.training
    assert facts["path"] == str(tmp_path / "runs" / "lopo-fmi" / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit, match="holds a 'exceedance_heads' model"):
        module.learned(tmp_path / "runs", module.ENSEMBLE, "knmi")
    with pytest.raises(SystemExit, match=r"no leave-bom-out run .*exclude '\[bom\]'"):
        module.learned(tmp_path / "runs", module.HEADS, "bom")

"""Anchored forecasters: an untrained one is its baseline; motion from workers and caches;
training through `convcast fit` and scoring with `convcast test --compare`; the radar losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIT_QUIET, cli
from torch.utils.data import DataLoader

from convcast.data import SyntheticRadar, SyntheticRadarDataModule
from convcast.data.motion import MotionDataModule, MotionDataset
from convcast.models import create_model
from convcast.motion import batch_motion, window_motion
from convcast.motion import estimate as motion_mod
from convcast.train.losses import get_loss

pytest.importorskip("pysteps")
BASE = {"hidden_channels": [4, 4], "kernel_size": 3, "patch_size": 2}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def radar() -> tuple[torch.Tensor, torch.Tensor]:
    ds = SyntheticRadar("test", 3, input_frames=4, output_frames=5, image_size=24)
    xs, ys = zip(*[ds[i] for i in range(3)], strict=True)
    return torch.stack(xs), torch.stack(ys)  # [3, 4, 1, 24, 24], [3, 5, 1, 24, 24]


def anchored(anchor: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("anchored", anchor=anchor, base_kwargs=BASE, **kwargs).eval()


@torch.no_grad()
def test_untrained_anchored_is_its_baseline(radar, one_thread) -> None:
    x, _ = radar
    assert torch.equal(anchored("persistence")(x, 5), create_model("persistence")(x, 5))
    flow = anchored("optical_flow")
    ref = create_model("optical_flow")(x, 5)  # pysteps motion and extrapolation, float64
    out = flow(x, 5)  # the same motion, torch extrapolation in float64, then float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert torch.equal(flow(x, 5, motion=batch_motion(x)), out)  # given or computed: one field
    assert flow(x, 9).shape == (3, 9, 1, 24, 24)  # any horizon


def test_correction_trains_and_stays_in_range(radar, one_thread) -> None:
    x, _ = radar
    y = (x[:, -1:] + 0.1).clamp(max=1).expand(-1, 5, -1, -1, -1)  # brighter than persistence
    model = anchored("persistence").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(5):
        loss = get_loss("mse")(model(x, 5), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first  # it moves away from the baseline where that helps
    assert all(p.grad is not None for p in model.net.parameters())
    with torch.no_grad():
        model.correction.bias.fill_(-5.0)  # push every pixel far below the valid range
        out = model(x, 5)
    assert out.min() == 0.0 and out.max() <= 1.0
    v = torch.zeros(3, requires_grad=True)
    from convcast.models.anchored import _StraightThroughClip

    _StraightThroughClip.apply(v - 1.0, 0.0, 1.0).sum().backward()
    assert torch.equal(v.grad, torch.ones(3))  # clipped, yet a gradient to climb back


def test_anchor_none_is_the_inner_model_and_bad_settings_are_named(radar) -> None:
    x, _ = radar
    plain = anchored("none")
    assert plain.correction is None and plain.net.condition_channels == 0
    torch.manual_seed(0)
    inner = create_model("encoder_forecaster", **BASE).eval()
    with torch.no_grad():
        assert torch.equal(plain(x, 3), inner(x, 3))
    with pytest.raises(ValueError, match="unknown anchor 'rover'"):
        create_model("anchored", anchor="rover")
    with pytest.raises(ValueError, match="base must be a learned forecaster"):
        create_model("anchored", base="persistence")
    with pytest.raises(ValueError, match="value_range"):
        create_model("anchored", value_range=[1, 0])
    with pytest.raises(ValueError, match=r"motion must be \[B, 2, H, W\]"):
        anchored("optical_flow")(x, 2, motion=torch.zeros(3, 2, 8, 8))


@torch.no_grad()
def test_untrained_motion_correction_is_the_baseline(radar, one_thread) -> None:
    x, _ = radar
    flow = anchored("optical_flow", motion_hidden=8)
    torch.testing.assert_close(flow(x, 5), create_model("optical_flow")(x, 5), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="corrects the motion of the optical_flow anchor"):
        create_model("anchored", anchor="persistence", motion_hidden=8)
    with pytest.raises(ValueError, match="motion_hidden must be an int >= 0"):
        create_model("anchored", anchor="optical_flow", motion_hidden=-1)
    with pytest.raises(ValueError, match="reads the last 3 frames"):
        flow(x[:, -2:], 5, motion=torch.zeros(3, 2, 24, 24))


def test_motion_correction_learns_a_missed_translation(one_thread) -> None:
    """Given motion 0 for a field that moves 1 px/step to the right, the correction (trained
    through the differentiable advection alone) finds the motion: the forecast error falls and
    the corrected motion points right."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blob = lambda cx: torch.exp(-((xx - cx) ** 2 + (yy - 7.5) ** 2) / 8)  # noqa: E731
    seq = torch.stack([blob(4.0 + t) for t in range(7)])[None, :, None]  # [1, 7, 1, 16, 16]
    x, y = seq[:, :4], seq[:, 4:]
    torch.manual_seed(0)
    model = create_model("anchored", anchor="optical_flow", motion_hidden=8,
                         base_kwargs={"hidden_channels": [4], "kernel_size": 3})
    opt = torch.optim.Adam(model.motion_net.parameters(), lr=3e-3)
    still = torch.zeros(1, 2, 16, 16)
    losses = []
    for _ in range(40):
        loss = ((model.anchor_forecast(x, 3, still) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    with torch.no_grad():
        v = model.motion_net(x[:, -3:], still)  # [1, 2, 16, 16]
    assert v[0, 0, 6:10, 4:12].mean() > 0.5  # x component near the blob: to the right


def test_lead_calibration_starts_as_identity_and_learns_a_map_per_lead(radar, one_thread
                                                                         ) -> None:
    """An untrained map changes nothing; trained on targets whose peaks shrink with the lead
    time, it learns each lead's map, stays monotone, and leaves low values as they were."""
    from convcast.models.anchored import LeadCalibration

    x, _ = radar
    with torch.no_grad():
        assert torch.equal(anchored("persistence", calibrate_leads=3)(x, 5),
                           create_model("persistence")(x, 5))
    cal = LeadCalibration(leads=2, low=0.0, high=1.0, segments=4)
    v = torch.rand(64, 2, 1, 4, 4)  # [B, 2 leads, C, H, W]
    shrink = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1, 1)
    target = torch.where(v > 0.5, 0.5 + (v - 0.5) * shrink, v)  # lead 2: upper half halved
    opt = torch.optim.Adam(cal.parameters(), lr=0.05)
    for _ in range(200):
        loss = ((cal(v) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(cal(v), target, atol=0.02, rtol=0)
    grid = torch.linspace(0, 1, 101).view(1, 1, 1, 1, 101).expand(1, 2, 1, 1, 101)
    with torch.no_grad():
        mapped = cal(grid)
        later = cal(v[:, [0, 1, 1]])  # a third lead, beyond the two learned
    assert (mapped.diff(dim=-1) >= 0).all()  # monotone at every lead
    assert torch.equal(later[:, 2], later[:, 1])  # a later lead uses the last lead's map
    with pytest.raises(ValueError, match="calibrate_leads must be an int >= 0"):
        create_model("anchored", calibrate_leads=-2)
    with pytest.raises(ValueError, match="calibrate_leads maps values over value_range"):
        create_model("anchored", calibrate_leads=3, value_range=None)


@pytest.mark.parametrize("anchor", ["persistence", "optical_flow"])
def test_activity_map_keeps_still_regions_at_the_anchor(anchor, one_thread) -> None:
    """No change in, no correction out: a biased correction moves nothing where the input frames
    are still (a black screen, a static background), and acts where they change."""
    model = create_model("anchored", anchor=anchor, outval="edge", activity=0.02,
                         base_kwargs=BASE)
    torch.nn.init.normal_(model.correction.weight)
    torch.nn.init.constant_(model.correction.bias, 0.3)  # a correction with a habit
    x = torch.full((2, 4, 1, 24, 24), 0.01)  # item 0: a still black screen
    for t in range(4):  # item 1: a square moving right by one pixel per frame
        x[1, t, 0, 4:10, 3 + t:9 + t] = 0.6
    motion = torch.zeros(2, 2, 24, 24)
    motion[:, 0] = 0.7  # a flow estimate that says everything moves, as an interpolated one may
    out = model(x, 3, motion=motion)
    assert torch.equal(out[0], x[0, -1:].expand(3, -1, -1, -1))  # exactly persistence
    assert torch.equal(out[1, :, :, 18:, :], x[1, -1:, :, 18:, :].expand(3, -1, -1, -1))
    assert (out[1, :, :, 4:10, 6:12] - x[1, -1, :, 4:10, 6:12]).abs().amax() > 0.1
    plain = create_model("anchored", anchor=anchor, outval="edge", base_kwargs=BASE)
    plain.load_state_dict(model.state_dict())
    assert not torch.equal(plain(x, 3, motion=motion)[0], out[0])  # the map is what held it
    with pytest.raises(ValueError, match="activity must be a number >= 0"):
        create_model("anchored", activity=-0.1, base_kwargs=BASE)
    with pytest.raises(ValueError, match="anchor 'none' has none"):
        create_model("anchored", anchor="none", activity=0.02, base_kwargs=BASE)


def test_motion_dataset_items_and_caches(tmp_path, monkeypatch, one_thread) -> None:
    ds = SyntheticRadar("val", 3, input_frames=4, output_frames=2, image_size=24)
    mem = MotionDataset(ds, memory_cache=True)
    item = mem[1]
    assert set(item) == {"x", "y", "motion"} and item["motion"].shape == (2, 24, 24)
    assert torch.equal(item["motion"], window_motion(ds[1][0]))
    disk = MotionDataset(ds, cache_dir=tmp_path / "cache")
    fields = [disk[i]["motion"] for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["0.npy", "1.npy", "2.npy"]

    def refuse(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(motion_mod, "estimate_motion", refuse)
    assert torch.equal(mem[1]["motion"], item["motion"])  # memory
    again = MotionDataset(ds, cache_dir=tmp_path / "cache")  # a later run: disk
    assert all(torch.equal(again[i]["motion"], f) for i, f in enumerate(fields))
    with pytest.raises(ValueError, match="unknown optical flow method"):
        MotionDataset(ds, method="rover")


def test_motion_datamodule_computes_in_workers(tmp_path, one_thread) -> None:
    inner = SyntheticRadarDataModule(batch_size=2, train_size=4, val_size=2, test_size=2,
                                     input_frames=3, output_frames=2, image_size=16)
    dm = MotionDataModule(inner, num_workers=1, cache_dir=str(tmp_path))
    dm.setup()
    assert dm.step_minutes == inner.step_minutes  # anything else is the inner module's
    loader = dm.test_dataloader()
    assert loader.num_workers == 1
    batch = next(iter(loader))
    assert batch["motion"].shape == (2, 2, 16, 16) and batch["x"].shape == (2, 3, 1, 16, 16)
    assert torch.equal(batch["motion"], batch_motion(batch["x"]))
    assert len(list(tmp_path.glob("test-*/*.npy"))) == 2  # written by the worker
    plain = next(iter(DataLoader(inner.test_set, batch_size=2)))
    assert torch.equal(plain[0], batch["x"])


def test_motion_of_windows_drawn_per_epoch_is_never_cached(tmp_path, one_thread) -> None:
    """Augmented windows (`epoch_indices`) keep their epoch index and get their own motion."""

    class Drawn(torch.utils.data.Dataset):
        epoch_indices = True

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            shift = index // 2  # the epoch moves the blob by one pixel
            x = torch.zeros(3, 1, 16, 16)
            for t in range(3):
                x[t, 0, 6:10, 4 + t * (1 + shift):8 + t * (1 + shift)] = 1.0
            return x, x[-1:]

    ds = MotionDataset(Drawn(), cache_dir=tmp_path / "cache", memory_cache=True)
    assert ds.epoch_indices and len(ds) == 2
    first, later = ds[0]["motion"], ds[2]["motion"]  # window 0 in epochs 0 and 1
    assert not torch.equal(first, later) and not (tmp_path / "cache").exists()


def test_motion_cache_key_follows_the_file_behind_a_path(tmp_path) -> None:
    """A video replaced under the same name gets new motion fields, not the old file's."""
    from types import SimpleNamespace

    from convcast.data.motion import cache_key

    video = tmp_path / "clip.npy"
    np.save(video, np.zeros((4, 8, 8), np.float32))
    dm = SimpleNamespace(hparams={"path": str(video), "batch_size": 2})
    key = cache_key(dm, "train", {"method": "lucaskanade"})
    assert cache_key(SimpleNamespace(hparams={"path": str(video), "batch_size": 8}), "train",
                     {"method": "lucaskanade"}) == key  # loader settings do not count
    np.save(video, np.ones((5, 8, 8), np.float32))
    assert cache_key(dm, "train", {"method": "lucaskanade"}) != key


def test_fit_and_test_compare_through_the_cli(tmp_path, one_thread) -> None:
    config = ROOT / "configs/radar-anchored-cpu-small.yaml"
    small = ["--data.init_args.data.init_args.train_size", 8,
             "--data.init_args.data.init_args.val_size", 2,
             "--data.init_args.data.init_args.test_size", 4,
             "--data.init_args.data.init_args.image_size", 16,
             "--data.init_args.data.init_args.input_frames", 3,
             "--data.init_args.data.init_args.output_frames", 3,
             "--data.init_args.data.init_args.batch_size", 2,
             "--data.init_args.num_workers", 0,
             "--model.model_kwargs.base_kwargs", json.dumps(BASE)]
    cli("fit", "--config", config, *FIT_QUIET, "--trainer.max_steps", 3,
        "--trainer.val_check_interval", 3, "--trainer.limit_val_batches", 1,
        "--trainer.default_root_dir", tmp_path, *small)
    ckpt = next(tmp_path.glob("**/last.ckpt"))
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert "current_model_state" in saved  # the recipe's EMA: averaged weights in state_dict
    out = tmp_path / "report"
    cli("test", "--config", config, *FIT_QUIET, "--ckpt_path", ckpt, *small,
        "--trainer.default_root_dir", tmp_path,
        "--compare", "optical_flow", "persistence", "--thresholds", 0.5, 2, 5,
        "--to_physical", "pixel_to_rainrate", "--animation", "none", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    text = json.dumps(metrics)
    for name in ("anchored", "optical_flow", "persistence"):
        assert name in text
    assert "csi@2" in text


def test_radar_losses() -> None:
    from convcast.data.units import pixel_to_rainrate, rainrate_to_pixel

    target = rainrate_to_pixel(torch.tensor([0.1, 1.0, 3.0, 20.0]).view(1, 1, 1, 1, 4))
    pred = target + 0.01
    r = get_loss("rainrate_mse")(pred, target)
    want = ((pixel_to_rainrate(pred) - pixel_to_rainrate(target)) ** 2).mean()
    torch.testing.assert_close(r, want)
    w = torch.tensor([1.0, 1.0, 2.0, 10.0])  # HKO-7 weights of 0.1, 1, 3 and 20 mm/h
    torch.testing.assert_close(get_loss("bmse")(pred, target), (w * 1e-4).mean())
    torch.testing.assert_close(get_loss("bmae")(pred, target), (w * 1e-2).mean())
    torch.testing.assert_close(get_loss("bmse+bmae")(pred, target), (w * (1e-4 + 1e-2)).mean())
    mask = torch.tensor([True, True, False, False]).view(1, 1, 1, 1, 4)
    torch.testing.assert_close(get_loss("bmse")(pred, target, mask), torch.tensor(1e-4))
    assert np.isclose(float(get_loss("bmse")(target, target)), 0.0)

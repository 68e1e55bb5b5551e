"""RadarDataModule is an archive, a preparation, a split and a clutter mask: typed, frozen,
keyword-only parts that the flat config arguments fill in."""

import doctest
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
import torch

from convcast.data.radar import RadarDataModule, parts
from convcast.data.radar.parts import RadarArchive, RadarClutter, RadarPreparation, RadarSplit


def archive(tmp_path, n: int = 60, size: int = 12) -> str:
    """An .npz of `n` dBZ frames every 6 minutes, ground clutter at pixel (3, 4)."""
    dbz = np.random.default_rng(0).uniform(0, 40, size=(n, size, size)).astype(np.float32)
    dbz[:, 3, 4] = 55.0
    t = np.datetime64("2021-06-01T00:00", "s") + np.timedelta64(6, "m") * np.arange(n)
    np.savez(tmp_path / "radar.npz", frames=dbz, timestamps=t)
    return str(tmp_path / "radar.npz")


def test_flat_arguments_fill_the_typed_parts(tmp_path) -> None:
    path = archive(tmp_path)
    dm = RadarDataModule(path, units="dbz", input_frames=2, output_frames=3, crop=[8, 8],
                         split_ratios=[1, 1, 0], split_seed=3, block_minutes=60,
                         clutter="frequency", clutter_k=2.0)
    assert dm.archive == RadarArchive(path=path, units="dbz")
    assert dm.preparation == RadarPreparation(crop=(8, 8))  # YAML lists become tuples
    assert dm.split == RadarSplit(input_frames=2, output_frames=3, block_minutes=60,
                                  ratios=(1, 1, 0), seed=3)
    assert dm.clutter == RadarClutter(method="frequency", k=2.0)


def test_typed_parts_give_the_same_windows_and_pixels(tmp_path) -> None:
    path = archive(tmp_path)
    flat = RadarDataModule(path, units="dbz", input_frames=2, output_frames=3, crop=[8, 8],
                           block_minutes=60, split_ratios=[1, 1, 0], clutter="frequency",
                           clutter_k=2.0)
    typed = RadarDataModule.of(
        RadarArchive(path=path, units="dbz"), preparation=RadarPreparation(crop=(8, 8)),
        split=RadarSplit(input_frames=2, output_frames=3, block_minutes=60, ratios=(1, 1, 0)),
        clutter=RadarClutter(method="frequency", k=2.0))
    for dm in (flat, typed):
        dm.setup()
    assert set(typed.hparams) == set(flat.hparams)  # configs and checkpoints see one form
    for part in ("archive", "preparation", "split", "clutter"):
        assert getattr(typed, part) == getattr(flat, part)
    for name in ("train", "val"):
        np.testing.assert_array_equal(typed.windows[name], flat.windows[name])
    np.testing.assert_array_equal(typed.clutter_mask, flat.clutter_mask)
    assert flat.clutter_mask.any()  # the clutter pixel was found
    for a, b in zip(typed.train_set[0], flat.train_set[0], strict=True):
        assert torch.equal(a, b)


def test_parts_are_keyword_only_frozen_and_checked() -> None:
    with pytest.raises(TypeError):
        RadarPreparation((0, 70))  # a positional argument cannot land in the wrong field
    with pytest.raises(FrozenInstanceError):
        RadarSplit().seed = 1
    with pytest.raises(ValueError, match="unknown clutter method 'median'.*frequency"):
        RadarClutter(method="median")
    with pytest.raises(ValueError, match="either crop .* or crop_box"):
        RadarPreparation(crop=(8, 8), crop_box=(0, 0, 1, 1))


def test_docstring_example_runs() -> None:
    assert doctest.testmod(parts).failed == 0

"""Moving shapes: the tutorial's squares, clean and reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convcast.data.synthetic.moving_shapes import (
    MovingShapes,
    MovingShapesDataModule,
    render_moving_shapes,
)


def _corners(frames: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corner of the single square in each frame."""
    out = []
    for f in frames:
        ys, xs = np.nonzero(f)
        out.append((int(ys.min()), int(xs.min())))
    return out


def test_one_square_moves_by_a_constant_step_with_wraparound() -> None:
    frames = render_moving_shapes(np.random.default_rng(4), 30, num_shapes=1, size=5,
                                  frame_size=20)
    assert frames.shape == (30, 20, 20) and set(np.unique(frames)) == {0.0, 1.0}
    assert (frames.reshape(30, -1).sum(1) == 25).all()  # a whole 5x5 square in every frame
    c = np.array(_corners(frames))
    assert (c[0] < 20 - 5 - 1).all()  # starts in [0, frame - size - 1) as the tutorial
    step = (c[1] - c[0]) % 15
    assert set(step) <= {1, 2}
    for t in range(1, 30):  # position advances by the step modulo frame - size
        np.testing.assert_array_equal(c[t], (c[t - 1] + step) % 15)
    assert (np.diff(c, axis=0) < 0).any()  # it wrapped at least once in 30 frames


def test_random_direction_and_several_shapes() -> None:
    rng = np.random.default_rng(0)
    steps = set()
    for _ in range(20):
        c = np.array(_corners(render_moving_shapes(rng, 2, random_direction=True,
                                                   frame_size=32)))
        steps.update(((c[1] - c[0] + 13) % 27 - 13).tolist())
    assert {-2, -1, 1, 2} <= steps
    many = render_moving_shapes(np.random.default_rng(1), 5, num_shapes=3, size=4)
    assert many.max() == 1 and many[0].sum() >= 16  # overlapping squares by maximum
    with pytest.raises(ValueError, match="no room"):
        render_moving_shapes(rng, 3, size=8, frame_size=9)


def test_items_reproducible_and_splits_differ() -> None:
    a = MovingShapes("train", 10, input_frames=9, output_frames=1, frame_size=16)
    b = MovingShapes("train", 10, input_frames=9, output_frames=1, frame_size=16)
    x, y = a[3]
    assert x.shape == (9, 1, 16, 16) and y.shape == (1, 1, 16, 16) and x.dtype == torch.float32
    torch.testing.assert_close(a[3][0], b[3][0])
    assert not torch.equal(a[3][0], a[4][0])
    val = MovingShapes("val", 10, frame_size=16)
    assert not torch.equal(val[3][0], MovingShapes("train", 10, frame_size=16)[3][0])


def test_datamodule_batches() -> None:
    dm = MovingShapesDataModule(batch_size=4, train_size=8, val_size=4, test_size=4,
                                frame_size=16)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 9, 1, 16, 16) and y.shape == (4, 1, 1, 16, 16)
    assert len(dm.val_dataloader()) == 1 and dm.describe().frame_size == (16, 16)

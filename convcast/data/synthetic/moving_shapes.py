"""Moving shapes: the moving-squares generator of a ConvLSTM tutorial, made clean.

Each square (side `size`, value 1) starts at a random top-left corner in `[0, frame - size - 1)`
and moves by an integer step of `min_speed`..`max_speed` pixels per frame along each axis (the
tutorial: 1 or 2, always down-right); positions wrap modulo `frame - size`, so a square leaving
the bottom or the right edge reappears at the top or left whole. Several shapes overlap by maximum.
Sequence `i` is drawn from its own random stream seeded by `(seed, split, i)`: any item is
reproducible alone, in any worker or process.
"""

from __future__ import annotations

import numpy as np

from convcast.data.synthetic.base import GeneratedDataModule, GeneratedSequences


def render_moving_shapes(rng: np.random.Generator, seq_len: int, num_shapes: int = 1,
                         size: int = 5, frame_size: int = 64, min_speed: int = 1,
                         max_speed: int = 2, random_direction: bool = False) -> np.ndarray:
    """One sequence `[seq_len, frame_size, frame_size]` float32 in {0, 1}."""
    free = frame_size - size  # corner positions wrap modulo this
    if free < 2:
        raise ValueError(f"frame_size={frame_size} leaves no room for squares of size {size}")
    if not 1 <= min_speed <= max_speed:
        raise ValueError(f"need 1 <= min_speed <= max_speed, got {min_speed}, {max_speed}")
    frames = np.zeros((seq_len, frame_size, frame_size), dtype=np.float32)
    for _ in range(num_shapes):
        step = rng.integers(min_speed, max_speed + 1, size=2)  # (dy, dx)
        if random_direction:
            step = step * rng.choice([-1, 1], size=2)
        pos = rng.integers(0, free - 1, size=2)  # (y, x), as the tutorial: [0, frame - size - 1)
        for t in range(seq_len):
            y, x = pos
            frames[t, y:y + size, x:x + size] = 1.0
            pos = (pos + step) % free
    return frames


class MovingShapes(GeneratedSequences):
    """Item `i`: `(x [T_in,1,H,W], y [T_out,1,H,W])` float32 of squares moving with wrap-around."""

    def __init__(self, split: str = "train", num_sequences: int = 1000, input_frames: int = 9,
                 output_frames: int = 1, num_shapes: int = 1, size: int = 5, frame_size: int = 64,
                 min_speed: int = 1, max_speed: int = 2, random_direction: bool = False,
                 seed: int = 0) -> None:
        super().__init__(split, num_sequences, input_frames, output_frames, seed)
        self.shape_args = dict(num_shapes=num_shapes, size=size, frame_size=frame_size,
                               min_speed=min_speed, max_speed=max_speed,
                               random_direction=random_direction)

    def generate(self, rng: np.random.Generator) -> np.ndarray:
        return render_moving_shapes(rng, self.seq_len, **self.shape_args)


class MovingShapesDataModule(GeneratedDataModule):
    """Moving shapes generated on the fly; train/val/test draw from separate random streams."""

    dataset = MovingShapes
    source_name = "moving_shapes"

    def __init__(self, batch_size: int = 8, num_workers: int = 0, train_size: int = 800,
                 val_size: int = 80, test_size: int = 80, input_frames: int = 9,
                 output_frames: int = 1, num_shapes: int = 1, size: int = 5, frame_size: int = 64,
                 min_speed: int = 1, max_speed: int = 2, random_direction: bool = False,
                 seed: int = 0, shuffle: bool = True) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()

    def dataset_kwargs(self) -> dict:
        hp = self.hparams
        return dict(num_shapes=hp.num_shapes, size=hp.size, frame_size=hp.frame_size,
                    min_speed=hp.min_speed, max_speed=hp.max_speed,
                    random_direction=hp.random_direction)

    def frame_size(self) -> tuple[int, int]:
        return self.hparams.frame_size, self.hparams.frame_size

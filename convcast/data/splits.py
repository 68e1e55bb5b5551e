"""The names of the three data splits, defined once for every dataset and datamodule."""

SPLITS = ("train", "val", "test")
SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}  # seeds the random streams of each split


def check_split(split: str) -> str:
    """`split` if it is one of `SPLITS`, else a clear error."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return split

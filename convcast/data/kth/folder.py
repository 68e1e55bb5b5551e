"""Labelled video folders `<root>/<class>/<video>` and their splits by group (KTH: by person).

KTH (Schuldt, Laptev and Caputo, ICPR 2004): six actions performed by 25 persons in four
scenarios (d1 outdoors, d2 outdoors with scale variation, d3 outdoors with different clothes,
d4 indoors), one video per person, action and scenario, stored as
`<root>/<action>/personXX_<action>_dY_uncomp.avi` (160x120, 25 fps; 599 videos: person 13's
handclapping d3 is missing). Any folder in this layout works: the group of a video (the person,
for KTH) is the first capture group of `group_pattern` in its file name, and a split puts every
group in exactly one of train / val / test, so no person is seen in two splits.

Named splits (`SPLITS`): `tutorial` (a KTH ConvLSTM tutorial's), `schuldt` (that of Schuldt et
al., as listed with the dataset), `prediction` (the video-prediction benchmark: persons 1-16 train,
17-25 test; here persons 15 and 16 of the training persons are held out for validation, so
early stopping never looks at the test persons). `random` shuffles the groups (by `seed`) and
cuts them by `split_fractions`; a mapping `{"train": [...], "val": [...], "test": [...]}` names
the groups of each split.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convcast.data.sources import VIDEO_EXTS, natural_key

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_GROUP_PATTERN = r"person(\d+)_"
STAGES = ("train", "val", "test")
Group = int | str
SPLITS: dict[str, dict[str, tuple[int, ...]]] = {
    "tutorial": {"train": (1, 2, 4, 5, 6, 7, 9, 11, 12, 15, 17, 18, 20, 21, 22, 23, 24),
              "val": (3, 8, 10, 19, 25), "test": (13, 14, 16)},
    "schuldt": {"train": (11, 12, 13, 14, 15, 16, 17, 18),
                "val": (19, 20, 21, 23, 24, 25, 1, 4), "test": (22, 2, 3, 5, 6, 7, 8, 9, 10)},
    "prediction": {"train": tuple(range(1, 15)), "val": (15, 16), "test": tuple(range(17, 26))},
}


@dataclass(frozen=True)
class Video:
    """One labelled video: its file, class index and group (KTH: person id)."""

    path: Path
    label: int
    group: Group


def _group(name: str, pattern: re.Pattern, path: Path) -> Group:
    m = pattern.search(name)
    if m is None or not m.groups():
        raise ValueError(f"cannot tell the group of {path}: its name does not match group_pattern "
                         f"{pattern.pattern!r} (with one capture group, e.g. person(\\d+)_ for "
                         "KTH's personXX_...); rename the file or set group_pattern")
    g = m.group(1)
    return int(g) if g.isdigit() else g


def scan_folder(root: str | Path, classes: Sequence[str] | None = None,
                group_pattern: str = KTH_GROUP_PATTERN,
                name_filter: str | None = None) -> tuple[list[str], list[Video]]:
    """The classes and videos under `root`, in natural name order.

    `classes` fixes the class folders and their order (default: every subfolder holding videos,
    sorted); `name_filter` keeps only the videos whose file name matches that regex.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} not found: expected <root>/<class>/<video> "
                                "(KTH: <root>/boxing/person01_boxing_d1_uncomp.avi, ...)")
    pattern, keep = re.compile(group_pattern), re.compile(name_filter) if name_filter else None

    def videos_in(folder: Path) -> list[Path]:
        return sorted((p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS
                       and not p.name.startswith(".") and (keep is None or keep.search(p.name))),
                      key=natural_key)

    if classes is None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and videos_in(d))
    else:
        missing = [c for c in classes if not (root / c).is_dir()]
        if missing:
            found = sorted(d.name for d in root.iterdir() if d.is_dir())
            raise ValueError(f"class folder(s) {', '.join(missing)} not found under {root} "
                             f"(it has: {', '.join(found) or 'no folders'}); fix classes or the "
                             "folder")
    videos = [Video(p, label, _group(p.name, pattern, p))
              for label, c in enumerate(classes) for p in videos_in(root / c)]
    if len(classes) < 2 or not videos:
        raise ValueError(f"{root} holds {len(videos)} videos in {len(classes)} class folder(s); "
                         f"classification needs videos ({', '.join(VIDEO_EXTS)}) in at least two "
                         "class folders <root>/<class>/<video>")
    return list(classes), videos


def split_groups(groups: Sequence[Group], split: str | Mapping[str, Sequence[Group]],
                 fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                 ) -> dict[str, set[Group]]:
    """`{stage: groups}` for the groups present; every group lands in exactly one stage."""
    present = sorted(set(groups), key=str)
    if isinstance(split, str) and split == "random":
        f = np.asarray(fractions, dtype=float)
        if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1) > 1e-6 or f[0] == 0:
            raise ValueError(f"split_fractions must be (train, val, test) >= 0 summing to 1 with "
                             f"train > 0, got {tuple(fractions)}")
        order = [present[i] for i in np.random.default_rng(seed).permutation(len(present))]
        cut = np.round(np.cumsum(f) * len(order)).astype(int)
        return {"train": set(order[:cut[0]]), "val": set(order[cut[0]:cut[1]]),
                "test": set(order[cut[1]:])}
    if isinstance(split, str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}, random, or a "
                             "mapping {train: [groups], val: [...], test: [...]}")
        split = SPLITS[split]
    unknown = set(split) - set(STAGES)
    if unknown:
        raise ValueError(f"split has stage(s) {sorted(unknown)}; valid stages: {STAGES}")
    stages = {s: {int(g) if str(g).isdigit() else g for g in split.get(s, ())} for s in STAGES}
    twice = [g for g in present if sum(g in v for v in stages.values()) > 1]
    lost = [g for g in present if not any(g in v for v in stages.values())]
    if twice or lost:
        what = (f"group(s) {twice} are in two splits" if twice
                else f"videos of group(s) {lost} belong to no split")
        raise ValueError(f"{what}; give each group (person) exactly one of train/val/test in the "
                         "split, or leave those videos out of the folder")
    return {s: v & set(present) for s, v in stages.items()}

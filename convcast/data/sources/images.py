"""A folder of images, one frame per file, read per window (PNG, JPEG, BMP, TIFF).

Frames are in the natural order of their names (`frame2.png` before `frame10.png`). When the
names hold times (`time_format` / `time_regex`, or by default a run of 12 or 14 digits
YYYYMMDDHHMM[SS], as HKO-7's radar PNGs), the frames are ordered by time and carry their time
stamps; with `require_times=True` (radar archives) files without a time are skipped with a warning
and a folder without any is an error. `recursive=True` also searches sub-folders. Colour images
come out RGB (an alpha channel is dropped); `gray=True` takes gray images stored as RGB as one
channel and refuses colour ones.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from convcast.data.sources.base import FrameSource, register_source
from convcast.data.sources.times import check_sorted, parse_time

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def natural_key(path: Path | str) -> list:
    """Sort key that orders `frame2.png` before `frame10.png`."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", Path(path).name)]


def list_images(folder: Path | str, recursive: bool = False) -> list[Path]:
    """Image files of a folder, sorted by name with numbers in natural order."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted((p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=natural_key)


def read_image(path: Path | str, gray: bool = False) -> np.ndarray:
    """One image as `[H, W, C]` (RGB order for colour images, alpha dropped; `gray`: `[H, W, 1]`,
    refusing colour)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}: the file is missing, corrupt or not an image")
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if gray:
        if img.shape[2] >= 3 and np.array_equal(img[..., 0], img[..., 1]) \
                and np.array_equal(img[..., 1], img[..., 2]):
            return img[:, :, :1]  # gray stored as RGB
        raise ValueError(f"{path} is a colour image; convert colour-palette radar images to gray "
                         "levels (or dBZ arrays) first")
    return img[:, :, ::-1] if img.shape[2] == 3 else img  # BGR -> RGB


@register_source("images", aliases=("png", "frames"))
class ImageFolderSource(FrameSource):
    """A folder of images (see the module docstring)."""

    def __init__(self, path: str | Path, time_format: str | None = None,
                 time_regex: str | None = None, require_times: bool = False,
                 recursive: bool = False, gray: bool = False) -> None:
        self.path, self.name, self.gray = Path(path), Path(path).name, gray
        self.units, self.metadata = None, {}
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is not a folder of images")
        files = list_images(self.path, recursive)
        if not files:
            raise ValueError(f"folder {self.path} holds no image frames; valid image extensions: "
                             f"{', '.join(IMAGE_EXTS)}")
        self.files, self.timestamps = self._order(files, time_format, time_regex, require_times)
        self.num_frames = len(self.files)
        first = read_image(self.files[0], gray)  # [H, W, C]
        self.dtype, self.frame_shape = first.dtype, (first.shape[2], *first.shape[:2])

    def _order(self, files: list[Path], time_format: str | None, time_regex: str | None,
               require_times: bool) -> tuple[list[Path], np.ndarray | None]:
        """The files in frame order, and their times where the names hold them."""
        stamped = [(parse_time(p.stem, time_format, time_regex), p) for p in files]
        timed = sorted((t, p) for t, p in stamped if t is not None)
        asked = require_times or time_format is not None or time_regex is not None
        if not timed or (len(timed) < len(files) and not asked):
            if require_times:
                how = (f"time_format={time_format!r}" if time_format else "") + \
                      (f" time_regex={time_regex!r}" if time_regex else "")
                raise ValueError(
                    f"no file name in {self.path} holds a time "
                    f"({how or 'default: 12 or 14 digits YYYYMMDDHHMM[SS]'}), e.g. "
                    f"{files[0].name!r}; pass time_format (strptime pattern of the stem) and/or "
                    "time_regex")
            return files, None  # plain frames: name order, no times
        skipped = [p.name for t, p in stamped if t is None]
        if skipped:
            warnings.warn(f"{len(skipped)} images in {self.path} have no time in their name and "
                          f"are skipped, e.g. {skipped[0]!r}", stacklevel=3)
        ts = np.array([np.datetime64(t, "s") for t, _ in timed], dtype="datetime64[s]")
        return [p for _, p in timed], check_sorted(ts, str(self.path))

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return path.is_dir() and bool(list_images(path))

    def fingerprint(self) -> dict:
        last = self.files[-1].stat()
        return {**super().fingerprint(), "files": len(self.files), "last": self.files[-1].name,
                "last_mtime_ns": last.st_mtime_ns, "gray": self.gray}

    def _read(self, start: int, stop: int) -> np.ndarray:
        frames = [read_image(p, self.gray) for p in self.files[start:stop]]
        for p, f in zip(self.files[start:stop], frames, strict=True):
            if (f.shape[2], *f.shape[:2]) != self.frame_shape:
                raise ValueError(f"{p} has shape {f.shape} but {self.files[0].name} has "
                                 f"{self.frame_shape[1:] + self.frame_shape[:1]} (H, W, C); all "
                                 "frames of a folder must have one size and channel count")
        return np.stack(frames).transpose(0, 3, 1, 2)  # [n, C, H, W]

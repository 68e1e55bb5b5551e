"""Reading frames from videos, image folders and arrays, and converting them for a model.

Readers return frames `[T, H, W, C]` in their stored dtype (videos and 8-bit images: uint8 RGB).
`prepare_frames` then turns them into what a model reads, `[T, C, H, W]` float32:
integer frames are divided by their dtype's maximum (uint8: 255) so values lie in [0, 1], float
frames keep their values; channels are converted (RGB -> gray by luminance, gray -> RGB by copy,
an alpha channel is dropped) and frames are resized (area averaging when shrinking).

Array layouts are named by letters: N (sequence), T (time), C (channel), H, W. A layout is guessed
from the shape where the channel axis can be told by its size (1 or 3); otherwise pass `layout`.
"""

from __future__ import annotations

import re
import struct
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_EXTS = (".npy", ".npz", ".h5", ".hdf5")
CHANNEL_SIZES = (1, 3)


def natural_key(path: Path | str) -> list:
    """Sort key that orders `frame2.png` before `frame10.png`."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", Path(path).name)]


def valid_extensions() -> str:
    return ", ".join(VIDEO_EXTS + IMAGE_EXTS + ARRAY_EXTS) + " or a folder of frames"


def unit_scale(dtype: np.dtype) -> float:
    """What integer frames are divided by to lie in [0, 1] (1 for floats)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return 1.0
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


# ---- images and frame folders ------------------------------------------------------------------
def list_images(folder: Path | str) -> list[Path]:
    """Image files of a folder, sorted by name with numbers in natural order."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS), key=natural_key)


def read_image(path: Path | str) -> np.ndarray:
    """One image as `[H, W, C]` (RGB order for colour images, alpha dropped)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read image {path}: the file is missing, corrupt or not an image")
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return img[:, :, ::-1] if img.shape[2] == 3 else img  # BGR -> RGB


def read_images(paths: Sequence[Path]) -> np.ndarray:
    """Images of one size stacked into `[T, H, W, C]`."""
    frames = [read_image(p) for p in paths]
    for p, f in zip(paths, frames, strict=True):
        if f.shape != frames[0].shape:
            raise ValueError(f"{p} has shape {f.shape} but {paths[0].name} has "
                             f"{frames[0].shape} (H, W, C); all frames of a sequence must have "
                             "one size and channel count")
    return np.stack(frames)


# ---- videos ------------------------------------------------------------------------------------
def open_video(path: Path | str) -> cv2.VideoCapture:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} not found")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}: the file is corrupt or its codec is not "
                         "supported by OpenCV's FFmpeg; convert it (ffmpeg -i in.ext out.mp4) or "
                         "extract its frames to PNG files")
    return cap


def video_frame_count(path: Path | str) -> int:
    """Frames in a video: the container's count, or counted by decoding when it has none."""
    cap = open_video(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
    finally:
        cap.release()
    if n == 0:
        raise ValueError(f"video {path} has no frames (empty or corrupt file)")
    return n


def read_video(path: Path | str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames `start:stop` of a video as uint8 RGB `[T, H, W, 3]`."""
    cap = open_video(path)
    frames = []
    try:
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        while stop is None or start + len(frames) < stop:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame[:, :, ::-1])  # BGR -> RGB
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"no frames could be decoded from video {path} (from frame {start}); "
                         "the file may be corrupt")
    return np.stack(frames)


# ---- arrays ------------------------------------------------------------------------------------
def _npz_names(path: Path) -> list[str]:
    """The arrays inside an .npz file, with a clear error for a file that is not one."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path} is not a readable .npz file ({err}); it may be truncated or "
                         "not written by np.savez") from err


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int | None]:
    """Shape, Fortran order, dtype and (if stored uncompressed) the data's byte offset of the
    array `key` of an .npz file, read from its header alone."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            header = f.tell()  # bytes of the .npy header inside the member
    if info.compress_type != zipfile.ZIP_STORED or dtype.hasobject:
        return shape, fortran, dtype, None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        n_name, n_extra = struct.unpack("<HH", f.read(30)[26:30])  # the zip local file header
    return shape, fortran, dtype, info.header_offset + 30 + n_name + n_extra + header


def npz_member(path: Path | str, key: str, warn_bytes: int = 256 * 2**20) -> np.ndarray:
    """Array `key` of an .npz file: memory-mapped when stored uncompressed (`np.savez`), so only
    the frames read leave the disk; a compressed member (`np.savez_compressed`) is decompressed
    into memory whole, with a warning when it is larger than `warn_bytes`."""
    path = Path(path)
    shape, fortran, dtype, offset = _npz_header(path, key)
    if offset is not None:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")
    size = int(np.prod(shape)) * dtype.itemsize
    if size > warn_bytes:
        warnings.warn(f"{path}: array {key!r} is compressed, so its {size / 2**20:.0f} MiB are "
                      "loaded into memory whole; save it with np.savez (not savez_compressed) or "
                      "as .npy to stream it from disk", stacklevel=2)
    with np.load(path) as z:
        return z[key]


def open_array(path: Path | str, key: str | None = None):
    """An array-like of a `.npy` or uncompressed `.npz` (both memory-mapped), a compressed `.npz`
    (loaded) or an HDF5 dataset (lazy).

    Returns `(array, closer)`; call `closer()` when done (closes an HDF5 file, else does nothing).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file {path} not found")
    ext = path.suffix.lower()
    if ext == ".npy":
        return np.load(path, mmap_mode="r"), lambda: None
    if ext == ".npz":
        return npz_member(path, _pick_key(path, key, _npz_names(path))), lambda: None
    if ext in (".h5", ".hdf5"):
        import h5py

        f = h5py.File(path, "r")
        names: list[str] = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        try:
            key = _pick_key(path, key, names)
        except ValueError:
            f.close()
            raise
        return f[key], f.close
    raise ValueError(f"{path} is not an array file; valid array extensions: "
                     f"{', '.join(ARRAY_EXTS)}")


def array_info(path: Path | str, key: str | None = None) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an array file's array, without reading its values (a compressed .npz
    member is not decompressed)."""
    path = Path(path)
    if path.suffix.lower() == ".npz" and path.is_file():
        shape, _, dtype, _ = _npz_header(path, _pick_key(path, key, _npz_names(path)))
        return tuple(shape), np.dtype(dtype)
    arr, close = open_array(path, key)
    try:
        return tuple(arr.shape), np.dtype(arr.dtype)
    finally:
        close()


def _pick_key(path: Path, key: str | None, names: list[str]) -> str:
    if key is not None:
        if key not in names:
            raise ValueError(f"{path} has no array {key!r}; it holds: {', '.join(names) or 'none'}")
        return key
    if len(names) != 1:
        raise ValueError(f"{path} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                         "name one with key=...")
    return names[0]


def guess_layout(shape: Sequence[int], sequences: bool = True) -> str:
    """The layout of an array shape, telling the channel axis by its size (1 or 3).

    3-D: THW. 4-D: TCHW or THWC when exactly one of axis 1 / axis 3 has size 1 or 3, else NTHW
    (several gray sequences; only with `sequences=True`). 5-D: NTCHW or NTHWC.
    Raises with a hint where the shape is ambiguous.
    """
    shape = tuple(int(s) for s in shape)
    hint = ("pass the layout explicitly (letters N sequence, T time, C channel, H, W; e.g. "
            "TCHW, THWC, NTHW, TNHW)")
    if len(shape) == 3:
        return "THW"
    if len(shape) == 4:
        c1, c3 = shape[1] in CHANNEL_SIZES, shape[3] in CHANNEL_SIZES
        if c1 and not c3:
            return "TCHW"
        if c3 and not c1:
            return "THWC"
        if not c1 and not c3 and sequences:
            return "NTHW"
        what = "both axis 1 and axis 3 could be" if c1 else "neither axis 1 nor axis 3 is"
        raise ValueError(f"cannot tell the layout of an array of shape {shape}: {what} a channel "
                         f"axis of size 1 or 3; {hint}")
    if len(shape) == 5 and sequences:
        c2, c4 = shape[2] in CHANNEL_SIZES, shape[4] in CHANNEL_SIZES
        if c2 != c4:
            return "NTCHW" if c2 else "NTHWC"
        raise ValueError(f"cannot tell the channel axis of an array of shape {shape}; {hint}")
    valid = "[T,H,W], [T,C,H,W], [T,H,W,C]" + (", [N,T,H,W], [N,T,C,H,W]" if sequences else "")
    raise ValueError(f"an array of shape {shape} is not a sequence of frames; expected {valid}")


def check_layout(layout: str, ndim: int) -> str:
    layout = layout.upper()
    if (len(layout) != ndim or len(set(layout)) != ndim or not set(layout) <= set("NTCHW")
            or not {"T", "H", "W"} <= set(layout)):
        raise ValueError(f"layout {layout!r} does not fit a {ndim}-D array: use each of T, H, W "
                         "once, and optionally N (sequence) and C (channel)")
    return layout


def index_sequence(arr, layout: str, n: int | None, start: int, stop: int) -> np.ndarray:
    """Frames `start:stop` of sequence `n` of an array-like in `layout`, as `[T, H, W, C]`.

    Only the window is read: a memory map or an HDF5 dataset loads just those frames.
    """
    index = tuple(n if a == "N" else slice(start, stop) if a == "T" else slice(None)
                  for a in layout)
    window = np.asarray(arr[index])
    kept = [a for a in layout if a != "N"]
    if "C" not in kept:
        window, kept = window[..., None], [*kept, "C"]
    return window.transpose([kept.index(a) for a in "THWC"])


def read_frames(path: Path | str, key: str | None = None, layout: str | None = None,
                ) -> tuple[np.ndarray, str]:
    """One sequence from a video, a folder of frames or an array file, as `[T, H, W, C]`.

    Returns the frames and a line saying what was read (layout decisions included).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} not found")
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise ValueError(f"folder {path} holds no frames; valid image extensions: "
                             f"{', '.join(IMAGE_EXTS)}")
        frames = read_images(images)
        return frames, f"read {len(images)} frames from folder {path} (sorted by name)"
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        frames = read_video(path)
        return frames, f"read {len(frames)} frames from video {path}"
    if ext in IMAGE_EXTS:
        return read_image(path)[None], f"read 1 frame from image {path}"
    if ext in ARRAY_EXTS:
        arr, close = open_array(path, key)
        try:
            if layout is None:
                layout = guess_layout(arr.shape, sequences=False)
                note = f"layout {layout} guessed from shape {tuple(arr.shape)}"
            else:
                layout = check_layout(layout, len(arr.shape))
                note = f"layout {layout}"
            if "N" in layout:
                raise ValueError(f"{path} holds several sequences (layout {layout}); predict "
                                 "reads one: save a single sequence [T,H,W], [T,C,H,W] or "
                                 "[T,H,W,C]")
            frames = index_sequence(arr, layout, None, 0, arr.shape[layout.index("T")])
        finally:
            close()
        if np.issubdtype(frames.dtype, np.floating) and not np.isfinite(frames).all():
            bad = int((~np.isfinite(frames)).sum())
            raise ValueError(f"{path} has {bad} NaN or infinite values; fill them (e.g. with "
                             "np.nan_to_num) before forecasting")
        return frames, f"read {len(frames)} frames from array {path} ({note})"
    raise ValueError(f"cannot read {path}: unknown extension {path.suffix!r}; valid: "
                     f"{valid_extensions()}")


# ---- conversion --------------------------------------------------------------------------------
def convert_channels(frames: np.ndarray, channels: int | None) -> np.ndarray:
    """`[T, H, W, C]` -> `[T, H, W, channels]`: RGB -> gray by luminance, gray -> RGB by copy."""
    c = frames.shape[-1]
    if channels is None or channels == c:
        return frames
    if channels == 1 and c == 3:
        w = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma
        return (frames.astype(np.float32) @ w)[..., None]
    if channels == 3 and c == 1:
        return np.repeat(frames, 3, axis=-1)
    raise ValueError(f"cannot convert frames with {c} channels to {channels}; only gray (1) <-> "
                     "RGB (3) conversions exist")


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize `[T, H, W, C]` float frames to `size` = (H, W)."""
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return frames
    h, w = int(size[0]), int(size[1])
    interp = cv2.INTER_AREA if h <= frames.shape[1] and w <= frames.shape[2] else cv2.INTER_LINEAR
    out = np.empty((frames.shape[0], h, w, frames.shape[3]), dtype=np.float32)
    for t, f in enumerate(frames):
        r = cv2.resize(np.ascontiguousarray(f, dtype=np.float32), (w, h), interpolation=interp)
        out[t] = r.reshape(h, w, -1)
    return out


def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"frame_size must be an int or (height, width), got {size}")
    return size


def prepare_frames(frames: np.ndarray, channels: int | None = None,
                   size: int | Sequence[int] | None = None) -> np.ndarray:
    """Raw `[T, H, W, C]` -> float32 `[T, C, H, W]`: unit scaling, channels, resize."""
    scale = unit_scale(frames.dtype)
    out = frames.astype(np.float32)
    if scale != 1.0:
        out /= scale
    out = convert_channels(out, channels)
    out = resize_frames(out, as_size(size))
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

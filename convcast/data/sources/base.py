"""The frame-source interface every reader implements, and the registry of readers by kind.

A `FrameSource` is one sequence of frames on disk (a video, a folder of images, one sequence of an
array file, a radar archive). It knows its frames' shape `(C, H, W)`, their dtype, its length, its
time stamps where it has them (else None), the units of its values where the file says (else
None) and any other `metadata` (e.g. a georeference), and reads a range of frames:
`read(start, stop) -> [n, C, H, W]` in the stored dtype. Nothing is read before it is asked for,
so a dataset of any size streams in constant memory; open handles are dropped when a source is
pickled (each DataLoader worker reopens them).

Readers register themselves by kind (`register_source`), with the file extensions they read, so
`open_sources(path)` picks one by the path and `get_method("npz")` names one, as pysteps'
`get_method` does. A new file format is one module that defines a `FrameSource` subclass under
`@register_source(...)`; installed packages can also add readers through the entry-point group
`convcast.sources`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class FrameSource:
    """One sequence of frames, read by range (see the module docstring).

    Subclasses set `name`, `frame_shape`, `dtype`, `num_frames` (and optionally `timestamps`,
    `units`, `metadata`) in `__init__` and implement `_read(start, stop)`. Attributes whose name
    starts with `_h` hold open handles: they are not pickled.
    """

    kind: ClassVar[str] = ""  # the registry name, set by `register_source`
    extensions: ClassVar[tuple[str, ...]] = ()
    name: str
    path: Path | None = None
    frame_shape: tuple[int, int, int]  # (C, H, W)
    dtype: np.dtype
    num_frames: int
    timestamps: np.ndarray | None = None  # datetime64[s] [num_frames], ascending
    units: str | None = None  # the unit the file declares for its values, as written there
    metadata: dict[str, Any]

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """Whether this reader reads `path` (by default: a file with one of its extensions)."""
        return path.is_file() and path.suffix.lower() in cls.extensions

    @classmethod
    def open(cls, path: Path, **options: Any) -> list[FrameSource]:
        """The sequences in `path` (one, unless the file holds several)."""
        return [cls(path, **options)]

    def __len__(self) -> int:
        return self.num_frames

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames `start:stop` as `[n, C, H, W]` in `self.dtype`."""
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} out of range for {self.num_frames} frames "
                             f"in {self.name}")
        frames = np.asarray(self._read(start, stop))
        if frames.shape != (stop - start, *self.frame_shape):
            raise ValueError(f"{self.name}: frames {start}:{stop} came out {frames.shape}, "
                             f"expected {(stop - start, *self.frame_shape)} like the first frame; "
                             "all frames of a sequence must have one size and channel count")
        return frames

    def _read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What identifies these frames on disk (for caches): kind, path, size, time of change."""
        info: dict[str, Any] = {"kind": self.kind, "name": self.name}
        if self.path is not None:
            st = os.stat(self.path)
            info.update(path=str(Path(self.path).resolve()), size=st.st_size,
                        mtime_ns=st.st_mtime_ns)
        return info

    def close(self) -> None:
        """Release open handles (they reopen on the next read)."""
        for key in [k for k in self.__dict__ if k.startswith("_h")]:
            handle = self.__dict__.pop(key)
            closer = getattr(handle, "close", None) or getattr(handle, "release", None)
            if callable(closer):
                closer()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.num_frames} x {self.frame_shape})"


# ---- the registry ------------------------------------------------------------------------------
_READERS: dict[str, type[FrameSource]] = {}
_ALIASES: dict[str, str] = {}
_PLUGINS_LOADED = False


def register_source(kind: str, extensions: Sequence[str] = (), aliases: Sequence[str] = ()
                    ) -> Callable[[type[FrameSource]], type[FrameSource]]:
    """Class decorator: register a `FrameSource` subclass as the reader of `kind`."""

    def wrap(cls: type[FrameSource]) -> type[FrameSource]:
        if kind in _READERS or kind in _ALIASES:
            raise ValueError(f"frame source {kind!r} is registered twice")
        cls.kind, cls.extensions = kind, tuple(e.lower() for e in extensions)
        _READERS[kind] = cls
        for alias in aliases:
            _ALIASES[alias] = kind
        return cls

    return wrap


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in entry_points(group="convcast.sources"):
        ep.load()  # importing the module registers its readers


def list_sources() -> list[str]:
    """The registered reader kinds."""
    _load_plugins()
    return sorted(_READERS)


def get_method(kind: str) -> type[FrameSource]:
    """The reader registered as `kind` (or one of its aliases)."""
    _load_plugins()
    kind = _ALIASES.get(kind, kind)
    if kind not in _READERS:
        raise ValueError(f"unknown frame source kind {kind!r}; valid: {', '.join(list_sources())}"
                         f" (or auto)")
    return _READERS[kind]


def detect_kind(path: str | os.PathLike) -> str:
    """The kind of reader for `path`, from what each reader accepts."""
    _load_plugins()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    for kind, cls in _READERS.items():
        if cls.accepts(p):
            return kind
    exts = sorted({e for c in _READERS.values() for e in c.extensions})
    what = "folder" if p.is_dir() else f"file with extension {p.suffix!r}"
    raise ValueError(f"no reader for {p} (a {what}); readable: {', '.join(exts)}, a folder of "
                     f"images or a Zarr store; or pass the kind ({', '.join(list_sources())})")


def supported_options(cls: type[FrameSource]) -> set[str] | None:
    """The keyword options a reader takes: those of its `open` if it names them, else those of
    its `__init__` (None: any, it takes **kwargs)."""
    for fn in (cls.open, cls.__init__):
        params = inspect.signature(fn).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return {p.name for p in params if p.name not in ("self", "cls", "path")}
    return None


def _options_for(cls: type[FrameSource], options: dict[str, Any], strict: bool, where: Path
                 ) -> dict[str, Any]:
    """The options `cls` takes; with `strict`, a set option it does not take is an error."""
    given = {k: v for k, v in options.items() if v is not None}
    known = supported_options(cls)
    if known is None:
        return given
    extra = sorted(set(given) - known)
    if extra and strict:
        raise ValueError(f"{where}: the {cls.kind} reader takes no option "
                         f"{', '.join(extra)}; its options: {', '.join(sorted(known)) or 'none'}")
    return {k: v for k, v in given.items() if k in known}


def open_sources(path: str | os.PathLike, kind: str = "auto", strict: bool = True,
                 **options: Any) -> list[FrameSource]:
    """The sequences in one input (`kind="auto"`: picked by the path). Options that are None
    are not passed; with `strict`, an option the reader does not take is an error."""
    p = Path(path)
    if kind == "auto":
        kind = detect_kind(p)
    elif not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    cls = get_method(kind)
    return cls.open(p, **_options_for(cls, options, strict, p))


def open_source(path: str | os.PathLike, kind: str = "auto", **options: Any) -> FrameSource:
    """The one sequence in `path`; an input holding several is an error."""
    sources = open_sources(path, kind, **options)
    if len(sources) != 1:
        raise ValueError(f"{path} holds {len(sources)} sequences; this needs one: save a single "
                         "sequence [T,H,W], [T,C,H,W] or [T,H,W,C]")
    return sources[0]

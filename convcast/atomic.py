"""One atomic writer for every output: a file appears whole or not at all.

`atomic_path(path)` yields a temporary path in the same folder with the same suffix (so writers
that pick a format by extension, or add one, such as `np.save`, imageio and matplotlib, behave as
for the real name); when the block succeeds it is given the permissions of a normal new file
(0o666 minus the umask, as `open` would) and moved over `path` with `os.replace`, which is atomic
on one file system. Before the move the file is flushed to the disk (`fsync`), so an error the
file system reports late (a full disk) is raised before `path` changes. On any error, Ctrl-C
included, the temporary file is removed and `path` is left as it was. An error of the disk (full,
over quota, read-only, ...) is raised as an `OSError` that names `path` and says what to do; an
encoder's own error on a full disk (such as NetCDF's "HDF error") is raised as that too.
`atomic_write(path, mode)` is the same for an open file object.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LOW_SPACE = 2**20  # bytes: a device with less free space than this after a failed write is full


def _fsync(path: str) -> None:
    """Flush `path`'s data to the disk, so a late write error (a full disk) is raised now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB" if n >= 2**10 \
        else f"{n} bytes"


def write_error(path: Path, err: BaseException) -> OSError | None:
    """The error to raise for `err`, raised while writing `path`: an `OSError` naming `path` and
    what to do for a disk error or for any error on a full disk; None to raise `err` itself."""
    code = getattr(err, "errno", None)
    short = isinstance(err, OSError) and "requested and" in str(err) and "written" in str(err)
    free = _free_bytes(path.parent)
    if code in FULL_ERRNOS or short or (free is not None and free < LOW_SPACE
                                       and isinstance(err, (OSError, RuntimeError))):
        what = "over its quota" if code == errno.EDQUOT else "full"
        room = f" ({_size(free)} free)" if free is not None else ""
        return OSError(code if code in FULL_ERRNOS else errno.ENOSPC,
                       f"cannot write {path}: the disk holding {path.parent} is {what}{room}; "
                       f"free some space or write elsewhere ({err})")
    if isinstance(err, OSError) and str(path) not in str(err):
        reason = err.strerror or str(err)
        message = (f"cannot write {path}: {reason}; check the folder's permissions and the disk, "
                   "or write elsewhere")
        return OSError(code, message) if code else OSError(message)  # errno picks the subclass
    return None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as err:  # a read-only disk, a folder that is a file, no permission, ...
        better = write_error(path, err)
        if better is not None:
            raise better from err
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):  # a writer may replace it by another name of its own
            _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are meant to be read
        os.replace(tmp, path)
    except BaseException as err:
        better = write_error(path, err) if isinstance(err, Exception) else None
        Path(tmp).unlink(missing_ok=True)
        if better is not None:
            raise better from err
        raise


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """`open(path, mode)` whose file replaces `path` only when the block succeeds."""
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_write writes a new file; mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def _check_parents(path: Path, folders: list[Path], option: str) -> None:
    """Refuse `path` where one of `folders` (`path` itself or the folders above it, nearest first)
    is an existing file, or the nearest existing one cannot be written."""
    for p in folders:
        if not p.exists():
            continue
        if not p.is_dir():
            where = "is an existing file" if p == path else f"lies inside {p}, an existing file"
            raise ValueError(f"{option} {path} {where}, not a folder; give a path in a folder "
                             "(it is created if missing), or move the file away")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {path}: cannot write in {p} (no permission); give a "
                             "folder you can write to")
        return


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """`path` as a folder outputs can be written to (it may not exist yet): refused, before any
    work is done, where it or a folder above it is an existing file, or where the nearest
    existing folder cannot be written."""
    path = Path(path)
    _check_parents(path, [path, *path.parents], option)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """`path` as a file an output can be written to: refused, before any work is done, where it
    is an existing folder or a folder above it cannot be one (`check_output_folder`)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is an existing folder, not a file; give a file name "
                         f"(e.g. {path / ('forecast' + (path.suffix or '.npy'))})")
    _check_parents(path, list(path.parents), option)
    return path

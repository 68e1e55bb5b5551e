"""Cached, checksummed downloads that fail clearly when offline.

Files land in `$CONVCAST_CACHE` (default `~/.cache/convcast`). A file is written to a temporary name
and moved into place only once its checksum matches, so an interrupted download never leaves a
corrupt file behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from convcast.atomic import atomic_path


def cache_dir() -> Path:
    """The download cache folder (`$CONVCAST_CACHE` or `~/.cache/convcast`)."""
    return Path(os.environ.get("CONVCAST_CACHE", Path.home() / ".cache" / "convcast"))


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()  # the published checksums of these files are md5
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, filename: str, md5: str, root: str | Path | None = None) -> Path:
    """Return the cached copy of `url` (fetched once), verified against `md5`."""
    root = Path(root) if root is not None else cache_dir()
    path = root / filename
    if path.exists():
        if file_md5(path) == md5:
            return path
        raise OSError(
            f"{path} exists but its md5 is {file_md5(path)}, expected {md5}: the file is corrupt "
            "or another file of the same name. Delete it and download again."
        )
    with atomic_path(path) as tmp:  # in place only once the checksum matches
        try:
            urllib.request.urlretrieve(url, tmp)  # fixed, known URLs
        except (urllib.error.URLError, OSError) as err:
            raise OSError(
                f"could not download {url} ({err}). Are you offline? Copy the file to {path} by "
                "hand, or use the embedded default data instead."
            ) from err
        got = file_md5(tmp)
        if got != md5:
            raise OSError(f"download of {url} has md5 {got}, expected {md5}; try again later")
    return path

"""Cached, checksummed downloads that fail clearly when offline.

Files land in `$CONVCAST_CACHE` (default `~/.cache/convcast`). A file is streamed to a temporary
name and moved into place only once its checksum (md5, or SHA-1 / SHA-256 where that is what a
dataset publishes) matches, so an interrupted or corrupt download never leaves a file behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from convcast.atomic import atomic_path

ALGORITHMS = {"md5": "md5", "sha1": "SHA-1", "sha256": "SHA-256"}  # hashlib name -> shown name


def cache_dir() -> Path:
    """The download cache folder (`$CONVCAST_CACHE` or `~/.cache/convcast`)."""
    return Path(os.environ.get("CONVCAST_CACHE", Path.home() / ".cache" / "convcast"))


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """The hex digest of a file (`algorithm`: md5, sha1 or sha256)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def file_md5(path: str | Path) -> str:
    return file_digest(path, "md5")  # the published checksums of most datasets are md5


def download(url: str, filename: str, checksum: str, root: str | Path | None = None,
             algorithm: str = "md5", by_hand: str | None = None) -> Path:
    """Return the cached copy of `url` (fetched once), verified against `checksum`.

    `by_hand` says how to get the file without this download (default: copy it into the cache).
    """
    name = ALGORITHMS.get(algorithm, algorithm)
    root = Path(root) if root is not None else cache_dir()
    path = root / filename
    by_hand = by_hand or f"copy the file to {path} by hand, or use the embedded default data"
    if path.exists():
        got = file_digest(path, algorithm)
        if got == checksum:
            return path
        raise OSError(f"{path} exists but its {name} is {got}, expected {checksum}: the file is "
                      "corrupt or another file of the same name. Delete it and download again.")
    with atomic_path(path) as tmp:  # in place only once the checksum matches
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)  # fixed, known URLs
        except (urllib.error.URLError, OSError) as err:
            raise OSError(f"could not download {url} ({err}); are you offline? {by_hand}"
                          ) from err
        got = file_digest(tmp, algorithm)
        if got != checksum:
            raise OSError(f"download of {url} has {name} {got}, expected {checksum}: the "
                          f"download is corrupt or incomplete (nothing was kept); try again, or "
                          f"{by_hand}")
    return path

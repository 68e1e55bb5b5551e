"""The official KTH archives (https://www.csc.kth.se/cvap/actions/, one zip per action).

Only on request (`download=True` of the KTH datamodules, online): each archive is streamed into
the download cache (`convcast.data.download.cache_dir()/kth`) by `convcast.data.download`,
checked against its SHA-1 (KTH publishes no MD5; these SHA-1 digests are the ones dataset
packages record for the files) before it is kept, then unpacked into `<root>/<action>/` through a
temporary folder, so an interrupted download or unpacking never leaves a half-written file or
folder. Offline, or with a corrupt file, the error says so and how to get the files by hand.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

from convcast.data.download import cache_dir, download
from convcast.data.kth.folder import KTH_ACTIONS

URL = "https://www.csc.kth.se/cvap/actions/{action}.zip"
ARCHIVE_SHA1 = {
    "boxing": "adb36ed9c29c846d44d2ba15f348bd115c951bbd",
    "handclapping": "d3b81261aa822ef63d0d1523f945bfaff27814d2",
    "handwaving": "0792f7cd69f7f895a205c08ac212ddaa7177e370",
    "jogging": "21943bdbcef9dad106db0d74661e49eaeaa15a25",
    "running": "da83bb313edfd4455fffdda6263696fa10d43c6f",
    "walking": "a3e81537271a0ab4576591774baa38c2d97b7e3a",
}
BY_HAND = ("download the six zips from https://www.csc.kth.se/cvap/actions/ by hand and unpack "
           "each into <root>/<action>/")


def fetch_archive(action: str, cache: str | Path | None = None) -> Path:
    """The verified archive of one action, downloaded into the cache once."""
    if action not in ARCHIVE_SHA1:
        raise ValueError(f"unknown KTH action {action!r}; valid: {', '.join(KTH_ACTIONS)}")
    folder = Path(cache) if cache is not None else cache_dir() / "kth"
    return download(URL.format(action=action), f"{action}.zip", ARCHIVE_SHA1[action], folder,
                    algorithm="sha1", by_hand=BY_HAND)


def unpack(archive: Path, folder: Path) -> Path:
    """Unpack the videos of a zip into `folder` (flat, whatever folders the zip uses)."""
    part = folder.with_name(f".{folder.name}.part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = Path(info.filename).name
                if info.is_dir() or not name or name.startswith("."):
                    continue
                with zf.open(info) as src, open(part / name, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as err:
        shutil.rmtree(part, ignore_errors=True)
        raise OSError(f"{archive} is not a readable zip ({err}); delete it and download again, "
                      f"or {BY_HAND}") from err
    os.replace(part, folder)
    return folder


def download_kth(root: str | Path, actions: Sequence[str] = KTH_ACTIONS,
                 cache: str | Path | None = None) -> Path:
    """Make `<root>/<action>/` hold the official videos of every action (present ones are kept)."""
    root = Path(root)
    for action in actions:
        folder = root / action
        if folder.is_dir() and any(folder.glob("*.avi")):
            continue
        unpack(fetch_archive(action, cache), folder)
    return root

"""Operational radar archives through pysteps' importers: one file per frame, read lazily.

`PystepsSource(path, importer="fmi_pgm")` reads a folder (or one file) of radar composites in any
format `pysteps.io.get_method(name, "importer")` reads: ODIM HDF5 and OPERA (`odim_hdf5`,
`opera_hdf5`), MeteoSwiss (`mch_gif`, `mch_hdf5`, `mch_metranet`), FMI (`fmi_pgm`,
`fmi_geotiff`), KNMI (`knmi_hdf5`), BoM (`bom_rf3`), MRMS (`mrms_grib`), DWD (`dwd_hdf5`,
`dwd_radolan`), NWC SAF (`saf_crri`). The time of each frame comes from its file name by
`fn_pattern`, in pysteps' syntax: `strftime` codes (%Y %y %m %d %j %H %M %S) and `?` for any one
character, e.g. `AQC%y%j%H%M?_00005.801` (MeteoSwiss); `fn_ext` is the extension after it. Not
given, both are the provider's defaults in pysteps' own `pystepsrc` (as are the importer's
keyword arguments, `importer_kwargs` overriding them; `gzipped` follows the file names).

Frames are `[1, H, W]` float32 in the unit the importer reports (`units`: dBZ, mm/h, or mm per
`accutime` minutes; a `transform` such as dB on rain rates is undone), NaN where the product has
no data; `metadata` is the importer's for the first file (projection, grid, accutime, zerovalue,
threshold, zr_a/zr_b). Files are read when their frames are asked for, one at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from convcast.data.sources.base import FrameSource, register_source
from convcast.data.sources.times import check_sorted
from convcast.pysteps_modules import pysteps_module

# the packages each importer needs beyond pysteps: (module, what to install)
NEEDS = {
    "bom_rf3": [("netCDF4", "netCDF4")], "saf_crri": [("netCDF4", "netCDF4"), ("pyproj", "pyproj")],
    "fmi_pgm": [("pyproj", "pyproj"), ("PIL", "pillow")],
    "fmi_geotiff": [("osgeo", "GDAL (conda install gdal, or your system's python3-gdal)")],
    "knmi_hdf5": [("h5py", "h5py")], "mch_hdf5": [("h5py", "h5py")],
    "odim_hdf5": [("h5py", "h5py"), ("pyproj", "pyproj")],
    "opera_hdf5": [("h5py", "h5py"), ("pyproj", "pyproj")],
    "dwd_hdf5": [("h5py", "h5py"), ("pyproj", "pyproj")],
    "mch_gif": [("PIL", "pillow")], "mch_metranet": [("metranet", "metranet")],
    "mrms_grib": [("pygrib", "pygrib"), ("pyproj", "pyproj")],
}
# pystepsrc data sources whose importer is named differently from get_method's name
RC_ALIASES = {"geotiff": "fmi_geotiff"}
CODES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "j": r"\d{3}",
         "H": r"\d{2}", "M": r"\d{2}", "S": r"\d{2}"}


def pysteps_io():
    """`pysteps.io`, imported quietly (pysteps prints a banner on import)."""
    return pysteps_module("io", needed_by="reading radar archives with an importer")


def importer_names() -> list[str]:
    """The importers pysteps offers (`pysteps.io.get_method(name, "importer")`)."""
    from pysteps.io import interface

    pysteps_io()
    return sorted(getattr(interface, "_importer_methods", {}))


def get_importer(name: str):
    """pysteps' importer `name`, with the packages it needs checked (named if missing)."""
    pio = pysteps_io()
    try:
        fn = pio.get_method(name, "importer")
    except ValueError:
        raise ValueError(f"unknown importer {name!r}; pysteps offers: "
                         f"{', '.join(importer_names())}") from None
    missing = [pip for mod, pip in NEEDS.get(name, []) if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(f"the {name} importer needs {', '.join(missing)}, which is not "
                          f"installed: pip install 'convcast[nowcast]' (or pip install "
                          f"{' '.join(m.split()[0] for m in missing)})")
    return fn


@cache
def _pystepsrc() -> dict[str, Any]:
    """The data sources of the pystepsrc installed with pysteps (not a user's own copy)."""
    pysteps_io()
    import pysteps

    path = Path(pysteps.__file__).parent / "pystepsrc"
    if not path.exists():
        return {}
    with contextlib.redirect_stdout(io.StringIO()):
        params = pysteps.load_config_file(str(path), dryrun=True)
    return json.loads(json.dumps(dict(params.get("data_sources") or {})))


def provider_defaults(importer: str) -> dict[str, Any]:
    """The pystepsrc data source read by `importer`: fn_pattern, fn_ext, importer_kwargs,
    timestep ({} where pysteps has none)."""
    for key, src in _pystepsrc().items():
        if RC_ALIASES.get(src.get("importer"), src.get("importer")) == importer or key == importer:
            return {k: src[k] for k in ("fn_pattern", "fn_ext", "importer_kwargs", "timestep")
                    if k in src}
    return {}


def file_pattern(importer: str, fn_pattern: str | None = None, fn_ext: str | None = None
                 ) -> tuple[str, str | None]:
    """The file names of an `importer` archive: `(fn_pattern, fn_ext)` as given, else pysteps'
    defaults for the provider."""
    if fn_pattern is not None:
        return fn_pattern, fn_ext
    rc = provider_defaults(importer)
    if "fn_pattern" not in rc:
        raise ValueError(f"pysteps has no default file-name pattern for {importer}; pass "
                         "fn_pattern, e.g. 'RAD_%Y%m%d%H%M' (strftime codes, ? for any "
                         "character)")
    return rc["fn_pattern"], fn_ext or rc.get("fn_ext")


def pattern_regex(fn_pattern: str, fn_ext: str | None) -> tuple[re.Pattern, list[str]]:
    """A regex for whole file names of `fn_pattern` (+ `.fn_ext`; any extension if None) and
    the strftime codes its groups hold, in order."""
    parts, codes, i = [], [], 0
    while i < len(fn_pattern):
        c = fn_pattern[i]
        if c == "%":
            code = fn_pattern[i + 1:i + 2]
            if code == "%":
                parts.append("%")
            elif code in CODES:
                parts.append(f"({CODES[code]})")
                codes.append(code)
            else:
                raise ValueError(f"fn_pattern {fn_pattern!r}: %{code} is not supported; use "
                                 f"{' '.join('%' + k for k in CODES)} and ? for any character")
            i += 2
            continue
        parts.append("." if c == "?" else re.escape(c))
        i += 1
    if not codes:
        raise ValueError(f"fn_pattern {fn_pattern!r} holds no time code (e.g. %Y%m%d%H%M): the "
                         "time of each frame comes from its file name")
    ext = r"(\..+)?" if fn_ext is None else (r"\." + re.escape(fn_ext.lstrip(".")))
    return re.compile("^" + "".join(parts) + ext + "$"), codes


def suggest_importer(path: str | os.PathLike, limit: int = 200) -> tuple[str, str] | None:
    """`(importer, fn_pattern)` of the pysteps data source whose file-name pattern the files
    under `path` match most (at least half of those looked at), or None. For an error that says
    how to read a provider's archive given without `--importer`."""
    root = Path(path)
    names = [root.name] if root.is_file() else [
        p.name for _, p in zip(range(limit), (q for q in root.rglob("*") if q.is_file()),
                               strict=False)]
    if not names:
        return None
    try:
        sources = _pystepsrc()
    except ImportError:
        return None
    best, hits = None, 0
    for src in sources.values():
        importer = RC_ALIASES.get(src.get("importer"), src.get("importer"))
        if not importer or importer.endswith("_nwp") or "fn_pattern" not in src:
            continue
        regex, codes = pattern_regex(src["fn_pattern"], src.get("fn_ext"))
        n = sum(time_of(name, regex, codes) is not None for name in names)
        if n > hits:
            best, hits = (importer, src["fn_pattern"]), n
    return best if hits * 2 >= len(names) else None


def time_of(name: str, regex: re.Pattern, codes: list[str]) -> datetime | None:
    """The time in file name `name` by a `pattern_regex`, or None if the name does not match."""
    m = regex.match(name)
    if m is None:
        return None
    text, fmt = "".join(m.groups()[:len(codes)]), "".join("%" + c for c in codes)
    try:
        return datetime.strptime(text, fmt)
    except ValueError:
        return None


def _untransform(field: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Undo a pysteps `transform` (dB, BoxCox, sqrt, NQT) of a rain rate or accumulation; a
    reflectivity in dBZ is left in dBZ."""
    transform = meta.get("transform")
    if transform is None or (transform == "dB" and str(meta.get("unit")) == "dBZ"):
        return field, meta
    from pysteps.utils import transformation as tr

    inverse = {"dB": tr.dB_transform, "BoxCox": tr.boxcox_transform, "log": tr.boxcox_transform,
               "sqrt": tr.sqrt_transform, "NQT": tr.NQ_transform}.get(transform)
    if inverse is None:
        raise ValueError(f"unknown transform {transform!r} in the importer's metadata")
    return inverse(field, dict(meta), inverse=True)


def _plain(meta: dict[str, Any]) -> dict[str, Any]:
    """Importer metadata as plain Python values (numpy scalars to floats, bytes to text)."""
    out = {}
    for k, v in meta.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, bytes):
            v = v.decode(errors="replace")
        if v is None or isinstance(v, (str, int, float, bool)):
            out[k] = v
    return out


@register_source("pysteps", aliases=("importer",))
class PystepsSource(FrameSource):
    """A folder of radar composites read by a pysteps importer (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, importer: str | None = None,
                 importer_kwargs: dict[str, Any] | None = None, fn_pattern: str | None = None,
                 fn_ext: str | None = None, recursive: bool = True) -> None:
        if not importer:
            raise ValueError(f"{path}: name the importer that reads this archive, one of "
                             f"{', '.join(importer_names())} (e.g. importer='fmi_pgm')")
        self._h_importer = get_importer(importer)
        self.importer, self.path = importer, Path(path)
        self.name = self.path.name or str(self.path)
        rc = provider_defaults(importer)
        self.fn_pattern, self.fn_ext = file_pattern(importer, fn_pattern, fn_ext)
        self.files, times = self._list(recursive)
        self.timestamps = check_sorted(np.array(times, dtype="datetime64[s]"), str(self.path))
        kwargs = dict(rc.get("importer_kwargs") or {})
        if "gzipped" in kwargs and "gzipped" not in (importer_kwargs or {}):
            kwargs["gzipped"] = self.files[0].name.endswith(".gz")  # follow the file names
        self.importer_kwargs = {**kwargs, **(importer_kwargs or {})}
        first, meta = self._import(0)
        self._first = first  # [H, W], read again by no later _read
        self.metadata = _plain(meta)
        self.units = self.metadata.get("unit")
        self.num_frames, self.frame_shape = len(self.files), (1, *first.shape)
        self.dtype = np.dtype(np.float32)

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return False  # it needs its importer named: never picked by the path alone

    def _list(self, recursive: bool) -> tuple[list[Path], list[datetime]]:
        regex, codes = pattern_regex(self.fn_pattern, self.fn_ext)
        if self.path.is_file():
            candidates = [self.path]
        else:
            found = self.path.rglob("*") if recursive else self.path.iterdir()
            candidates = sorted(p for p in found if p.is_file())
        pairs = [(t, p) for p in candidates if (t := time_of(p.name, regex, codes)) is not None]
        if not pairs:
            example = candidates[0].name if candidates else "no files at all"
            ext = f" + '.{self.fn_ext}'" if self.fn_ext else ""
            raise ValueError(f"{self.path}: no file name matches fn_pattern "
                             f"{self.fn_pattern!r}{ext} (e.g. {example}); pass the archive's "
                             "fn_pattern (strftime codes, ? for any character) and fn_ext")
        pairs.sort()
        for (t0, p0), (t1, p1) in zip(pairs, pairs[1:], strict=False):
            if t0 == t1:
                raise ValueError(f"{p0} and {p1} have the same time {t0} by fn_pattern "
                                 f"{self.fn_pattern!r}; keep one, or make the pattern tell "
                                 "them apart")
        return [p for _, p in pairs], [t for t, _ in pairs]

    def _import(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame `i` as float32 `[H, W]` (NaN = no data) and its metadata."""
        path = self.files[i]
        importer = self.__dict__.get("_h_importer") or get_importer(self.importer)
        try:
            field, _, meta = importer(str(path), **self.importer_kwargs)
        except Exception as err:  # importers raise all kinds; say which file
            if isinstance(err, ImportError) or type(err).__name__ == "MissingOptionalDependency":
                raise ImportError(f"{path}: {err}; pip install 'convcast[nowcast]'") from err
            raise ValueError(f"{path}: the {self.importer} importer could not read it "
                             f"({type(err).__name__}: {err}); is it a {self.importer} file, and "
                             f"are importer_kwargs {self.importer_kwargs} right?") from err
        if isinstance(field, np.ma.MaskedArray):  # masked = no data
            field = field.astype(np.float64).filled(np.nan)
        field = np.where(np.isfinite(field), field, np.nan)
        field, meta = _untransform(field, meta)
        if field.ndim != 2:
            raise ValueError(f"{path}: the {self.importer} importer gave a {field.ndim}-D field "
                             f"{field.shape}; expected one 2-D composite per file")
        return field.astype(np.float32), meta

    def _read(self, start: int, stop: int) -> np.ndarray:
        frames = []
        for i in range(start, stop):
            f = self._first if i == 0 else self._import(i)[0]  # [H, W]
            if (1, *f.shape) != self.frame_shape:
                raise ValueError(f"{self.files[i]} holds a {f.shape[0]}x{f.shape[1]} field but "
                                 f"the archive's first file {self.files[0].name} is "
                                 f"{self.frame_shape[1]}x{self.frame_shape[2]}; keep one grid "
                                 "per archive")
            frames.append(f[None])
        return np.stack(frames)  # [n, 1, H, W]

    def fingerprint(self) -> dict[str, Any]:
        """Importer, options and every file's name, size and time of change."""
        h = hashlib.sha256()
        for p in self.files:
            st = os.stat(p)
            h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return {"kind": self.kind, "importer": self.importer, "path": str(self.path.resolve()),
                "importer_kwargs": json.dumps(self.importer_kwargs, sort_keys=True, default=str),
                "files": h.hexdigest()}

"""Time stamps of frames: from file names, from arrays (datetime64, ISO text, CF numbers), or
regular steps from a start time. All come out as `datetime64[s]`."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np

DEFAULT_TIME_REGEX = r"(?<!\d)(\d{14}|\d{12})(?!\d)"  # YYYYMMDDHHMM[SS] anywhere in a name
TIME_NAMES = ("timestamps", "timestamp", "time", "times")  # arrays that hold the time axis


def to_datetime64(values, units_attr: str | bytes | None = None, where: str = "") -> np.ndarray:
    """Timestamps as datetime64[s]: from datetime64, ISO strings/bytes, or numbers (seconds since
    the epoch, or a CF units string like 'minutes since 2020-01-01 00:00')."""
    a = np.asarray(values)
    if np.issubdtype(a.dtype, np.datetime64):
        return a.astype("datetime64[s]")
    if a.dtype.kind in "SUO":
        return np.array([np.datetime64(v.decode() if isinstance(v, bytes) else str(v), "s")
                         for v in a.ravel()], dtype="datetime64[s]")
    if a.dtype.kind in "iuf":
        unit, origin = "s", np.datetime64("1970-01-01T00:00:00", "s")
        if units_attr is not None:
            text = units_attr.decode() if isinstance(units_attr, bytes) else str(units_attr)
            m = re.match(r"\s*(second|minute|hour|day)s?\s+since\s+(.+)", text, re.IGNORECASE)
            if not m:
                raise ValueError(f"{where}: time units {text!r} are not '<unit> since <date>'")
            unit = {"second": "s", "minute": "m", "hour": "h", "day": "D"}[m.group(1).lower()]
            origin = np.datetime64(m.group(2).strip().replace(" ", "T").rstrip("Z"), "s")
        seconds = a.astype(np.float64) * {"s": 1, "m": 60, "h": 3600, "D": 86400}[unit]
        return origin + np.round(seconds).astype("timedelta64[s]")
    raise ValueError(f"{where}: cannot read timestamps of dtype {a.dtype}")


def regular_timestamps(n: int, start_time: str | None, step_minutes: float | None,
                       where: str) -> np.ndarray:
    """`n` timestamps from `start_time` every `step_minutes` (for arrays with no time axis)."""
    if start_time is None or step_minutes is None:
        raise ValueError(f"{where} holds no timestamps; pass start_time='2020-06-01T00:00' and "
                         "step_minutes=6 (the time of the first frame and the interval)")
    step = np.timedelta64(int(round(step_minutes * 60)), "s")
    return np.datetime64(start_time, "s") + step * np.arange(n)


def parse_time(name: str, time_format: str | None = None, time_regex: str | None = None
               ) -> datetime | None:
    """The time in a file stem, or None if it holds none.

    By default the first run of 12 or 14 digits is read as YYYYMMDDHHMM[SS]; `time_format` is a
    `strptime` pattern of the whole stem (e.g. "RAD%y%m%d%H%M00"), and `time_regex` picks the part
    to parse (its first group, else the whole match).
    """
    text = name
    if time_regex is not None or time_format is None:
        m = re.search(time_regex or DEFAULT_TIME_REGEX, name)
        if m is None:
            return None
        text = m.group(1) if m.groups() else m.group(0)
    fmt = time_format or ("%Y%m%d%H%M%S" if len(text) == 14 else "%Y%m%d%H%M")
    try:
        return datetime.strptime(text, fmt)
    except ValueError:
        return None


def check_sorted(ts: np.ndarray, where: str) -> np.ndarray:
    """`ts` if strictly increasing, else an error naming the first frame out of order."""
    d = np.diff(ts)
    if (d <= np.timedelta64(0, "s")).any():
        i = int(np.argmax(d <= np.timedelta64(0, "s")))
        raise ValueError(f"{where}: timestamps must be strictly increasing, but frame {i + 1} "
                         f"({ts[i + 1]}) does not follow frame {i} ({ts[i]}); sort the archive "
                         "along time and drop duplicates")
    return ts

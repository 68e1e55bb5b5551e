"""A fresh forecast as soon as each new frame arrives in a folder (`convcast nowcast --watch`).

    import convcast
    convcast.watch("radar/", "nowcast/", model="model.ckpt", once=True)  # or model="optical_flow"

or `Watcher(WatchConfig(...)).run()`. A radar writes one file every few minutes. The watcher looks
at FOLDER (and its sub-folders) every `poll_seconds` with `os.scandir` and takes each new file in
time order:

1. its time from its name, as `nowcast` reads the archive (image names: `--time_format` /
   `time_regex`, default 12 or 14 digits; with an `importer`: `fn_pattern`);
2. the file alone is read (an empty, truncated or corrupt file is said and skipped, and tried
   again if it changes later, e.g. when its writer finishes it), and its grid and units are
   checked against the stream's;
3. it must follow the stream's last frame by one step: an earlier or equal time (out of order,
   duplicate) is said and skipped; a later one is a gap, which resets the stream (said);
4. it is prepared as the model's training data was (`convcast.inference.forecast`, as `nowcast`
   does), the stream advances by this frame alone (`Stream.update`: one recurrent step, nothing
   re-encoded), and the forecast (`Stream.forecast`) is written by `convcast.inference.outputs`,
   `OUT/forecast.npz`, `forecast.nc` and `forecast.gif`, each atomically.

A forecast needs `input_frames` gap-free frames since the last reset, as `nowcast` does. After
frames x_1..x_T since a reset a recurrent model forecasts `model(x_1..x_T)`: `nowcast`'s
forecast with `--input_frames T` (so at T = input_frames exactly `nowcast`'s), later a longer
history than the training windows (see `convcast.inference.stream`); baselines and other stateless
models keep the latest `input_frames` frames. Started without a saved state, the watcher warms up
from the latest gap-free `input_frames` frames already in FOLDER. After each batch of files the
stream is saved to `OUT/stream_state.pt` (atomically; tensors, numbers and strings, loadable
weights-only) with the time of its last frame, the latest prepared frames (for the animation) and
a fingerprint of the model and of the preparation options: a restarted watcher resumes from it
without reading old frames, and refuses a state saved for another model. `once` takes what is
new and exits (for cron); `max_files=N` stops after N new files. Producers should write each
file under a hidden name (starting with `.`) and rename it: hidden files are never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from convcast.atomic import atomic_path
from convcast.data.radar.archive import archive_grid
from convcast.data.radar.timeline import gap_after, infer_step
from convcast.data.sources import FrameSource
from convcast.data.sources.images import IMAGE_EXTS, read_image
from convcast.data.sources.pysteps_importer import file_pattern, pattern_regex, time_of
from convcast.data.sources.times import parse_time
from convcast.inference.forecast import (
    Preparation,
    RadarOptions,
    add_members,
    assemble,
    check_ensemble_options,
    draw_members,
    open_input,
    reader_options,
    trained_model,
)
from convcast.inference.outputs import OutputOptions, write_outputs
from convcast.inference.stream import Stream, is_recurrent
from convcast.train.checkpoint import unreadable_reason

STATE_FILE = "stream_state.pt"
STATE_VERSION = 1
IMAGE_FORMATS = ("auto", "images", "png", "frames")


def say_to_stderr(msg: str) -> None:
    print(f"convcast watch: {msg}", file=sys.stderr)


@dataclass(frozen=True, kw_only=True)
class WatchConfig:
    """What a `Watcher` watches, with what, and where it writes.

    `model`: a checkpoint path, a forecaster module, or the name of a registered baseline
    (e.g. "optical_flow"); `radar`: how files are read and prepared (`RadarOptions`; the
    checkpoint's settings by default); `input_frames` / `horizon`: default the checkpoint's
    (else 5 and 15); `members` / `probability_thresholds`: also draw an ensemble with each
    forecast and its exceedance probabilities, as `forecast(..., members=N)` does; `outputs`:
    the writers' options; `say`: where the log goes, one line per call.
    """

    folder: Path
    out: Path
    model: str | Path | nn.Module
    radar: RadarOptions = field(default_factory=RadarOptions)
    input_frames: int | None = None
    horizon: int | None = None
    members: int | None = None
    probability_thresholds: tuple[float, ...] | None = None
    outputs: OutputOptions = field(default_factory=OutputOptions)
    say: Callable[[str], None] = say_to_stderr

    def load(self) -> nn.Module | Path:
        """The model: a module, a registered baseline built by name, or a checkpoint path."""
        if isinstance(self.model, nn.Module):
            return self.model
        from convcast.models import create_model, is_baseline, list_models

        name = str(self.model)
        if name in list_models() and not Path(name).exists():
            if not is_baseline(name):
                valid = ", ".join(n for n in list_models() if is_baseline(n))
                raise ValueError(f"model {name!r} is not trained: give a checkpoint path, or a "
                                 f"baseline: {valid}")
            return create_model(name)
        return Path(self.model)


def _wait(seconds: float) -> None:
    time.sleep(seconds)


def _hm(t: np.datetime64) -> str:
    return str(t.astype("datetime64[m]"))


class OneImage(FrameSource):
    """One image of a watched folder, read as the image-folder reader reads it (gray)."""

    kind = "images"

    def __init__(self, path: Path, when: np.datetime64) -> None:
        self.path, self.name, self.units, self.metadata = path, path.name, None, {}
        self._frame = read_image(path, gray=True).transpose(2, 0, 1)[None]  # [1, C, H, W]
        self.num_frames, self.frame_shape = 1, tuple(self._frame.shape[1:])
        self.dtype, self.timestamps = self._frame.dtype, np.array([when], "datetime64[s]")

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self._frame[start:stop]


class OtherGridError(ValueError):
    """A frame on another grid, or in other units, than the stream's."""


class Watcher:
    """The watch loop's state and its steps (see the module docstring); `run()` is the loop,
    `poll()` one look at the folder."""

    def __init__(self, config: WatchConfig) -> None:
        folder = Path(config.folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"--watch {folder}: not a folder; give the folder the radar "
                                    "writes its files into")
        self.config, self.say = config, config.say
        # ensemble options are checked before the model loads
        self.thresholds = check_ensemble_options(config.members, config.probability_thresholds)
        self.radar = config.radar
        self.tm = trained_model(config.load(), "cpu")
        self.d = self.tm.description
        self.importer = reader_options(self.d, self.radar, [])["importer"]
        fmt = self.radar.format or "auto"
        if self.importer is None and fmt not in IMAGE_FORMATS:
            raise ValueError(f"--watch reads one file per frame: images with the time in their "
                             f"names, or a provider's files with --importer; --format {fmt} "
                             "reads whole archives: forecast from one with --input instead")
        self.folder, self.out = folder, Path(config.out)
        self.outputs = config.outputs
        self.need = config.input_frames or (self.d.input_frames if self.d else 5)
        self.horizon = config.horizon or (self.d.output_frames if self.d else 15)
        if self.need < 1 or self.horizon < 1:
            raise ValueError(f"horizon and input_frames must be positive, got {self.horizon}, "
                             f"{self.need}")
        self.time_in = self._namer()
        # a recurrent model advances its state; a stateless one reads the latest input_frames
        self.stream = Stream(self.tm.model, None if is_recurrent(self.tm.model) else self.need)
        self.fingerprint = self._fingerprint()
        self.step = self._given_step()
        self.last: np.datetime64 | None = None  # time of the stream's last frame
        self.recent: list[np.ndarray] = []  # prepared frames [C, h, w] since the reset, <= need
        self.recent_times: list[np.datetime64] = []
        self.reference: dict[str, Any] | None = None  # raw shape, units and grid of the frames
        self.seen: dict[str, tuple[int, int, bool]] = {}  # path -> size, mtime, retry if changed
        self.latest: tuple | None = None  # the last frame's size and Preparation
        self.stale = False  # a frame has been taken since the last forecast
        self.noted = False
        self.timing: dict[str, float] = {}

    # ---- what is in the folder -----------------------------------------------------------------
    def _namer(self) -> Callable[[str], datetime | None]:
        """File name -> its time (datetime), or None where it is not a frame of the archive."""
        if self.importer is None:
            fmt, rx = self.radar.time_format, self.radar.time_regex
            return lambda name: (parse_time(Path(name).stem, fmt, rx)
                                 if Path(name).suffix.lower() in IMAGE_EXTS else None)
        regex, codes = pattern_regex(*file_pattern(self.importer, self.radar.fn_pattern,
                                                   self.radar.fn_ext))
        return lambda name: time_of(name, regex, codes)

    def scan(self) -> list[tuple[np.datetime64, Path]]:
        """Frame files not handled yet (or changed since they could not be read), by time."""
        if not self.folder.is_dir():
            raise FileNotFoundError(f"the watched folder {self.folder} is gone")
        found, stack = [], [self.folder]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:  # a sub-folder removed meanwhile (e.g. an old day rotated out)
                continue
            for e in entries:
                if e.name.startswith("."):  # hidden: partial files of atomic writers
                    continue
                try:
                    if e.is_dir():
                        stack.append(Path(e.path))
                        continue
                    when = self.time_in(e.name) if e.is_file() else None
                    st = e.stat() if when is not None else None
                except OSError:  # removed since it was listed
                    continue
                if when is None:
                    continue
                done = self.seen.get(e.path)
                if done is None or (done[2] and done[:2] != (st.st_size, st.st_mtime_ns)):
                    found.append((np.datetime64(when, "s"), Path(e.path)))
        return sorted(found)

    def _mark(self, path: Path, retry: bool = False) -> None:
        try:
            st = path.stat()
            self.seen[str(path)] = (st.st_size, st.st_mtime_ns, retry)
        except OSError:
            self.seen[str(path)] = (-1, -1, retry)

    # ---- one file ------------------------------------------------------------------------------
    def take(self, when: np.datetime64, path: Path) -> tuple[bool, str]:
        """Check one file and advance the stream by it; `(taken, what happened)`."""
        if self.last is not None and when <= self.last:
            self._mark(path)
            why = "duplicate time" if when == self.last else "out of order"
            return False, f"skipped: {why} (the stream is at {_hm(self.last)})"
        try:
            empty = path.stat().st_size == 0
        except OSError as err:
            return False, f"skipped: gone before it was read ({err.strerror})"
        if empty:
            self._mark(path, retry=True)
            return False, "skipped: empty file (still being written?); tried again once it changes"
        t0 = time.perf_counter()
        try:
            notes: list[str] = []
            raw_one = OneImage(path, when) if self.importer is None else path
            source = open_input(raw_one, True, self.d, "auto", None, self.radar, notes)
            raw = source.read(0, 1)  # [1, C, H, W] float32 in the archive's units, NaN = none
            grid = self._check_grid(source)
            prep = Preparation.for_radar(source, self.d, self.radar, input_frames=self.need,
                                         horizon=self.horizon, model=self.tm.model, notes=notes)
            x = prep.prepare(raw)  # [1, C, h, w] model values, NaN = no data
            self.reference = self.reference or grid
        except OtherGridError as err:
            self._mark(path, retry=True)
            return False, f"skipped: {err}"
        except Exception as err:  # any reader's error: the watcher goes on
            self._mark(path, retry=True)
            return False, f"skipped: unreadable ({str(err).replace(str(path), path.name)})"
        self._mark(path)
        self.timing = {"read": time.perf_counter() - t0}
        what = "stream"
        if self.last is not None:
            step = self.step if self.step is not None else when - self.last
            if gap_after(np.array([self.last, when]), step)[0]:
                if when - self.last < step:
                    return False, (f"skipped: {_hm(when)} comes {self._minutes(when - self.last):g}"
                                   f" min after {_hm(self.last)}, off the "
                                   f"{self._minutes(step):g}-min step")
                what = (f"gap of {self._minutes(when - self.last):g} min after "
                        f"{_hm(self.last)}: stream reset")
                self.reset()
            self.step = step
        if not self.noted:
            for note in notes:
                self.say(note)
            self._check_step()
            self.noted = True
        t1 = time.perf_counter()
        self.stream.update(torch.from_numpy(np.nan_to_num(x, nan=0.0))[None])  # [1, 1, C, h, w]
        self.timing["update"] = time.perf_counter() - t1
        self.recent, self.recent_times = ([*self.recent, x[0]][-self.need:],
                                          [*self.recent_times, when][-self.need:])
        self.last, self.stale = when, True
        self.latest = (tuple(raw.shape[-2:]), prep)
        return True, what

    def _check_grid(self, source: FrameSource) -> dict[str, Any]:
        """The file's frame shape, units and georeference, which must be the stream's."""
        grid = archive_grid(source)
        mine = {"shape": list(source.frame_shape), "units": source.units,
                "grid": None if grid is None else asdict(grid)}
        ref = self.reference
        if ref is None:
            return mine
        for key, what in (("shape", "frames of C×H×W"), ("units", "units"),
                          ("grid", "georeference")):
            if json.dumps(mine[key], default=str) != json.dumps(ref[key], default=str):
                raise OtherGridError(f"its {what} {mine[key]} differ from the stream's "
                                     f"{ref[key]}; one watcher follows one grid: watch a changed "
                                     "archive into another --out")
        return mine

    def _check_step(self) -> None:
        d, step = self.d, self.step
        if d is not None and d.step_minutes and step is not None and \
                abs(d.step_minutes - self._minutes(step)) > 1e-6:
            self.say(f"warning: the frames come every {self._minutes(step):g} min but the model "
                     f"was trained on {d.step_minutes:g}-minute steps")

    @staticmethod
    def _minutes(delta: np.timedelta64) -> float:
        return float(delta.astype("timedelta64[s]").astype(np.int64)) / 60

    def _given_step(self) -> np.timedelta64 | None:
        minutes = self.radar.step_minutes
        if minutes is not None and minutes <= 0:
            raise ValueError(f"--step_minutes must be positive, got {minutes}")
        return None if minutes is None else np.timedelta64(int(round(minutes * 60)), "s")

    def reset(self) -> None:
        """Start the stream afresh (after a gap)."""
        self.stream.reset()
        self.recent, self.recent_times = [], []

    # ---- forecast and state --------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.stream.frames_seen >= self.need

    def write_forecast(self) -> str:
        """Forecast from the stream and write it; the log's summary of it."""
        t0 = time.perf_counter()
        pred = self.stream.forecast(self.horizon)[0].float().numpy()  # [K, C, h, w]
        self.timing["forecast"] = time.perf_counter() - t0
        size, prep = self.latest
        times = np.array(self.recent_times, dtype="datetime64[s]")
        minutes = self._minutes(self.step) if self.step is not None else (
            self.d.step_minutes if self.d else None)
        if not minutes:
            return "no forecast: the time step is unknown from one frame; pass --step_minutes"
        prepared = np.stack(self.recent)  # [T, C, h, w] model values, NaN = missing
        fc = assemble(pred, prepared, prep, model_name=self.tm.model_name,
                      input_size=size, input_times=times, minutes=minutes, notes=[])
        if self.config.members is not None:  # the ensemble, from the latest input frames
            x = torch.from_numpy(np.nan_to_num(prepared[-self.need:], nan=0.0))[None]
            with torch.inference_mode():
                ens = draw_members(self.tm.model, x, torch.from_numpy(pred)[None],
                                   self.config.members)[0]
            add_members(fc, ens.float().numpy(), prepared, prep, thresholds=self.thresholds)
            self.timing["forecast"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        write_outputs(self.out, fc, self.outputs, self.say)
        self.timing["write"] = time.perf_counter() - t1
        self.stale = False
        first, last = (str(t)[11:16] for t in (fc.valid_times[0], fc.valid_times[-1]))
        return f"forecast {first}..{last}"

    def _fingerprint(self) -> dict[str, str]:
        """What a saved stream belongs to: the model (name, arguments, weights) and the options
        that change the prepared frames."""
        h = hashlib.sha256(self.tm.model_name.encode())
        h.update(json.dumps(self.tm.model_kwargs, sort_keys=True, default=str).encode())
        for key, v in sorted(self.tm.model.state_dict().items()):
            h.update(key.encode())
            h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        options = self.radar.value_options()
        return {"model": f"{self.tm.model_name} {h.hexdigest()[:16]}",
                "preparation": json.dumps(options, sort_keys=True, default=str)}

    @property
    def state_path(self) -> Path:
        return self.out / STATE_FILE

    def save(self) -> None:
        """The stream and what it has seen, atomically, as tensors, numbers and strings."""
        state = {"version": STATE_VERSION, "fingerprint": self.fingerprint,
                 "stream": self.stream.state_dict(), "last_time": str(self.last),
                 "step_seconds": None if self.step is None else int(
                     self.step.astype("timedelta64[s]").astype(np.int64)),
                 "recent": torch.from_numpy(np.stack(self.recent)) if self.recent else None,
                 "recent_times": [str(t) for t in self.recent_times],
                 "reference": json.dumps(self.reference), "saved": datetime.now().isoformat()}
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def resume(self) -> bool:
        """Continue from OUT/stream_state.pt where there is one (False: there is none)."""
        path = self.state_path
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            why = None if isinstance(state, dict) and state.get("version") == STATE_VERSION \
                else "not a stream state of this version"
        except Exception as err:  # truncated, foreign, holds code
            why = unreadable_reason(path, err) if zipfile.is_zipfile(path) else \
                "not a file torch.save wrote, or a truncated one"
        if why:
            raise ValueError(f"{path} is not a stream state this watcher can read: {why}; "
                             "delete it to start afresh from the latest frames of the folder")
        saved = state["fingerprint"]
        for key, what in (("model", "model"), ("preparation", "preparation options")):
            if saved[key] != self.fingerprint[key]:
                raise ValueError(f"{path} was saved by a watcher of another {what} ({saved[key]}"
                                 f"; this one: {self.fingerprint[key]}); watch into another "
                                 "--out, or delete it to start afresh")
        self.stream.load_state_dict(state["stream"])
        self.last = np.datetime64(state["last_time"], "s")
        self.step = self.step if state["step_seconds"] is None else \
            np.timedelta64(state["step_seconds"], "s")
        recent = state["recent"]
        self.recent = [] if recent is None else list(recent.numpy())
        self.recent_times = [np.datetime64(t, "s") for t in state["recent_times"]]
        self.reference = json.loads(state["reference"])
        for when, old in self.scan():
            if when <= self.last:
                self._mark(old)  # taken before the restart: not read again
        self.say(f"{self.tm.model_name}: resumed from {path} (last frame {_hm(self.last)}, "
                 f"{self.stream.frames_seen} frames since the last reset)")
        return True

    # ---- the loop ------------------------------------------------------------------------------
    def handle(self, files: list[tuple[np.datetime64, Path]], quiet: bool = False) -> int:
        """Take `files` in time order, forecast after the newest taken one; returns how many
        were handled. Each is said in the log (`quiet`: only those skipped, and the last)."""
        taken_any = False
        for i, (when, path) in enumerate(files):
            t0 = time.perf_counter()
            taken, what = self.take(when, path)
            taken_any |= taken
            if taken:
                more = self.stream.frames_seen < self.need
                if more:
                    what += (f"; {self.stream.frames_seen} of {self.need} frames, no forecast "
                             "yet")
                elif i == len(files) - 1:
                    what = ("" if what == "stream" else what + "; ") + self.write_forecast()
                else:
                    what += " (a newer file follows)"
            if not (quiet and taken and i < len(files) - 1):
                self.say(f"{_hm(when)} {path.name} -> {what} ({time.perf_counter() - t0:.2f} s)")
        if self.stale and self.ready:
            self.say(f"{_hm(self.last)} -> {self.write_forecast()}")
        if taken_any:
            self.save()
        return len(files)

    def warm_up(self) -> None:
        """Without a saved state: take the latest gap-free `input_frames` frames of the folder."""
        files = self.scan()
        if not files:
            self.say(f"{self.tm.model_name}: no frames in {self.folder} yet; waiting for them")
            return
        twice = [f for i, f in enumerate(files) if i and f[0] == files[i - 1][0]]
        files = [f for f in files if f not in twice]  # a time given twice: the first name
        times = np.array([t for t, _ in files], dtype="datetime64[s]")
        if self.step is None:
            if len(times) > 1:
                self.step = infer_step(times)
            elif self.d is not None and self.d.step_minutes:
                self.step = np.timedelta64(int(round(self.d.step_minutes * 60)), "s")
        start = len(files) - 1
        while start > 0 and len(files) - start < self.need and self.step is not None \
                and not gap_after(times[start - 1:start + 1], self.step)[0]:
            start -= 1
        for when, path in files[:start] + twice:
            self._mark(path)  # older than the warm-up, or a time given twice: not read
            if when >= times[start]:
                self.say(f"{_hm(when)} {path.name} -> skipped: duplicate time")
        self.say(f"{self.tm.model_name}: warming up from {len(files) - start} of {len(files)} "
                 f"frames in {self.folder}, {_hm(times[start])} .. {_hm(times[-1])}")
        self.handle(files[start:], quiet=True)
        # the newest files could not be read (corrupt, truncated): forecast from the latest
        # readable window instead, reaching back over as many older frames
        unread = self._unreadable_tail(files[start:])
        while not self.ready and unread and start > 0 and not gap_after(
                times[start - 1:start + 1], self.step)[0]:
            start -= 1
            self.say(f"the newest {unread} file(s) could not be read: warming up from "
                     f"{_hm(times[start])} instead")
            self.reset()
            self.last, self.reference = None, None
            self.handle(files[start:], quiet=True)

    def _unreadable_tail(self, files: list[tuple[np.datetime64, Path]]) -> int:
        """How many of the newest `files` could not be read (marked to be retried)."""
        n = 0
        for _, path in reversed(files):
            if not self.seen.get(str(path), (0, 0, False))[2]:
                break
            n += 1
        return n

    def _exit_status(self) -> int:
        """0, or 1 (said) when the newest file of the folder could not be read and no forecast
        could be made without it: the outputs are older than the radar's last frame."""
        seen = [(self.time_in(Path(p).name), Path(p), retry)
                for p, (_, _, retry) in self.seen.items()]
        seen = [(when, path, retry) for when, path, retry in seen if when is not None]
        newest = max((when for when, _, _ in seen), default=None)
        stuck = [path for when, path, retry in seen if retry and when == newest]
        if stuck and not self.ready:
            self.say(f"no forecast: the newest file {stuck[0].name} could not be read and the "
                     f"frames before it are not {self.need} gap-free ones; fix or remove it")
            return 1
        return 0

    def poll(self, limit: int | None = None) -> int:
        """One look at the folder: take what is new (at most `limit` files)."""
        files = self.scan()
        return self.handle(files[:limit] if limit is not None else files) if files else 0

    def run(self, once: bool = False, max_files: int | None = None,
            poll_seconds: float = 10.0) -> int:
        if poll_seconds <= 0:
            raise ValueError(f"--poll_seconds must be positive, got {poll_seconds}")
        if max_files is not None and max_files < 1:
            raise ValueError(f"--max_files must be at least 1, got {max_files}")
        if not self.resume():
            self.warm_up()
        handled = 0
        try:
            while True:
                handled += self.poll(None if max_files is None else max_files - handled)
                if once or (max_files is not None and handled >= max_files):
                    return self._exit_status()
                _wait(poll_seconds)
        except KeyboardInterrupt:
            self.say(f"stopped; the stream is saved in {self.state_path}")
            return 130


def watch(folder: str | Path, out: str | Path, *, model: str | Path | nn.Module,
          once: bool = False, max_files: int | None = None, poll_seconds: float = 10.0,
          radar: RadarOptions | dict[str, Any] | None = None, **config: Any) -> int:
    """Watch `folder` and write a fresh forecast into `out` for each new file (see the module
    docstring); `model` a checkpoint path, a module or a baseline's name; `radar` reading
    options; `config` more `WatchConfig` fields. Returns 0 when done (`once`, `max_files`), 130
    when interrupted."""
    cfg = WatchConfig(folder=Path(folder), out=Path(out), model=model,
                      radar=RadarOptions.of(radar), **config)
    return Watcher(cfg).run(once, max_files, poll_seconds)

"""Serving: a trained forecaster applied to new frames, the one way every command does it.

- `forecast(model_or_ckpt, frames, horizon)`: the latest window of a file, folder or array,
  prepared as the model's training data was, forecast, and turned back into the input's values
  (`forecast.py`; radar reading options typed as `RadarOptions`);
- `stream(model_or_ckpt)`: frame-by-frame forecasting from a recurrent state (`stream.py`);
- `write_outputs(out, fc, ...)`: a radar forecast as NetCDF, npz and GIF, each atomically
  (`outputs.py`);
- `watch(folder, out, ...)` / `Watcher(WatchConfig(...))`: a fresh forecast for each new file of
  a folder (`watch.py`).

The command line (`convcast predict`, `nowcast`, `nowcast --watch`) parses arguments and calls
these; layers <- models <- train <- inference <- cli.
"""

from convcast.inference.forecast import (
    Forecast,
    Preparation,
    RadarOptions,
    assemble,
    forecast,
    open_input,
    reader_options,
    resize_back,
    trained_model,
)
from convcast.inference.stream import Stream, is_recurrent, stream

__all__ = ["Forecast", "Preparation", "RadarOptions", "Stream", "assemble", "forecast",
           "is_recurrent", "open_input", "reader_options", "resize_back", "stream",
           "trained_model"]

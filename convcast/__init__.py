"""convcast: forecasting gridded sequences with convolutional recurrent networks.

`create_model`, `list_models`, `forecast`, `stream` and `watch` load lazily, so
`import convcast.metrics` (or `.data`, `.viz`) does not import the models.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "forecast", "list_models", "stream", "watch"]


def __getattr__(name: str) -> Any:
    if name in ("create_model", "list_models"):
        from convcast import models

        return getattr(models, name)
    if name == "forecast":
        from convcast.inference import forecast

        return forecast
    if name == "stream":
        from convcast.inference.stream import stream

        return stream
    if name == "watch":
        from convcast.inference.watch import watch

        return watch
    raise AttributeError(f"module 'convcast' has no attribute {name!r}")

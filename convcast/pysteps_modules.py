"""pysteps, imported the one way every part of convcast needs it: quietly (pysteps prints a
banner and its configuration on import) and with an error that says what needs it and how to
install it. pysteps is an optional dependency (`pip install convcast[nowcast]`)."""

from __future__ import annotations

import contextlib
import io
import os
from types import ModuleType


def pysteps_module(name: str, *, needed_by: str) -> ModuleType:
    """`pysteps.<name>` (e.g. "motion", "io", "blending.steps"); `needed_by` completes the
    error, e.g. "the optical_flow baseline"."""
    os.environ.setdefault("PYSTEPS_SILENT_IMPORT", "1")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return __import__(f"pysteps.{name}", fromlist=["_"])
    except ImportError as err:
        raise ImportError(f"{needed_by} needs pysteps: pip install convcast[nowcast]") from err

"""Frame sources: one interface for every kind of input, one registry of readers by kind.

    open_sources(path)            the sequences in a file or folder (reader picked by the path)
    open_source(path)             the one sequence in it
    get_method("npz")             a reader class by kind; list_sources() names them all
    register_source("kind", exts) class decorator that adds a reader

Built-in kinds: video, images, npy, npz, hdf5, netcdf, zarr, pysteps (operational radar formats
through pysteps' importers). See `base.FrameSource`. A new reader is one file in this folder: a
`FrameSource` subclass with `@register_source("kind", extensions)` (every module here is
imported, which registers it).
"""

import importlib
import pkgutil

from convcast.data.sources.base import (
    FrameSource,
    detect_kind,
    get_method,
    list_sources,
    open_source,
    open_sources,
    register_source,
    supported_options,
)
from convcast.data.sources.images import IMAGE_EXTS, list_images, natural_key, read_image
from convcast.data.sources.video import VIDEO_EXTS

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")  # a reader is one file: importing registers it

__all__ = ["IMAGE_EXTS", "VIDEO_EXTS", "FrameSource", "detect_kind", "get_method", "list_images",
           "list_sources", "natural_key", "open_source", "open_sources", "read_image",
           "register_source", "supported_options"]

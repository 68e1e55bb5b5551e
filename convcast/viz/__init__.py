"""Pictures: animations, strips and plots. Imports no model code."""

from convcast.viz.animation import frame_grid, to_uint8_frames, write_animation, write_strip

__all__ = ["frame_grid", "to_uint8_frames", "write_animation", "write_strip"]

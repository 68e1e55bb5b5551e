"""Recurrent building blocks: ConvLSTM cells and stacks, patch reshaping."""

from convcast.layers.convlstm import ConvLSTM, ConvLSTMCell
from convcast.layers.patch import depth_to_space, space_to_depth

__all__ = ["ConvLSTM", "ConvLSTMCell", "depth_to_space", "space_to_depth"]

"""Recurrent building blocks: ConvLSTM cells and stacks, patch reshaping."""

from convcast.layers.convlstm import ConvLSTM, ConvLSTMCell
from convcast.layers.patch import depth_to_space, space_to_depth
from convcast.layers.st_lstm import SpatioTemporalLSTMCell

__all__ = ["ConvLSTM", "ConvLSTMCell", "SpatioTemporalLSTMCell", "depth_to_space",
           "space_to_depth"]

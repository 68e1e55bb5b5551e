"""Recurrent building blocks: ConvLSTM cells and stacks, patch reshaping, and how their steps run
(gradient checkpointing over time, compiled gate arithmetic)."""

from convcast.layers.checkpoint import maybe_checkpoint, set_checkpointing
from convcast.layers.convlstm import ConvLSTM, ConvLSTMCell, keep_weights
from convcast.layers.fused import lstm_pointwise, set_compiled_gates
from convcast.layers.patch import depth_to_space, pad_to_multiple, space_to_depth
from convcast.layers.st_lstm import SpatioTemporalLSTMCell

__all__ = ["ConvLSTM", "ConvLSTMCell", "SpatioTemporalLSTMCell", "depth_to_space",
           "keep_weights", "lstm_pointwise", "maybe_checkpoint", "pad_to_multiple",
           "set_checkpointing",
           "set_compiled_gates", "space_to_depth"]

"""Named sizes of the architectures: the ones the papers, the demo and the benchmarks use.

Each entry says where its numbers come from; `create_model(name)` builds it and `create_model(name,
in_channels=3)` (any keyword) overrides one setting.
"""

from convcast.models.registry import register_variant

register_variant(
    "encoder_forecaster_demo", "encoder_forecaster",
    "the demo's model: patch 4, 2x64 ConvLSTM, 3x3, forecaster fed its previous frame (0.92M)",
    hidden_channels=[64, 64], kernel_size=3, patch_size=4, feedback=True)
register_variant(
    "encoder_forecaster_shi2015", "encoder_forecaster",
    "Shi et al. 2015, table 1, Moving MNIST: 3 layers 128-64-64, 5x5 kernels, patch 4 (7.58M)",
    hidden_channels=[128, 64, 64], kernel_size=5, patch_size=4)
register_variant(
    "encoder_forecaster_shi2015_radar", "encoder_forecaster",
    "Shi et al. 2015, section 4.2, radar echo: patch 2, 2x64 ConvLSTM, 3x3 kernels",
    hidden_channels=[64, 64], kernel_size=3, patch_size=2)
register_variant(
    "seq2seq_tutorial", "seq2seq",
    "the PyTorch Lightning video-prediction tutorial's size: nf 64, 3x3 kernels", nf=64,
    kernel_size=3)
register_variant(
    "predrnn_wang2017", "predrnn",
    "Wang et al. 2017 on Moving MNIST: 4x128 ST-LSTM, 5x5, patch 4 (23.8M)",
    hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4)
register_variant(
    "predrnn_v2_wang2022", "predrnn_v2",
    "Wang et al. 2022 (PredRNN-v2) on Moving MNIST: 4x128 ST-LSTM, 5x5, patch 4, beta 0.1",
    hidden_channels=128, num_layers=4, kernel_size=5, patch_size=4, decouple_beta=0.1)
register_variant(
    "fc_lstm_shi2015", "fc_lstm",
    "Shi et al. 2015, table 1: FC-LSTM-2048-2048 with peepholes on 64x64 (142.7M)",
    hidden_sizes=[2048, 2048], peephole=True, frame_size=[64, 64])
register_variant(
    "optical_flow_video", "optical_flow",
    "optical-flow extrapolation for camera video: the frame's edge values continue outside it "
    "(a scene goes on beyond the frame; radar's default fills with the no-echo minimum)",
    outval="edge")

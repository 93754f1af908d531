"""MiniCPM-V 4.5 for training: the network (`MiniCPMV`), its configuration, its processor and checkpoints."""

from .checkpoint import CheckpointError
from .modeling import MiniCPMV, MiniCPMVOutput
from .remote_code.configuration_minicpm import MiniCPMVConfig

__all__ = ["CheckpointError", "MiniCPMV", "MiniCPMVConfig", "MiniCPMVOutput"]

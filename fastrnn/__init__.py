"""fastrnn: fused tanh RNN kernels for the CPU (Numba) and NVIDIA GPUs (CUDA through CuPy)."""

from fastrnn.api import rnn_backward, rnn_forward
from fastrnn.classifier import RNNClassifier

__version__ = "0.1.0"
__all__ = ["RNNClassifier", "__version__", "rnn_backward", "rnn_forward"]

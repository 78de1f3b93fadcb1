"""fastrnn: fused tanh RNN kernels for the CPU (Numba) and NVIDIA GPUs (CUDA through CuPy).

``import fastrnn`` loads neither Numba kernels, CuPy nor torch: each backend is loaded on first use.
"""

from fastrnn.api import rnn_backward, rnn_forward, rnn_step
from fastrnn.cells import BasicRNNCell, MultiRNNCell, dynamic_rnn, static_rnn
from fastrnn.classifier import RNNClassifier

__version__ = "0.1.0"
__all__ = ["BasicRNNCell", "MultiRNNCell", "RNNClassifier", "__version__", "dynamic_rnn",
           "rnn_backward", "rnn_forward", "rnn_step", "static_rnn"]

"""``fastrnn.torch.RNN``: a drop-in ``torch.nn.RNN`` (tanh or relu, one or two directions) that
runs fastrnn's kernels.

Swap one line, keep the rest of a PyTorch program::

    rnn = torch.nn.RNN(28, 31, num_layers=3, batch_first=True)     # before
    rnn = fastrnn.torch.RNN(28, 31, num_layers=3, batch_first=True) # after

Parameters have ``nn.RNN``'s names, shapes and default initialisation (``U(-1/sqrt(H), 1/sqrt(H))``
drawn in the same order, so under the same ``torch.manual_seed`` both modules start equal), so
``load_state_dict`` works both ways with a trained ``nn.RNN``. ``forward(input, hx=None)`` takes and
returns ``nn.RNN``'s shapes, including unbatched ``[T,I]`` input and ``PackedSequence``.

How it runs: each layer is one ``torch.autograd.Function`` whose forward and backward call
:func:`fastrnn.rnn_forward` / :func:`fastrnn.rnn_backward` on zero-copy views of the tensors:
NumPy views (``.detach().numpy()``) on the CPU; on CUDA, CuPy views through DLPack, with CuPy
running on torch's current stream, so no synchronisation is added. fastrnn has one bias per layer;
the module passes ``bias_ih + bias_hh`` and autograd sends its gradient to both. ``batch_first``
selects fastrnn's batch-major layout, so no transpose is copied; a ``PackedSequence`` is padded
once before the first layer and packed again after the last, on torch's side. An empty batch
(B = 0) returns empty outputs and zero parameter gradients, as nn.RNN, without calling the kernels.

Gradients are first order only: fastrnn's backward is a kernel, not a graph of torch operations, so
a double backward (``create_graph=True``, e.g. ``torch.autograd.gradgradcheck`` or a gradient
penalty) raises ``NotImplementedError``; use ``torch.nn.RNN`` for higher-order gradients.

Threads: fastrnn's CPU kernels use Numba's OpenMP threading layer where it loads (chosen by
fastrnn unless ``NUMBA_THREADING_LAYER`` says otherwise; ``kernels/_numba_env.py`` has the
measurements). In one process with PyTorch neither step slowed the other
(``bench/test_bench_torch_dropin.py``, the threads tables). It is thread-safe, and a process forked
after a fastrnn call (e.g. a ``DataLoader`` worker under ``fork``) runs fastrnn on one thread
instead of being killed by GNU OpenMP.

PyTorch is optional for fastrnn: ``import fastrnn`` never imports it, and this module raises
``ImportError`` with an install hint when it is missing.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

try:
    import torch
    from torch import nn
    from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("fastrnn.torch needs PyTorch: pip install torch "
                      "(or pip install 'fastrnn[bench]')") from e

from fastrnn import _validate as check
from fastrnn import api
from fastrnn.reference import reverse_index

__all__ = ["RNN"]


# --- zero-copy views between torch tensors and NumPy / CuPy arrays --------------------------------
@contextmanager
def _torch_stream(device: torch.device):
    """On CUDA: make CuPy's current device and stream torch's current ones for the block."""
    if device.type != "cuda":
        yield
        return
    import cupy

    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), \
            cupy.cuda.ExternalStream(stream.cuda_stream, device.index):
        yield


def _view(t: torch.Tensor | None):
    """A NumPy (CPU) or CuPy (CUDA, via DLPack) array sharing ``t``'s memory."""
    if t is None:
        return None
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()
    import cupy

    return cupy.from_dlpack(t)


def _tensor(a) -> torch.Tensor:
    """A tensor sharing the memory of NumPy / CuPy array ``a``."""
    return torch.from_numpy(a) if isinstance(a, np.ndarray) else torch.from_dlpack(a)


def _check_supported(name: str, t: torch.Tensor) -> None:
    """``t`` is on a device and in a dtype fastrnn's kernels run: float32 or float64 on the CPU,
    float32 on CUDA. Checked before any NumPy / DLPack view is taken."""
    if t.device.type not in ("cpu", "cuda"):
        check.fail(name, "a tensor on the CPU or CUDA", f"a tensor on {t.device}")
    if t.device.type == "cpu" and t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected dtype torch.float32 or torch.float64 on the CPU, "
                        f"got {t.dtype}")
    if t.device.type == "cuda" and t.dtype != torch.float32:
        raise TypeError(f"{name}: expected dtype torch.float32 on CUDA, got {t.dtype}")


class _RNNLayer(torch.autograd.Function):
    """One layer: ``(x, h0, w_ih, w_hh, b) -> (y, h_n)`` through fastrnn's functional API.

    An empty batch (B = 0, which the API refuses) skips the kernels: empty outputs, and zero
    gradients for the weights and bias, as nn.RNN gives. Differentiable once only.
    """

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity, backend):
        ctx.empty = x.shape[1 if time_major else 0] == 0
        if ctx.empty:
            H = w_hh.shape[0]
            y, h_n = x.new_zeros(*x.shape[:2], H), x.new_zeros(0, H)
        else:
            with _torch_stream(x.device):
                y, h_n = api.rnn_forward(_view(x), _view(h0), _view(w_ih), _view(w_hh), _view(b),
                                         lengths, time_major, nonlinearity=nonlinearity,
                                         backend=backend)
                y, h_n = _tensor(y), _tensor(h_n)
        ctx.save_for_backward(x, h0, w_ih, w_hh, y)
        ctx.lengths, ctx.time_major, ctx.backend = lengths, time_major, backend
        ctx.nonlinearity = nonlinearity
        return y, h_n

    @staticmethod
    def backward(ctx, dy, dh_n):
        # Grad mode is on here only under create_graph=True. The kernel's gradients are not a torch
        # graph, so their own derivatives (through x, h0 and the weights) would silently be zero:
        # refuse instead (once_differentiable would catch only the path through dy and dh_n).
        if torch.is_grad_enabled():
            raise NotImplementedError(
                "create_graph=True: fastrnn.torch.RNN does not support double backward "
                "(higher-order gradients); use torch.nn.RNN for those")
        x, h0, w_ih, w_hh, y = ctx.saved_tensors
        if ctx.empty:
            zero = torch.zeros_like
            return (zero(x), None if h0 is None else zero(h0), zero(w_ih), zero(w_hh),
                    w_hh.new_zeros(w_hh.shape[0]), None, None, None, None)
        with _torch_stream(x.device):
            grads = api.rnn_backward(_view(dy), _view(dh_n), _view(x), _view(h0), _view(w_ih),
                                     _view(w_hh), _view(y), ctx.lengths, ctx.time_major,
                                     nonlinearity=ctx.nonlinearity, backend=ctx.backend)
            dx, dh0, dw_ih, dw_hh, db = (_tensor(g) for g in grads)
        return dx, None if h0 is None else dh0, dw_ih, dw_hh, db, None, None, None, None


class RNN(nn.Module):
    """Drop-in ``torch.nn.RNN`` (tanh or relu, one or two directions, no dropout) on fastrnn's
    kernels.

    Not supported (``NotImplementedError``): ``dropout > 0`` and double backward
    (``create_graph=True``, higher-order gradients): use ``torch.nn.RNN`` for those.

    Parameters
    ----------
    input_size, hidden_size : int
        I and H.
    num_layers : int
        Stacked layers; layer k > 0 takes layer k-1's outputs.
    nonlinearity : {"tanh", "relu"}
    bias : bool
        False: no ``bias_*`` parameters (zero bias).
    batch_first : bool
        Input and output ``[B,T,*]`` instead of ``[T,B,*]`` (not ``hx``/``h_n``, as in nn.RNN).
    dropout : float
        Only 0 (anything else in (0, 1] raises NotImplementedError).
    bidirectional : bool
        A reverse direction per layer, as nn.RNN: it runs each sequence's valid steps backwards
        (a packed sequence's reverse starts at its last step), outputs ``[fw, bw]`` on the last
        axis, layers above the first take ``2H`` inputs, ``h_n`` is ``[2L,B,H]`` in nn.RNN's
        order (layer k's directions at 2k, 2k+1). The two directions are two layer calls of the
        unidirectional kernels.
    device, dtype
        As in nn.RNN: float32 or float64 on the CPU, float32 on CUDA (with CuPy installed).
    backend : {None, "cpu", "reference", "cuda"}, keyword only
        Passed to :func:`fastrnn.rnn_forward`; None picks by the tensors' device.

    Attributes
    ----------
    weight_ih_l{k} : Parameter [H, I_k]  (I_0 = input_size, I_k = H above, 2H if bidirectional)
    weight_hh_l{k} : Parameter [H, H]
    bias_ih_l{k}, bias_hh_l{k} : Parameter [H]  (when ``bias``)
    weight_ih_l{k}_reverse, ... : the reverse direction's, when ``bidirectional``
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None,
                 *, backend: str | None = None):
        super().__init__()
        check.nonlinearity("nonlinearity", nonlinearity)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout <= 1:
            check.fail("dropout", "a number in [0, 1]", repr(dropout))
        if dropout > 0:
            raise NotImplementedError(f"dropout={dropout}: fastrnn.torch.RNN has no dropout "
                                      "between layers (use dropout=0)")
        if backend not in (None, "cpu", "reference", "cuda"):
            check.fail("backend", "one of None, 'cpu', 'reference', 'cuda'", repr(backend))
        self.input_size = check.positive_int("input_size", input_size)
        self.hidden_size = check.positive_int("hidden_size", hidden_size)
        self.num_layers = check.positive_int("num_layers", num_layers)
        self.nonlinearity, self.bias = nonlinearity, bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bool(bidirectional), 0
        self.backend = backend
        factory = {"device": device, "dtype": dtype}
        H = self.hidden_size
        # registration order = nn.RNN's, so reset_parameters draws the same numbers
        for k in range(self.num_layers):
            i_k = self.input_size if k == 0 else self._directions * H
            for sfx in self._suffixes:
                for name, shape in ((f"weight_ih_l{k}{sfx}", (H, i_k)),
                                    (f"weight_hh_l{k}{sfx}", (H, H))) + (
                        ((f"bias_ih_l{k}{sfx}", (H,)), (f"bias_hh_l{k}{sfx}", (H,)))
                        if self.bias else ()):
                    self.register_parameter(name, nn.Parameter(torch.empty(*shape, **factory)))
        self.reset_parameters()

    @property
    def _directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """nn.RNN's initialisation: every parameter ``U(-1/sqrt(H), 1/sqrt(H))``."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            nn.init.uniform_(w, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op (nn.RNN compacts cuDNN weights here; fastrnn needs no flat buffer)."""

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Per layer and direction ``[weight_ih, weight_hh(, bias_ih, bias_hh)]``, as nn.RNN."""
        names = ["weight_ih_l{}{}", "weight_hh_l{}{}"] + (["bias_ih_l{}{}", "bias_hh_l{}{}"]
                                                          if self.bias else [])
        return [[getattr(self, n.format(k, sfx)) for n in names]
                for k in range(self.num_layers) for sfx in self._suffixes]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return s

    def _layer_bias(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """One bias (``b_ih + b_hh``) of layer-direction ``name`` (``l0``, ``l0_reverse``, ...)."""
        if not self.bias:
            return like.new_zeros(self.hidden_size)
        return getattr(self, f"bias_ih_{name}") + getattr(self, f"bias_hh_{name}")

    def _direction(self, name: str, x, h0, lengths, time_major):
        """One direction of one layer (``name`` as in :meth:`_layer_bias`): ``(y, h_n)``."""
        return _RNNLayer.apply(x, h0, getattr(self, f"weight_ih_{name}"),
                               getattr(self, f"weight_hh_{name}"), self._layer_bias(name, x),
                               lengths, time_major, self.nonlinearity, self.backend)

    def forward(self, input, hx: torch.Tensor | None = None):
        """Run all layers over all steps.

        Parameters
        ----------
        input : Tensor [T,B,I] ([B,T,I] if ``batch_first``), [T,I] (unbatched), or PackedSequence
        hx : Tensor [D*L,B,H] ([D*L,H] when unbatched; D = 2 if bidirectional) or None (zeros)
            For a PackedSequence, in the batch order of the original sequences, as nn.RNN.

        Tensors are float32 or float64 on the CPU, float32 on CUDA, in the parameters' dtype and
        on their device. T >= 1; B may be 0 (empty outputs, as nn.RNN).

        Returns
        -------
        output : Tensor [T,B,H] ([B,T,H] if ``batch_first``; [T,H] unbatched), or a PackedSequence
            with the input's ``batch_sizes`` and indices when the input was one
        h_n : Tensor [D*L,B,H] ([D*L,H] unbatched): each layer and direction's state after its
            last step
        """
        packed = isinstance(input, PackedSequence)
        lengths = None
        if packed:
            x, lens = pad_packed_sequence(input, batch_first=False)  # original batch order
            lengths, time_major, batched = lens.numpy(), True, True
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"input: expected a Tensor or PackedSequence, got "
                                f"{check._describe(input)}")
            if input.dim() not in (2, 3):
                check.fail("input", "3 dimensions (or 2 when unbatched)",
                           f"shape {tuple(input.shape)}")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            time_major = not (batched and self.batch_first)
            if x.shape[0 if time_major else 1] == 0:
                check.fail("input", "at least one time step (T >= 1)",
                           f"shape {tuple(input.shape)}")
        _check_supported("input", x)
        w0 = self.weight_ih_l0
        _check_supported("parameters (weight_ih_l0)", w0)
        if x.shape[-1] != self.input_size:
            check.fail("input", f"last dimension input_size = {self.input_size}",
                       f"shape {tuple(x.shape)}")
        if x.dtype != w0.dtype or x.device != w0.device:
            raise TypeError(f"input: expected a {w0.dtype} tensor on {w0.device} (like the "
                            f"parameters), got {x.dtype} on {x.device}")
        api.backend_for(x.device.type, self.backend, "input")  # one that runs where input is
        B = x.shape[1] if time_major else x.shape[0]
        L, H, D = self.num_layers, self.hidden_size, self._directions
        if hx is not None:
            want = (D * L, B, H) if batched else (D * L, H)
            meaning = ("[2L,B,H]" if batched else "[2L,H]") if D == 2 else (
                "[L,B,H]" if batched else "[L,H]")
            if not isinstance(hx, torch.Tensor) or tuple(hx.shape) != want:
                check.fail("hx", f"a Tensor of shape {meaning} = {want}", check._describe(hx))
            if hx.dtype != w0.dtype or hx.device != w0.device:
                raise TypeError(f"hx: expected a {w0.dtype} tensor on {w0.device}, got "
                                f"{hx.dtype} on {hx.device}")
            if not batched:
                hx = hx.unsqueeze(1)
        states = []
        y = x
        rev = _Reverse(lengths, time_major, x) if D == 2 else None  # one index for every layer
        for k in range(L):
            h0 = [None] * D if hx is None else [hx[D * k + d] for d in range(D)]
            y_f, h = self._direction(f"l{k}", y, h0[0], lengths, time_major)
            states.append(h)
            if D == 2:
                y_r, h = self._direction(f"l{k}_reverse", rev(y), h0[1], lengths, time_major)
                states.append(h)
                y_f = torch.cat([y_f, rev(y_r)], dim=-1)
            y = y_f
        h_n = torch.stack(states)
        if packed:
            return _repack(y, input), h_n
        if not batched:
            return y.squeeze(1), h_n.squeeze(1)
        return y, h_n


class _Reverse:
    """TF's ``reverse_sequence`` on tensors of one batch: each sequence's first ``lengths[b]``
    steps in reverse order, the rest in place (all T steps without ``lengths``), as one gather
    along the time axis (autograd flows through it); applied twice, the identity."""

    def __init__(self, lengths, time_major: bool, like: torch.Tensor):
        self.dim = 0 if time_major else 1
        idx = reverse_index(like.shape[self.dim], like.shape[1 - self.dim], lengths)  # [T,B]
        self.idx = torch.from_numpy(idx if time_major else idx.T.copy()).to(like.device)

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        return a.gather(self.dim, self.idx[..., None].expand(*self.idx.shape, a.shape[-1]))


def _repack(y: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """Padded ``y [T,B,H]`` (original batch order) -> a PackedSequence laid out like ``like``.

    Packed row r at step t is sequence ``sorted_indices[i]`` for ``i < batch_sizes[t]``.
    """
    sizes = like.batch_sizes  # CPU int64 [T]
    T = len(sizes)
    t_idx = torch.repeat_interleave(torch.arange(T), sizes)
    starts = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    i_idx = torch.arange(len(t_idx)) - starts
    order = like.sorted_indices
    b_idx = i_idx if order is None else order.cpu()[i_idx]
    data = y[t_idx.to(y.device), b_idx.to(y.device)]
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)

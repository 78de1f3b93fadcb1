"""The GPU backend: CuPy arrays in, CuPy arrays out, raw CUDA kernels from ``kernels/*.cu``.

float32 only (float64 raises ``TypeError``). The classifier's training step is one fixed sequence of
launches on flat buffers laid out by :mod:`fastrnn.params`: per layer one forward launch, the dense
+ cross-entropy rows and the dense-gradient reduction, per layer one BPTT launch and two weight-
gradient launches (partial sums, their reduction), then the global gradient norm (partial sums of
squares in double, one launch) and two Adam launches over the flat buffer that add those
partials and clip: the first checks that every new parameter and moment is finite, the second
writes them, and nothing at all is written when the norm, the loss or the update is not finite.
When every
layer runs on the one-launch fast path (hidden and input sizes <= 32, no GEMM through cuBLAS) the
sequence is captured once in a CUDA graph and replayed: the batch is copied into fixed buffers,
Adam's step scalars and ``clip_norm`` go through a pinned host buffer that a captured copy reads at
replay time (a new ``clip_norm`` needs no new capture), and loss, accuracy and the gradient norm
come back through another pinned buffer (one synchronisation per step). Set
``FASTRNN_CUDA_GRAPH=0`` to launch eagerly; a failed capture falls back to eager launches too.

``predict`` and ``evaluate`` launch eagerly but do their per-call Python work once: the parameter
views and each layer's launch arguments are cached per (parameter buffer, batch shape), so a call
is the kernel launches plus one output allocation (inference is ~9 us of device time per layer at
the showcase size; the Python around it was most of the host-timed call).
"""

from __future__ import annotations

import os

import numpy as np

from fastrnn.backends import Backend, ShapeCache
from fastrnn.params import ModelSpec, layers, views

_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind


def _kernels():
    from fastrnn.kernels import cuda

    return cuda


def _cp():
    import cupy

    return cupy


class _Buffers:
    """Scratch for one batch size: activations, gradients and the step's small arrays."""

    def __init__(self, spec: ModelSpec, B: int, T: int):
        cp = _cp()
        f32 = cp.float32
        kl = _kernels().L
        H, C, Lk = spec.hidden_size, spec.num_classes, spec.num_layers
        self.B, self.T = B, T
        self.x = cp.empty((B, T, spec.input_size), dtype=f32)  # graph input copies
        self.labels = cp.empty(B, dtype=cp.int64)
        self.ys = [cp.empty((B, T, H), dtype=f32) for _ in range(Lk)]
        self.hn = cp.empty((Lk, B, H), dtype=f32)
        self.dz = cp.empty((B, T, H), dtype=f32)
        self.dx = [cp.empty((B, T, H), dtype=f32) for _ in range(2)]  # ping-pong between layers
        self.dh0 = cp.empty((B, H), dtype=f32)
        self.dh_top = cp.empty((B, H), dtype=f32)
        self.logits = cp.empty((B, C), dtype=f32)
        self.dlogits = cp.empty((B, C), dtype=f32)
        self.row_loss = cp.empty(B, dtype=f32)
        self.row_correct = cp.empty(B, dtype=f32)
        # the step's results: (mean loss, correct rows, global gradient norm, 1.0 if applied)
        self.stats = cp.empty(4, dtype=f32)
        # views, for adam_update
        self.loss, self.norm, self.applied = self.stats[0:1], self.stats[2:3], self.stats[3:4]
        self.grad = cp.empty(spec.size, dtype=f32)
        self.norm_part = cp.empty(kl.norm_part_size(spec.size), dtype=cp.float64)
        self.overflow = cp.empty(kl.adam_launch(spec.size).grid[0], dtype=cp.int32)
        # weight-gradient partial sums (H <= 32 path), sized for the widest layer input
        self.wg_part = cp.empty(max(kl.wgrad_part_size(B, T, i, H)
                                    for i in {spec.input_size, H}), dtype=f32)
        self.hyper = cp.empty(kl.ADAM_HYPER_SIZE, dtype=f32)
        self._pin_hyper = cp.cuda.alloc_pinned_memory(self.hyper.nbytes)
        self.pin_hyper = np.frombuffer(self._pin_hyper, np.float32, kl.ADAM_HYPER_SIZE)
        self._pin_out = cp.cuda.alloc_pinned_memory(self.stats.nbytes)
        self.pin_out = np.frombuffer(self._pin_out, np.float32, 4)
        self.graph = None
        self.graph_key = None
        self.eager_steps = 0
        self.infer_key = None  # (params pointer, size) of infer_plan
        self.infer_plan = None
        # a data-parallel step's gradients, then its loss and correct rows, then zeros up to a
        # multiple of the number of processes (fastrnn.distributed.DataParallel.sum_on_device)
        self.exchange = None


class _CudaClassifier:
    def __init__(self, spec: ModelSpec):
        if spec.dtype != "float32":
            raise TypeError(f"dtype: the cuda backend computes in float32, got {spec.dtype}")
        self.spec = spec
        self.relu = spec.nonlinearity == "relu"
        self._bufs: ShapeCache[_Buffers] = ShapeCache()  # with its captured graph
        H, I = spec.hidden_size, spec.input_size
        self.graphable = H <= 32 and I <= 32 and os.environ.get("FASTRNN_CUDA_GRAPH", "1") != "0"
        self._stream = None

    # -- pieces ---------------------------------------------------------------------------------
    def _buffers(self, B, T) -> _Buffers:
        return self._bufs.get((B, T), lambda: _Buffers(self.spec, B, T))

    def _forward(self, params, x, bf: _Buffers):
        k = _kernels()
        inp = x
        for i, (w_ih, w_hh, b) in enumerate(layers(params, self.spec)):
            k.forward_into(inp, None, w_ih, w_hh, b, None, False, bf.ys[i], bf.hn[i],
                           self.relu)
            inp = bf.ys[i]
        return bf.hn[-1]

    def _infer_plan(self, params, bf: _Buffers):
        """``(views, launches)`` for inference on ``params``, cached on ``bf`` per parameter
        buffer: ``launches`` is ``[(kernel, grid, block, args)]`` of the forward layers with the
        input slot of layer 0 left as None, or None when a layer needs a GEMM (eager path)."""
        key = (params.data.ptr, params.size)
        if bf.infer_key == key:
            return bf.infer_plan
        k = _kernels()
        kl = k.L
        spec = self.spec
        pv = views(params, spec)
        B, T, H = bf.B, bf.T, spec.hidden_size
        launches = []
        inp_i = spec.input_size
        for i, (w_ih, w_hh, b) in enumerate(layers(params, spec)):
            if not (kl.use_warp_path(H) and inp_i <= kl.WARP_MAX_I):
                launches = None
                break
            sx = kl.seq_strides(B, T, inp_i, False)
            sy = kl.seq_strides(B, T, H, False)
            i32 = np.int32
            shape = kl.fwd_warp_launch(B)
            args = (None if i == 0 else bf.ys[i - 1], w_ih, w_hh, b, k.NULL, k.NULL, bf.ys[i],
                    bf.hn[i], i32(B), i32(T), i32(inp_i), i32(H), i32(1), i32(sx[0]),
                    i32(sx[1]), i32(sy[0]), i32(sy[1]), i32(self.relu))
            launches.append((k.kernel("rnn_forward.cu", "rnn_fwd_warp"), shape.grid,
                             shape.block, args))
            inp_i = H
        bf.infer_key, bf.infer_plan = key, (pv, launches)
        return bf.infer_plan

    def _infer_forward(self, params, x, bf: _Buffers):
        """The top layer's final state ``[B,H]`` for ``x`` (cached launch arguments)."""
        pv, launches = self._infer_plan(params, bf)
        if launches is None:
            return pv, self._forward(params, x, bf)
        for j, (kern, grid, block, args) in enumerate(launches):
            if j == 0:
                args = (x, *args[1:])
            kern(grid, block, args)
        return pv, bf.hn[-1]

    def _exchange(self, bf: _Buffers, processes: int):
        """``bf.exchange`` for ``processes`` processes (zeroed when made: the padding stays 0)."""
        n = self.spec.size
        size = -(-(n + 2) // processes) * processes
        if bf.exchange is None or bf.exchange.size != size:
            bf.exchange = _cp().zeros(size, dtype=_cp().float32)
        return bf.exchange

    def _enqueue_step(self, params, m, v, x, labels, bf: _Buffers, stream_ptr, sum_on_device=None,
                      processes=1):
        """Every launch of one training step, on the current stream (which is ``stream_ptr``).
        ``sum_on_device``: a data-parallel step (``DataParallel.sum_on_device``) over
        ``processes`` processes: the gradients, loss and correct rows of this process's rows go
        into ``bf.exchange``, are averaged (summed) over the processes there, then Adam runs on
        them in every process."""
        cp = _cp()
        k = _kernels()
        spec = self.spec
        C, n = spec.num_classes, spec.size
        pv = views(params, spec)
        grad, out2 = bf.grad, bf.stats
        if sum_on_device is not None:
            ex = self._exchange(bf, processes)
            grad, out2 = ex[:n], ex[n:n + 2]
        gv = views(grad, spec)
        h_top = self._forward(params, x, bf)
        k.dense_xent_into(h_top, pv["w_out"], pv["b_out"], labels, None, bf.row_loss,
                          bf.row_correct, bf.dlogits, bf.dh_top)
        k.dense_reduce_into(bf.dlogits, h_top, bf.row_loss, bf.row_correct, gv["w_out"],
                            gv["b_out"], out2, C)
        lys = layers(params, spec)
        dy = None
        for i in reversed(range(spec.num_layers)):
            w_ih, w_hh, _ = lys[i]
            inp = x if i == 0 else bf.ys[i - 1]
            dx = None if i == 0 else bf.dx[i % 2]
            k.backward_into(dy, bf.dh_top if i == spec.num_layers - 1 else None, inp, None,
                            w_ih, w_hh, bf.ys[i], None, False, bf.dz, dx, bf.dh0,
                            gv[f"w_ih_l{i}"], gv[f"w_hh_l{i}"], gv[f"b_l{i}"], bf.wg_part,
                            self.relu)
            dy = dx
        if sum_on_device is not None:  # means of the gradients and the loss, sum of correct rows
            sum_on_device(ex, n + 1)
            bf.stats[0:2] = out2
        cp.cuda.runtime.memcpyAsync(bf.hyper.data.ptr, bf._pin_hyper.ptr, bf.hyper.nbytes, _H2D,
                                    stream_ptr)
        k.adam_into(params, grad, m, v, bf.hyper, bf.norm_part, bf.overflow, bf.loss, bf.norm,
                    bf.applied)
        cp.cuda.runtime.memcpyAsync(bf._pin_out.ptr, bf.stats.data.ptr, bf.stats.nbytes, _D2H,
                                    stream_ptr)

    # -- contract -------------------------------------------------------------------------------
    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm,
                   shard=None, gather=None):
        """``shard``, ``gather``: a data-parallel step (``fastrnn.distributed``): ``shard`` =
        (global batch, number of processes), ``gather`` = ``DataParallel.sum_on_device``; it
        runs eagerly (no graph)."""
        cp = _cp()
        from fastrnn.kernels import cuda_launch

        _check(x=x, params=params, m=m, v=v)
        B, T, _ = x.shape
        bf = self._buffers(B, T)
        if labels.dtype != cp.int64:
            labels = labels.astype(cp.int64)
        bf.pin_hyper[:] = cuda_launch.adam_hyper(step, lr, beta1, beta2, eps, clip_norm)
        if shard is not None:
            stream = cp.cuda.get_current_stream()
            self._enqueue_step(params, m, v, x, labels, bf, stream.ptr, gather, shard[1])
            stream.synchronize()
            return self._results(bf, shard[0])

        key = (params.data.ptr, m.data.ptr, v.data.ptr)
        # The first step runs eagerly (compiles and loads every kernel), later ones replay.
        if self.graphable and bf.eager_steps > 0:
            try:
                self._replay(params, m, v, x, labels, bf, key)
                return self._results(bf)
            except Exception:  # capture unsupported here: keep launching eagerly
                self.graphable = False
                bf.graph = None
        stream = cp.cuda.get_current_stream()
        self._enqueue_step(params, m, v, x, labels, bf, stream.ptr)
        stream.synchronize()
        bf.eager_steps += 1
        return self._results(bf)

    @staticmethod
    def _results(bf: _Buffers, batch: int | None = None):
        """``(loss, acc, grad_norm, applied)`` from the pinned readback of the step just
        synchronised; ``batch``: the rows the step's correct count is out of (default: its
        own)."""
        out = bf.pin_out
        return float(out[0]), float(out[1]) / (batch or bf.B), float(out[2]), bool(out[3])

    def _replay(self, params, m, v, x, labels, bf: _Buffers, key):
        cp = _cp()
        if self._stream is None:
            self._stream = cp.cuda.Stream(non_blocking=True)
        s = self._stream
        ev = cp.cuda.Event(disable_timing=True)
        ev.record(cp.cuda.get_current_stream())
        s.wait_event(ev)  # the batch was written on the caller's stream
        cp.cuda.runtime.memcpyAsync(bf.x.data.ptr, x.data.ptr, x.nbytes, _D2D, s.ptr)
        cp.cuda.runtime.memcpyAsync(bf.labels.data.ptr, labels.data.ptr, labels.nbytes, _D2D,
                                    s.ptr)
        if bf.graph is None or bf.graph_key != key:
            with s:
                s.begin_capture()
                try:
                    self._enqueue_step(params, m, v, bf.x, bf.labels, bf, s.ptr)
                finally:
                    graph = s.end_capture()
            bf.graph, bf.graph_key = graph, key
        bf.graph.launch(s)
        s.synchronize()

    def evaluate(self, params, x, labels):
        cp = _cp()
        k = _kernels()
        _check(x=x, params=params)
        B, T, _ = x.shape
        bf = self._buffers(B, T)
        pv, h_top = self._infer_forward(params, x, bf)
        labels = labels.astype(cp.int64, copy=False)
        k.dense_xent_into(h_top, pv["w_out"], pv["b_out"], labels, None, bf.row_loss,
                          bf.row_correct, None, None)
        k.dense_reduce_into(None, h_top, bf.row_loss, bf.row_correct, None, None, bf.stats,
                            self.spec.num_classes)
        out = bf.stats[:2].get()
        return float(out[0]), float(out[1]) / B

    def predict(self, params, x):
        cp = _cp()
        k = _kernels()
        _check(x=x, params=params)
        B, T, _ = x.shape
        bf = self._buffers(B, T)
        pv, h_top = self._infer_forward(params, x, bf)
        logits = cp.empty((B, self.spec.num_classes), dtype=cp.float32)
        k.dense_xent_into(h_top, pv["w_out"], pv["b_out"], None, logits, None, None, None, None)
        return logits


def _check(**arrays):
    for name, a in arrays.items():
        if a.dtype != np.float32:
            raise TypeError(f"{name}: the cuda backend computes in float32, got {a.dtype}")


def _rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity="tanh"):
    return _kernels().rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, nonlinearity)


def _rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major, nonlinearity="tanh"):
    return _kernels().rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, y, lengths, time_major,
                                   nonlinearity)


#: raw CUDA kernels on CuPy arrays (float32); CuPy is imported on first use
BACKEND = Backend("cuda", _rnn_forward, _rnn_backward, _CudaClassifier)

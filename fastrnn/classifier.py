"""RNNClassifier: a tanh RNN stack, its last state into a dense layer, softmax cross-entropy, Adam.

The model's parameters and Adam moments are flat buffers (layout in :mod:`fastrnn.params`) that the
backend's fused training step updates in place.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fastrnn import _validate as check
from fastrnn.backends import get_backend
from fastrnn.params import ModelSpec, init_params, views

DEVICES = ("cpu", "cuda")
#: model files: format 1; ``clip_norm`` was added to it later as an optional entry (files without
#: it load with clipping off)
_FORMAT_VERSION = 1
#: the timestamp of every member of a saved file: the same model state always gives the same bytes
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _cupy_or_exit_reason():
    """CuPy and a GPU, or a one-line reason why not."""
    try:
        import cupy
    except ImportError:
        return None, "CuPy is not installed (pip install 'fastrnn[cuda12]' or 'fastrnn[cuda13]')"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        return None, f"no usable CUDA GPU ({type(e).__name__}: {e})".splitlines()[0]
    if n < 1:
        return None, "no CUDA GPU found"
    return cupy, None


def _check_model_size(I: int, H: int, L: int, C: int, dtype: str, xp) -> None:
    """Refuse sizes whose parameter buffer would overflow the kernels' 32-bit indices, or whose
    buffers would not fit in memory, before anything is allocated (counted in O(1), without
    building :class:`ModelSpec`'s per-layer list). The argument named is the one that contributes
    most parameters. ``xp`` None (CUDA, GPU not yet opened) skips the memory check."""
    share = {"input_size": H * I, "hidden_size": H * (H + 1), "num_classes": C * (H + 1),
             "num_layers": (L - 1) * H * (2 * H + 1)}
    count = sum(share.values())
    name = max(share, key=share.get)
    sizes = f"input_size={I}, hidden_size={H}, num_layers={L}, num_classes={C}"
    check.indexable(name, count, "a parameter count", f"{count} parameters ({sizes})")
    if xp is not None:
        # params, m, v; initialisation in float64 with a QR of one [H,H]
        nbytes = 3 * count * np.dtype(dtype).itemsize + 8 * (count + 3 * H * H)
        check.memory(name, nbytes, xp, sizes)


def _check_comm(comm, device, backend) -> None:
    """The ``comm`` argument of :class:`RNNClassifier` and :meth:`RNNClassifier.load`."""
    if comm is not None and backend is not None:
        check.fail("comm", "None unless backend=None (data-parallel training runs the CPU or "
                   "CUDA kernels, not the reference)",
                   f"a communicator with device={device!r}, backend={backend!r}")


def _check_device(device, backend) -> None:
    """The ``device`` and ``backend`` arguments of :class:`RNNClassifier` and
    :meth:`RNNClassifier.load`."""
    if device not in DEVICES:
        check.fail("device", f"one of {DEVICES}", repr(device))
    if backend not in (None, "reference"):
        check.fail("backend", "None or 'reference'", repr(backend))
    if backend == "reference" and device != "cpu":
        check.fail("backend", "'reference' only with device='cpu'", f"device={device!r}")


def _lr(value, dtype: str) -> float:
    """The learning rate: a finite float > 0 that ``dtype`` can hold (a larger one overflows the
    Adam update to inf in that dtype)."""
    lr = check.positive_float("lr", value)
    top = float(np.finfo(dtype).max)
    if lr > top:
        check.fail("lr", f"a finite float > 0 that {dtype} can hold (<= {top:.8g})", lr)
    return lr


def _entry(path: Path, data: dict, name: str, kinds: str, shape: tuple[int, ...],
           expected: str) -> int | float | list:
    """Entry ``name`` of model file ``path``: an array of dtype kind ``kinds`` (``"iu"``
    integers, ``"f"`` floats) and ``shape``, as a Python number (0-d) or a list of them; else
    ``ValueError`` naming the file and the entry."""
    a = data[name]
    if a.dtype.kind not in kinds or a.shape != shape:
        check.fail(f"{path}: {name}", expected, check._describe(a))
    to = int if kinds == "iu" else float
    return to(a) if shape == () else [to(s) for s in a]


def _clip_norm(value) -> float | None:
    """``clip_norm`` as stored: None (no clipping) for None or 0, else a finite float > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"clip_norm: expected None, 0 or a finite float > 0, got "
                        f"{check._describe(value)}")
    if value == 0:
        return None
    if not (math.isfinite(value) and value > 0):
        check.fail("clip_norm", "None, 0 or a finite float > 0", value)
    return float(value)


def _write_npz(f, entries: dict) -> None:
    """What ``np.savez`` writes (uncompressed, one ``name.npy`` member per entry), with a fixed
    member timestamp: ``np.savez`` stamps the current time, so two saves of the same state
    differed."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, value in entries.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.external_attr = 0o600 << 16
            with z.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


@functools.lru_cache(maxsize=64)  # sizes that passed are not checked again (a refusal raises)
def _check_batch_size(spec: ModelSpec, xp, B: int, T: int, x_dtype) -> None:
    """Refuse a batch ``[B,T,I]`` whose training-step workspaces would overflow 32-bit indices or
    not fit in memory, before anything is allocated."""
    I, H, L = spec.input_size, spec.hidden_size, spec.num_layers
    sizes = f"B={B}, T={T}, I={I}, H={H}, num_layers={L}"
    check.indexable("x", B * T * max(I, H + 32), "B*T*max(I, H padded)", sizes)
    HP = H + 32  # rows padded to the kernels' 32-lane blocks
    chunks = -(-B // 8)  # the CPU kernels' per-chunk gradient partials
    # ys [L], dxy [3] and dz per element of [B,T,HP], one spare
    elements = (L + 5) * B * T * HP + chunks * L * (max(I, H) + H + 1) * HP + B * T * I
    nbytes = elements * np.dtype(spec.dtype).itemsize + B * T * I * np.dtype(x_dtype).itemsize
    check.memory("x", nbytes, xp, f"{sizes} ({spec.dtype})")


class RNNClassifier:
    """Sequence classifier: ``num_layers`` tanh RNN layers, a dense layer on the last state,
    sparse softmax cross-entropy, Adam.

    Parameters
    ----------
    input_size, hidden_size, num_layers, num_classes : int
        Sizes (each >= 1). MNIST row by row: 28, 31, 1 or 3, 10.
    device : {"cpu", "cuda"}
        "cpu" takes and returns NumPy arrays and runs the fused Numba kernels; "cuda" runs the CUDA
        kernels through CuPy (inputs may be NumPy or CuPy; outputs are CuPy).
    lr : float
        Adam learning rate (> 0, and at most the largest ``dtype`` number). Adam's betas are
        0.9/0.999 and eps 1e-8, added to ``sqrt(v_hat)`` (see
        :func:`fastrnn.reference.adam_update`).
    seed : int
        In [0, 2**64) (saved as a 64-bit integer). Seeds the Keras-style initialisation
        (Glorot-uniform ``W_ih`` and dense, orthogonal ``W_hh``, zero biases).
    backend : {None, "reference"}
        None runs the device's kernels; "reference" (CPU only) runs the NumPy reference, for tests
        and benchmarks.
    dtype : {"float32", "float64"}
    clip_norm : float or None
        Clip the gradients by their global L2 norm before each Adam update (TF's
        ``clip_by_global_norm``: all scaled by ``clip_norm / max(norm, clip_norm)``; see
        :func:`fastrnn.reference.clip_by_global_norm`). None or 0: no clipping.
    nonlinearity : {"tanh", "relu"}
        The recurrent layers' f (saved with the model; files without it are tanh).
    comm : mpi4py communicator or None
        Data-parallel training (:mod:`fastrnn.distributed`): every process of ``comm`` builds
        the model (rank 0's parameters are broadcast), and each :meth:`train_step` takes this
        process's rows of one global batch (:func:`fastrnn.distributed.shard`) and returns the
        loss and accuracy of the whole global batch. On the CPU, parameters, Adam state and
        results are bitwise those of one process training on the global batches; on CUDA (one
        GPU per process, gradients through NCCL) they are the same bits in every process and
        from run to run at one process count, and agree with one process to float32 rounding.
        :meth:`evaluate` and :meth:`predict` run on the rows they are given, in each process,
        without communicating; :meth:`save` writes from rank 0 only.

    Attributes
    ----------
    lr : float
        The learning rate; may be changed between steps (a schedule), checked as in the
        constructor.
    clip_norm : float or None
        May be changed between steps too, checked as in the constructor (0 is stored as None).
    step : int
        Adam steps taken (a refused step does not count).
    last_grad_norm : float or None
        Global L2 norm of the gradients of the last completed :meth:`train_step`, before
        clipping (None before the first).
    """

    def __init__(self, input_size: int = 28, hidden_size: int = 31, num_layers: int = 1,
                 num_classes: int = 10, device: str = "cpu", lr: float = 1e-3, seed: int = 0,
                 *, backend: str | None = None, dtype: str = "float32",
                 clip_norm: float | None = None, comm=None, nonlinearity: str = "tanh"):
        sizes = {n: check.positive_int(n, v) for n, v in (
            ("input_size", input_size), ("hidden_size", hidden_size),
            ("num_layers", num_layers), ("num_classes", num_classes))}
        _check_device(device, backend)
        if str(dtype) not in ("float32", "float64"):
            check.fail("dtype", "'float32' or 'float64'", repr(dtype))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            check.fail("seed", "an int >= 0", repr(seed))
        if seed >= 2**64:  # save() stores it as a 64-bit integer
            check.fail("seed", "an int < 2**64", repr(seed))
        _check_comm(comm, device, backend)
        check.nonlinearity("nonlinearity", nonlinearity)
        self._lr = _lr(lr, str(dtype))
        self._clip_norm = _clip_norm(clip_norm)
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8
        _check_model_size(*sizes.values(), str(dtype), np if device == "cpu" else None)
        self.spec = ModelSpec(**sizes, dtype=str(dtype), nonlinearity=nonlinearity)
        self.device, self.seed = device, int(seed)
        self._dp = None
        if comm is not None:
            from fastrnn.distributed import DataParallel

            self._dp = DataParallel(comm, device)
        if device == "cuda":
            cupy, reason = _cupy_or_exit_reason()
            if cupy is None:
                raise RuntimeError(f"device='cuda' is unavailable: {reason}")
            if self._dp is not None:
                self._dp.use_gpu()
            self.xp = cupy
            _check_model_size(*sizes.values(), str(dtype), cupy)
        else:
            self.xp = np
        self._backend = get_backend(backend or device)
        self._kernels = self._backend.classifier(self.spec)
        self.params = self.xp.asarray(init_params(self.spec, self.seed))
        self.m = self.xp.zeros_like(self.params)
        self.v = self.xp.zeros_like(self.params)
        self.step = 0
        self.last_grad_norm: float | None = None
        if self._dp is not None:
            self._dp.broadcast(self.params, self.m, self.v)

    @property
    def lr(self) -> float:
        """Adam learning rate."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _lr(value, self.spec.dtype)

    @property
    def clip_norm(self) -> float | None:
        """The global-norm clip of the gradients, or None (no clipping)."""
        return self._clip_norm

    @clip_norm.setter
    def clip_norm(self, value: float | None) -> None:
        self._clip_norm = _clip_norm(value)

    # -- inputs -------------------------------------------------------------------------------
    def _x(self, x):
        """``x [B,T,I]`` as a C-contiguous array of the model's dtype on its device."""
        if not hasattr(x, "shape") or not check._numpy_dtype(x):
            raise TypeError(f"x: expected a NumPy or CuPy array of shape [B,T,I], got "
                            f"{check._describe(x)}")
        if self.xp is np and type(x).__module__.startswith("cupy"):
            raise TypeError(f"x: expected a NumPy array (the model is on device 'cpu'), got "
                            f"{check._describe(x)}")
        if x.dtype.kind != "f":
            raise TypeError(f"x: expected a floating-point array, got dtype {x.dtype}")
        if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] != self.spec.input_size:
            check.fail("x", f"shape [B,T,I] with B, T >= 1 and I = {self.spec.input_size}",
                       f"shape {tuple(x.shape)}")
        _check_batch_size(self.spec, self.xp, x.shape[0], x.shape[1], x.dtype)
        x = self.xp.ascontiguousarray(self.xp.asarray(x, dtype=self.spec.dtype))
        # Numba compiles a read-only array apart (seconds); a copy costs far less than the step
        return x.copy() if self.xp is np and not x.flags.writeable else x

    def _labels(self, labels, batch):
        return check.labels("labels", labels, self.xp, batch, self.spec.num_classes)

    # -- the three operations -----------------------------------------------------------------
    def train_step(self, x, labels) -> tuple[float, float]:
        """One Adam step on a batch: forward, cross-entropy, BPTT, update.

        Parameters
        ----------
        x : array [B,T,I]
        labels : integer array [B], values in [0, num_classes)

        Returns
        -------
        loss : float
            Mean cross-entropy of the batch, before the update.
        acc : float
            Fraction of the batch classified correctly, before the update.

        Raises
        ------
        FloatingPointError
            The loss or the gradient norm is NaN or inf (NaN or inf in ``x``, or a step that
            overflowed), or the update would write NaN or inf (an ``lr`` near the dtype's
            largest value, or a float32 gradient above ~6e20 (beta2 = 0.999) that overflows Adam's
            second moment). Nothing changed: parameters, Adam moments, :attr:`step` and
            :attr:`last_grad_norm` are exactly as before the call.
        """
        dp, extra = self._dp, {}
        try:
            x = self._x(x)
            labels = self._labels(labels, x.shape[0])
        except Exception as e:
            if dp is None:
                raise
            dp.agree("train_step", e)  # raises in every process: none takes the step
        if dp is not None:  # every process learns whether all can take the step, before any does
            extra = {"shard": dp.agree("train_step", None, x.shape[0]),
                     "gather": dp.gather if self.device == "cpu" else dp.sum_on_device}
        step = self.step + 1
        loss, acc, norm, applied = self._kernels.train_step(
            self.params, self.m, self.v, step, x, labels, self.lr, self.beta1, self.beta2,
            self.eps, self.clip_norm or 0.0, **extra)
        loss, norm = float(loss), float(norm)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            what = " and ".join([f"the loss is {loss}"] * (not math.isfinite(loss))
                                + [f"the gradient norm is {norm}"] * (not math.isfinite(norm)))
            raise FloatingPointError(
                f"train_step {step}: {what}; parameters and optimizer state unchanged (NaN or "
                f"inf in x, or a step that overflowed: a lower lr or clip_norm may help)")
        if not applied:
            raise FloatingPointError(
                f"train_step {step}: the Adam update overflows (a new parameter or moment would "
                f"be NaN or inf; lr {self.lr:.6g}, gradient norm {norm:.6g}); parameters and "
                f"optimizer state unchanged (a lower lr, or clip_norm for gradients whose "
                f"squares overflow {self.spec.dtype}, may help)")
        self.step = step
        self.last_grad_norm = norm
        return loss, float(acc)

    def evaluate(self, x, labels) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``x [B,T,I]`` against ``labels [B]``; no update."""
        x = self._x(x)
        loss, acc = self._kernels.evaluate(self.params, x, self._labels(labels, x.shape[0]))
        return float(loss), float(acc)

    def predict(self, x):
        """Logits ``[B,num_classes]`` for ``x [B,T,I]`` (an array of the model's device)."""
        return self._kernels.predict(self.params, self._x(x))

    def weights(self) -> dict:
        """Named views of the parameters (``w_ih_l0``, ``w_hh_l0``, ``b_l0``, …, ``w_out``,
        ``b_out``); writing a view changes the model."""
        return views(self.params, self.spec)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path, *, extra: dict | None = None) -> None:
        """Write sizes, parameters, Adam state and step to ``path`` (``.npz``), atomically: into a
        temporary file beside it, flushed to disk, then renamed over ``path``.

        ``extra`` maps further names to arrays stored beside the model's own entries (checkpoints
        use it for the training loop's state); :meth:`load` ignores them.

        Data-parallel (``comm``): rank 0 writes, every process returns once the file is in
        place (the model is the same in every process).
        """
        if self._dp is not None:
            try:
                if self._dp.rank == 0:
                    self._save(path, extra)
            finally:
                self._dp.comm.Barrier()
            return
        self._save(path, extra)

    def _save(self, path, extra: dict | None) -> None:
        path = Path(path)
        to_np = (lambda a: a.get()) if self.xp is not np else (lambda a: a)
        own = {"format_version": _FORMAT_VERSION,
               "sizes": np.array([self.spec.input_size, self.spec.hidden_size,
                                  self.spec.num_layers, self.spec.num_classes]),
               "dtype": self.spec.dtype, "seed": self.seed, "step": self.step,
               "hyper": np.array([self.lr, self.beta1, self.beta2, self.eps]),
               "clip_norm": self.clip_norm or 0.0, "nonlinearity": self.spec.nonlinearity,
               "params": to_np(self.params), "m": to_np(self.m), "v": to_np(self.v)}
        extra = dict(extra or {})
        if clash := sorted(own.keys() & extra.keys()):
            raise ValueError(f"extra: expected names other than the model's own entries, got "
                             f"{clash}")
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                _write_npz(f, {**extra, **own})
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, device: str = "cpu", *, backend: str | None = None,
             comm=None) -> RNNClassifier:
        """Read a model written by :meth:`save`; ``device``/``backend``/``comm`` as in the
        constructor (with ``comm`` every process reads ``path``; if one fails, all raise; rank
        0's values are then broadcast).

        Raises
        ------
        FileNotFoundError
            No such file.
        ValueError
            The file is not a fastrnn model file, or an entry holds what no saved model holds
            (sizes, seed or step that are not integers in range, hyper-parameters that the
            constructor refuses or Adam cannot use, NaN or inf in the parameters or moments, a
            negative second moment), from which training would write NaN or inf. The message
            names the file and the entry.
        """
        _check_device(device, backend)
        _check_comm(comm, device, backend)
        if comm is not None:
            from fastrnn.distributed import DataParallel

            dp, error = DataParallel(comm, device), None
            try:
                if device == "cuda":  # this process's GPU, before load puts arrays on one
                    dp.use_gpu()
                model = cls.load(path, device, backend=backend)
            except Exception as e:
                error = e
            dp.agree("load", error)
            model._dp = dp
            dp.broadcast(model.params, model.m, model.v)
            return model
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: not a fastrnn model file ({type(e).__name__}: {e})") from e
        need = {"format_version", "sizes", "dtype", "seed", "step", "hyper", "params", "m", "v"}
        if not need <= data.keys():
            raise ValueError(f"{path}: not a fastrnn model file of format {_FORMAT_VERSION} "
                             f"(keys {sorted(data)})")
        version = _entry(path, data, "format_version", "iu", (), "an integer")
        if version != _FORMAT_VERSION:
            raise ValueError(f"{path}: not a fastrnn model file of format {_FORMAT_VERSION} "
                             f"(format_version {version})")
        sizes = _entry(path, data, "sizes", "iu", (4,),
                       "4 integers (input_size, hidden_size, num_layers, num_classes)")
        lr, b1, b2, eps = _entry(path, data, "hyper", "f", (4,),
                                 "4 floats (lr, beta1, beta2, eps)")
        for name, beta in (("beta1", b1), ("beta2", b2)):
            if not 0 <= beta < 1:
                check.fail(f"{path}: hyper: {name}", "a float in [0, 1)", beta)
        if not (math.isfinite(eps) and eps > 0):
            check.fail(f"{path}: hyper: eps", "a finite float > 0", eps)
        step = _entry(path, data, "step", "iu", (), "an integer")
        if not 0 <= step < np.iinfo(np.int64).max:  # the next step's number is an int64 too
            check.fail(f"{path}: step", f"an integer in [0, {np.iinfo(np.int64).max})", step)
        seed = _entry(path, data, "seed", "iu", (), "an integer")
        clip = (_entry(path, data, "clip_norm", "f", (), "a float")
                if "clip_norm" in data else None)  # older files: none
        nonlinearity = str(data["nonlinearity"]) if "nonlinearity" in data else "tanh"  # older
        try:
            model = cls(*sizes, device=device, lr=lr, seed=seed, backend=backend,
                        dtype=str(data["dtype"]), clip_norm=clip, nonlinearity=nonlinearity)
        except ValueError as e:  # the file's values: the arguments were checked above
            raise ValueError(f"{path}: {e}") from e
        except MemoryError as e:  # sizes beyond this machine's memory
            raise MemoryError(f"{path}: {e}") from e
        for name in ("params", "m", "v"):
            a = data[name]
            if a.shape != (model.spec.size,) or str(a.dtype) != model.spec.dtype:
                raise ValueError(f"{path}: {name} has shape {a.shape} and dtype {a.dtype}, "
                                 f"expected ({model.spec.size},) {model.spec.dtype}")
            if bad := int(np.count_nonzero(~np.isfinite(a))):
                check.fail(f"{path}: {name}", "finite values", f"{bad} NaN or inf")
            if name == "v" and (bad := int(np.count_nonzero(a < 0))):
                check.fail(f"{path}: v", "values >= 0 (Adam's second moment)", f"{bad} negative")
            getattr(model, name)[...] = model.xp.asarray(a)
        model.beta1, model.beta2, model.eps = b1, b2, eps
        model.step = step
        return model

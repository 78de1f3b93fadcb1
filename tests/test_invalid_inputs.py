"""The invalid-input battery over the whole public API: each case is answered by an exception of
a standard type whose message names the argument, what was expected and what arrived; never a
crash, a hang, or a silently wrong result. Huge sizes are refused before anything is allocated
(tested with zero-stride views of tiny buffers, under tracemalloc, so nothing large is ever made).

Count: 79 cases here (functional API 24, classifier 28, model files and checkpoints 4, data
loader 3, argument names 13, CLI flags 7), none repeating one of the ~257 in other files
(test_api 21, test_classifier ~47, test_data 25, test_checkpoint ~43, test_example ~39,
test_cells ~32, test_torch_rnn ~18, test_convert 32; ~ where a count was estimated from the test
ids added): ~336 in all.
"""

from __future__ import annotations

import importlib.util
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn import _validate
from fastrnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fastrnn.data import fetch, load_mnist

B, T, I, H = 3, 4, 5, 6
MAX = _validate.MAX_ELEMENTS


class FakeCupyArray:
    """Looks like a CuPy array to the device dispatch (its type's module starts with "cupy")."""

    __module__ = "cupy._core.core"

    def __init__(self, shape, dtype=np.float64):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.size = int(np.prod(shape))


class ForeignArray:
    """Another library's tensor (as torch's): a shape and a dtype of its own; NumPy could
    convert it (``__array__``), but it is refused by name, not converted or misread."""

    __module__ = "torch"

    def __init__(self, shape, dtype="torch.float64"):
        self.shape, self.dtype, self.ndim = shape, dtype, len(shape)

    def __array__(self, dtype=None, copy=None):
        return np.zeros(self.shape, dtype)


def huge(shape, dtype=np.float64):
    """A read-only view of one element with any shape: no memory behind it."""
    return np.broadcast_to(np.zeros(1, dtype), shape)


def layer(dtype=np.float64, time_major=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I)).astype(dtype)
    return {"x": x, "h0": rng.standard_normal((B, H)).astype(dtype),
            "w_ih": rng.standard_normal((H, I)).astype(dtype),
            "w_hh": rng.standard_normal((H, H)).astype(dtype),
            "b": rng.standard_normal(H).astype(dtype), "lengths": None}


def _huge_hidden():
    """B*T*H > 2**31 with a small x: x [1024, 1024, 1], H = 4096 (weights are zero-stride)."""
    return {"x": huge((1024, 1024, 1)), "h0": None, "w_ih": huge((4096, 1)),
            "w_hh": huge((4096, 4096)), "b": huge((4096,))}


# -- functional API: rnn_forward / rnn_backward -------------------------------------------------
FORWARD = [
    ({"w_ih": FakeCupyArray((H, I))}, TypeError,
     r"w_ih: expected a NumPy array \(like x\), got cupy array of shape \(6, 5\)"),
    ({"h0": FakeCupyArray((B, H))}, TypeError, r"h0: expected a NumPy array \(like x\), got cupy"),
    ({"lengths": FakeCupyArray((B,), np.int32)}, TypeError,
     r"lengths: expected a NumPy array \(like x\), got cupy"),
    ({"x": np.array(1.0)}, ValueError, r"x: expected 3 dimensions, got numpy array of shape \(\)"),
    ({"lengths": np.array(3)}, ValueError,
     r"lengths: expected shape \[B\] = \(3,\), got shape \(\)"),
    ({"lengths": np.array([True, False, True])}, TypeError,
     "lengths: expected integers, got numpy array of shape .3,. and dtype bool"),
    ({"x": np.zeros((B, T, I), np.float16)}, TypeError,
     "x: expected dtype float32 or float64, got numpy array .* dtype float16"),
    ({"x": np.zeros((B, T, I), np.complex128)}, TypeError,
     "x: expected dtype float32 or float64, got .*complex128"),
    ({"w_ih": [[0.0] * I] * H}, TypeError, "w_ih: expected a numpy array, got list"),
    ({"b": np.zeros((H, 1))}, ValueError, r"b: expected 1 dimensions, got numpy array of shape"),
    ({"lengths": [1, 2, 2**40]}, ValueError, r"lengths: expected values in \[0, T\] = \[0, 4\], "
                                             r"got values from 1 to 1099511627776"),
    ({"x": huge((2**16, 2**15, 2))}, ValueError,
     r"x: expected at most 2147483647 elements \(32-bit kernel indexing\), got numpy array of "
     r"shape \(65536, 32768, 2\)"),
    (_huge_hidden(), ValueError,
     r"x: expected B\*T\*max\(I,H\) <= 2147483647 \(32-bit kernel indexing\), got B=1024, "
     r"T=1024, I=1, H=4096"),
    ({"w_hh": huge((2**16, 2**16))}, ValueError, "w_hh: expected at most 2147483647 elements"),
    ({"x": ForeignArray((B, T, I))}, TypeError,
     r"x: expected a numpy array, got torch array of shape \(3, 4, 5\) and dtype torch.float64"),
    ({"lengths": ForeignArray((B,), "torch.int64")}, TypeError,
     r"lengths: expected integers, got torch array of shape \(3,\) and dtype torch.int64"),
]


@pytest.mark.parametrize("change, exc, match", FORWARD)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_rnn_forward_refuses(change, exc, match, backend):
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=match):
            fastrnn.rnn_forward(**(layer() | change), backend=backend)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated before refusing"


def test_rnn_forward_refuses_a_workspace_beyond_memory_before_allocating(monkeypatch):
    """B*T*max(I,H) fits 32-bit indices but not the (here: pretended 1 GiB) memory."""
    monkeypatch.setattr(_validate, "total_memory", lambda xp=np: 2**30)
    kw = {"x": huge((2**14, 2**10, 8)), "h0": None, "w_ih": huge((64, 8)),
          "w_hh": huge((64, 64)), "b": huge((64,))}
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"x: expected sizes whose arrays and workspaces fit "
                           r"in 1.0 GiB of memory, got B=16384, T=1024, I=8, H=64 \(float64\) "
                           r"needing \d+\.\d GiB"):
            fastrnn.rnn_forward(**kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize("fn", ["rnn_forward", "rnn_backward"])
def test_the_memory_estimate_counts_the_kernels_32_lane_padding(monkeypatch, fn):
    """H = I = 1: the CPU kernels' [T,B,32] copies are 32 times the unpadded [B,T,1] arrays. At
    B*T = 2**20 in float64 the padded call needs ~0.5 (forward) or ~1.8 GiB (backward), the
    unpadded count ~24 or ~64 MiB: with a pretended 256 MiB both are refused before allocating."""
    monkeypatch.setattr(_validate, "total_memory", lambda xp=np: 2**28)
    x, w = huge((2**10, 2**10, 1)), huge((1, 1))
    kw = {"x": x, "h0": None, "w_ih": w, "w_hh": w}
    kw |= {"b": huge((1,))} if fn == "rnn_forward" else {"dy": None, "dh_n": None, "y": x}
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"x: expected sizes whose arrays and workspaces fit "
                           r"in 0.2 GiB of memory, got B=1024, T=1024, I=1, H=1 \(float64\)"):
            getattr(fastrnn, fn)(**kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_a_cupy_looking_x_without_cupy_names_x():
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: a fake CuPy x would be handed to it")
    with pytest.raises(TypeError, match=r"x: expected a NumPy array, or a CuPy array with CuPy "
                       r"installed, got cupy array of shape \(3, 4, 5\)"):
        fastrnn.rnn_forward(**(layer() | {"x": FakeCupyArray((B, T, I))}))


BACKWARD = [
    ({"y": None}, TypeError, "y: expected a numpy array, got None"),
    ({"y": np.zeros((B, T, H), np.float32)}, TypeError,
     r"y: expected dtype float64 \(the dtype of x\), got float32"),
    ({"dy": FakeCupyArray((B, T, H))}, TypeError, r"dy: expected a NumPy array \(like x\)"),
    ({"dh_n": np.array(0.0)}, ValueError, r"dh_n: expected 2 dimensions, got numpy array of "
                                          r"shape \(\)"),
]


@pytest.mark.parametrize("change, exc, match", BACKWARD)
def test_rnn_backward_refuses(change, exc, match):
    kw = layer()
    del kw["b"]
    kw |= {"dy": np.zeros((B, T, H)), "dh_n": None, "y": np.zeros((B, T, H))} | change
    with pytest.raises(exc, match=match):
        fastrnn.rnn_backward(**kw, backend="cpu")


def test_read_only_and_broadcast_inputs_are_accepted():
    """Not invalid: read-only and zero-stride inputs run, and give the reference's answer."""
    kw = layer()
    for a in kw.values():
        if a is not None:
            a.flags.writeable = False
    kw["b"] = np.broadcast_to(np.float64(0.5), (H,))
    y, h_n = fastrnn.rnn_forward(**kw, backend="cpu")
    y_ref, h_ref = fastrnn.rnn_forward(**kw, backend="reference")
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n, h_ref, rtol=1e-12, atol=1e-12)


# -- RNNClassifier --------------------------------------------------------------------------------
def make(**kw):
    return fastrnn.RNNClassifier(**({"input_size": 28, "hidden_size": 31, "backend": "reference"}
                                    | kw))


CONSTRUCTOR = [
    ({"lr": float("inf")}, ValueError, "lr: expected a finite float > 0, got inf"),
    ({"lr": -1e-3}, ValueError, "lr: expected a finite float > 0, got -0.001"),
    ({"lr": np.float32("nan")}, ValueError, "lr: expected a finite float > 0, got nan"),
    ({"lr": np.array(1e-3)}, TypeError,
     r"lr: expected a positive float, got numpy array of shape \(\)"),
    ({"lr": None}, TypeError, "lr: expected a positive float, got None"),
    ({"seed": True}, ValueError, "seed: expected an int >= 0, got True"),
    ({"seed": 1.5}, ValueError, "seed: expected an int >= 0, got 1.5"),
    ({"hidden_size": True}, TypeError, "hidden_size: expected a positive int, got bool True"),
    ({"hidden_size": np.array(31)}, TypeError, "hidden_size: expected a positive int, got "
                                               "numpy array of shape"),
    ({"device": None}, ValueError, r"device: expected one of \('cpu', 'cuda'\), got None"),
    ({"backend": "cpu"}, ValueError, "backend: expected None or 'reference', got 'cpu'"),
    ({"backend": "reference", "device": "cuda"}, ValueError,
     "backend: expected 'reference' only with device='cpu', got device='cuda'"),
    ({"dtype": np.float16}, ValueError, "dtype: expected 'float32' or 'float64'"),
    ({"hidden_size": 10**6}, ValueError,
     r"hidden_size: expected a parameter count <= 2147483647 \(32-bit kernel indexing\), got "
     r"\d+ parameters \(input_size=28, hidden_size=1000000, num_layers=1, num_classes=10\)"),
    ({"input_size": 10**10, "hidden_size": 1}, ValueError,
     "input_size: expected a parameter count <= 2147483647"),
    ({"num_layers": 10**9, "hidden_size": 10}, ValueError,
     "num_layers: expected a parameter count <= 2147483647"),
]


@pytest.mark.parametrize("kwargs, exc, match", CONSTRUCTOR)
def test_constructor_refuses(kwargs, exc, match):
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=match):
            make(**kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated before refusing"


def test_constructor_refuses_a_model_beyond_memory_before_allocating(monkeypatch):
    monkeypatch.setattr(_validate, "total_memory", lambda xp=np: 2**30)
    with pytest.raises(MemoryError, match=r"hidden_size: expected sizes whose arrays and "
                       r"workspaces fit in 1.0 GiB of memory, got input_size=28, "
                       r"hidden_size=20000"):
        make(hidden_size=20_000)


@pytest.fixture(scope="module")
def model():
    return fastrnn.RNNClassifier(28, 31, 1, 10, seed=0)  # CPU kernels


X = np.zeros((4, 5, 28), np.float32)
Y = np.zeros(4, np.int64)
STEP = [
    (FakeCupyArray((4, 5, 28), np.float32), Y, TypeError,
     r"x: expected a NumPy array \(the model is on device 'cpu'\), got cupy array"),
    (X, FakeCupyArray((4,), np.int64), TypeError, r"labels: expected a NumPy array \(like x\)"),
    (np.array(0.0, np.float32), Y, ValueError,
     r"x: expected shape \[B,T,I\] with B, T >= 1 and I = 28, got shape \(\)"),
    (X, np.array(3), ValueError, r"labels: expected shape \[B\] = \(4,\), got shape \(\)"),
    (X, np.ones(4, bool), TypeError, "labels: expected an integer array of shape"),
    (X, np.array([0, 1, 2, 2**40]), ValueError,
     r"labels: expected labels in \[0, 10\), got values from 0 to 1099511627776"),
    (ForeignArray((4, 5, 28), "torch.float32"), Y, TypeError,
     r"x: expected a NumPy or CuPy array of shape \[B,T,I\], got torch array of shape"),
    (X, ForeignArray((4,), "torch.int64"), TypeError,
     r"labels: expected an integer array of shape \[B\] = \(4,\), got torch array"),
    (X, np.array([0, 1, 2, 2**64 - 1], np.uint64), ValueError,
     r"labels: expected labels in \[0, 10\), got values from 0 to 18446744073709551615"),
    (huge((2**17, 2**10, 28), np.float32), np.zeros(2**17, np.int64), ValueError,
     r"x: expected B\*T\*max\(I, H padded\) <= 2147483647 \(32-bit kernel indexing\), got "
     r"B=131072, T=1024, I=28, H=31, num_layers=1"),
]


@pytest.mark.parametrize("x, labels, exc, match", STEP)
def test_train_step_refuses_and_leaves_the_model_alone(model, x, labels, exc, match):
    before, step = model.params.copy(), model.step
    tracemalloc.start()
    try:
        with pytest.raises(exc, match=match):
            model.train_step(x, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated before refusing"
    np.testing.assert_array_equal(model.params, before)
    assert model.step == step


def test_a_batch_beyond_memory_is_refused_before_allocating(model, monkeypatch):
    monkeypatch.setattr(_validate, "total_memory", lambda xp=np: 2**30)
    with pytest.raises(MemoryError, match=r"x: expected sizes whose arrays and workspaces fit in "
                       r"1.0 GiB of memory, got B=4096, T=1024, I=28, H=31, num_layers=1"):
        model.predict(huge((4096, 1024, 28), np.float32))


# -- model files and checkpoints -------------------------------------------------------------------
def _doctored(tmp_path, **entries) -> Path:
    """A saved model whose entries are replaced by ``entries``."""
    src = tmp_path / "m.npz"
    make(hidden_size=4).save(src)
    with np.load(src) as f:
        data = {k: f[k] for k in f.files} | entries
    np.savez(tmp_path / "bad.npz", **data)
    return tmp_path / "bad.npz"


def test_a_model_file_claiming_huge_sizes_is_refused_without_allocating(tmp_path):
    bad = _doctored(tmp_path, sizes=np.array([28, 10**6, 1, 10]))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"hidden_size: expected a parameter count <= "):
            load_checkpoint_or_model(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated before refusing"


def load_checkpoint_or_model(path):
    return fastrnn.RNNClassifier.load(path, backend="reference")


def test_a_model_file_with_params_of_the_wrong_size_is_refused(tmp_path):
    bad = _doctored(tmp_path, params=np.zeros(7, np.float32))
    with pytest.raises(ValueError, match=r"bad.npz: params has shape \(7,\) and dtype float32, "
                       r"expected \(\d+,\) float32"):
        load_checkpoint_or_model(bad)


def test_a_checkpoint_with_zero_sizes_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(tmp_path, make(hidden_size=4), 1)
    with np.load(path) as f:
        data = {k: f[k] for k in f.files} | {"sizes": np.array([28, 0, 1, 10])}
    np.savez(path, **data)
    with pytest.raises(CheckpointError, match=r"epoch-0001.npz: hidden_size: expected a positive "
                       r"int, got 0"):
        load_checkpoint(path)


def test_save_checkpoint_refuses_a_bool_epoch(tmp_path):
    with pytest.raises(ValueError, match="epoch: expected an int >= 0, got True"):
        save_checkpoint(tmp_path, make(hidden_size=4), True)
    assert list(tmp_path.iterdir()) == []


# -- data loader -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, exc, match", [
    (lambda: load_mnist(validation_size=np.array(5000)), TypeError,
     r"validation_size must be an int in \[0, 60000\], got array\(5000\)"),
    (lambda: load_mnist(validation_size=2**70), ValueError,
     r"validation_size must be in \[0, 60000\], got 1180591620717411303424"),
    (lambda: fetch(None), ValueError, "fname must be one of .*, got None"),
])
def test_data_loader_refuses(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# -- every public entry point names its own arguments -------------------------------------------
def _cell_run(**kw):
    from fastrnn.cells import BasicRNNCell, dynamic_rnn

    return dynamic_rnn(BasicRNNCell(H, dtype="float64"), np.zeros((B, T, I)), **kw)


def _tape_backward(**kw):
    from fastrnn.cells import BasicRNNCell, dynamic_rnn

    *_, tape = dynamic_rnn(BasicRNNCell(H, dtype="float64"), np.zeros((B, T, I)),
                           return_tape=True)
    return tape.backward(**kw)


def _static(steps):
    from fastrnn.cells import BasicRNNCell, static_rnn

    return static_rnn(BasicRNNCell(H, dtype="float64"), steps)


def _cell_call(inputs, state):
    from fastrnn.cells import BasicRNNCell

    return BasicRNNCell(H, dtype="float64")(inputs, state)


def _set_weights(w_hh, b):
    from fastrnn.cells import BasicRNNCell

    return BasicRNNCell(H, dtype="float64").set_weights(np.zeros((H, I)), w_hh, b)


def _torch_rnn_on_the_wrong_backend():
    torch = pytest.importorskip("torch")
    from fastrnn.torch import RNN

    return RNN(I, H, backend="cuda")(torch.zeros(T, B, I))


#: (call, message): a device or dtype mix named with the caller's argument names ("inputs" and
#: "state" for the cells, "input" for fastrnn.torch), never the functional API's "x"
NAMES = [
    (lambda: fastrnn.rnn_forward(np.zeros((B, T, I)), FakeCupyArray((B, H)), np.zeros((H, I)),
                                 np.zeros((H, H)), np.zeros(H)),
     r"^h0: expected a NumPy array \(like x\)"),
    (lambda: _cell_call(np.zeros((B, I)), FakeCupyArray((B, H))),
     r"^state: expected a NumPy array \(like inputs\)"),
    (lambda: _set_weights(FakeCupyArray((H, H)), np.zeros(H)),
     r"^w_hh: expected a NumPy array \(like w_ih\)"),
    (lambda: _set_weights(np.zeros((H, H)), FakeCupyArray((H,))),
     r"^b: expected a NumPy array \(like w_ih\)"),
    (lambda: _cell_run(initial_state=FakeCupyArray((B, H))),
     r"^initial_state: expected a NumPy array \(like inputs\)"),
    (lambda: _cell_run(initial_state=np.zeros((B, H), np.float32)),
     r"^initial_state: expected dtype float64 \(the dtype of inputs\), got float32"),
    (lambda: _cell_run(sequence_length=FakeCupyArray((B,), np.int64)),
     r"^sequence_length: expected a NumPy array \(like inputs\)"),
    (lambda: _static([np.zeros((B, I)), FakeCupyArray((B, I))]),
     r"^inputs\[1\]: expected a NumPy array \(like inputs\[0\]\)"),
    (lambda: _static([np.zeros((B, I)), np.zeros((B, I), np.float32)]),
     r"^inputs\[1\]: expected dtype float64 \(the dtype of inputs\[0\]\), got float32"),
    (lambda: _tape_backward(d_outputs=FakeCupyArray((B, T, H))),
     r"^d_outputs: expected a NumPy array \(like the forward's inputs\)"),
    (lambda: _tape_backward(d_state=FakeCupyArray((B, H))),
     r"^d_state: expected a NumPy array \(like the forward's inputs\)"),
    (lambda: fastrnn.RNNClassifier(I, H, 1, 3).train_step(np.zeros((B, T, I), np.float32),
                                                          FakeCupyArray((B,), np.int64)),
     r"^labels: expected a NumPy array \(like x\)"),
    (_torch_rnn_on_the_wrong_backend,
     r"^backend: expected one of \('cpu', 'reference'\) for input on the cpu \(or None\), "
     r"got 'cuda'"),
]


@pytest.mark.parametrize("call, match", NAMES)
def test_messages_name_the_callers_arguments(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


# -- CLI flags of examples/train_mnist.py ---------------------------------------------------------
def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"
    spec = importlib.util.spec_from_file_location("train_mnist_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "abc"], "argument --hidden: invalid int value: 'abc'"),
    (["--layers", "True"], "argument --layers: invalid int value: 'True'"),
    (["--lr", "nan"], "--lr: expected a finite float > 0, got nan"),
    (["--lr", "inf"], "--lr: expected a finite float > 0, got inf"),
    (["--batch-size", "0"], "--batch-size: expected an int >= 1, got 0"),
    (["--epochs", "-1"], "--epochs: expected an int >= 1, got -1"),
    (["--max-steps", "0"], "--max-steps: expected an int >= 1, got 0"),
])
def test_cli_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        _example().parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err



def test_module_docstring_count_is_this_files():
    """The count in the docstring is kept honest."""
    n = (len(FORWARD) + 2 + 2 + len(BACKWARD) + len(CONSTRUCTOR) + 1 + len(STEP) + 1 + 4 + 3
         + len(NAMES) + 6 + 1)
    assert f"Count: {n} cases here" in __doc__, n

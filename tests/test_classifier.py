"""RNNClassifier end to end: training on a slice of real MNIST, save/load, and argument checks.
Each device's kernels are compared with the reference backend step by step in their own test
files; here the same behaviour is asserted of every CPU backend."""

from __future__ import annotations

import numpy as np
import pytest

import fastrnn
from fastrnn.data import load_mnist

CPU_BACKENDS = ["reference", None]  # None: the device's own kernels


def make(backend, **kw):
    kw = {"input_size": 28, "hidden_size": 31, "num_layers": 1, "num_classes": 10, "seed": 0,
          "device": "cpu", "backend": backend} | kw
    return fastrnn.RNNClassifier(**kw)


@pytest.fixture(scope="module")
def mnist_slice(mnist_dir):
    train = load_mnist(mnist_dir).train
    return train.images[:1280].reshape(-1, 28, 28), train.labels[:1280]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("layers", [1, 3])
def test_ten_steps_on_mnist_lower_the_loss(mnist_slice, backend, layers):
    x, y = mnist_slice
    model = make(backend, num_layers=layers, lr=1e-2)
    first, _ = model.evaluate(x, y)
    for i in range(10):
        model.train_step(x[i * 128:(i + 1) * 128], y[i * 128:(i + 1) * 128])
    last, _ = model.evaluate(x, y)
    print(f"loss over 1280 images: {first:.4f} -> {last:.4f}")
    assert last < first - 0.1


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_save_then_load_gives_identical_predictions_and_training(tmp_path, backend):
    rng = np.random.default_rng(0)
    x = rng.random((16, 5, 28), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    model = make(backend, num_layers=2)
    model.train_step(x, y)
    model.save(tmp_path / "m.npz")
    loaded = fastrnn.RNNClassifier.load(tmp_path / "m.npz", backend=backend)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))
    # the Adam state came along too: one more step stays identical
    assert model.train_step(x, y) == loaded.train_step(x, y)
    np.testing.assert_array_equal(model.params, loaded.params)


def test_same_seed_same_model_other_seed_other_model():
    assert np.array_equal(make("reference").params, make("reference").params)
    assert not np.array_equal(make("reference").params, make("reference", seed=1).params)


def test_initialisation_is_keras_style():
    w = make("reference", hidden_size=16).weights()
    np.testing.assert_allclose(w["w_hh_l0"] @ w["w_hh_l0"].T, np.eye(16), atol=1e-5)
    limit = np.sqrt(6 / (28 + 16))
    assert np.abs(w["w_ih_l0"]).max() <= limit and np.abs(w["w_ih_l0"]).max() > 0.9 * limit
    assert not w["b_l0"].any() and not w["b_out"].any()


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"hidden_size": 0}, ValueError, "hidden_size: expected a positive int, got 0"),
    ({"num_layers": 2.0}, TypeError, "num_layers: expected a positive int"),
    ({"input_size": -3}, ValueError, "input_size"),
    ({"num_classes": True}, TypeError, "num_classes"),
    ({"device": "tpu"}, ValueError, r"device: expected one of \('cpu', 'cuda'\), got 'tpu'"),
    ({"lr": 0.0}, ValueError, "lr: expected a finite float > 0, got 0.0"),
    ({"lr": float("nan")}, ValueError, "lr: expected a finite float > 0"),
    ({"lr": "1e-3"}, TypeError, "lr: expected a positive float"),
    ({"dtype": "float16"}, ValueError, "dtype"),
    ({"seed": -1}, ValueError, "seed: expected an int >= 0, got -1"),
    # save() could not store it (a 64-bit integer entry)
    ({"seed": 2**64}, ValueError, r"seed: expected an int < 2\*\*64, got 18446744073709551616"),
    # finite as a Python float, inf in float32: the first Adam update would write inf
    ({"lr": 1e300}, ValueError,
     r"lr: expected a finite float > 0 that float32 can hold \(<= 3.4028235e\+38\), got 1e\+300"),
])
def test_constructor_rejects_invalid_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make("reference", **kwargs)


def test_lr_set_later_is_checked_like_the_constructors():
    model = make("reference", lr=1e-2)
    model.lr = 5e-3
    assert model.lr == 5e-3
    for bad, exc in ((1e39, ValueError), (float("nan"), ValueError), ("0.1", TypeError)):
        with pytest.raises(exc, match="lr: expected a"):
            model.lr = bad
    assert model.lr == 5e-3
    assert make("reference", lr=1e300, dtype="float64").lr == 1e300  # float64 holds it


def test_the_largest_seed_saves_and_loads(tmp_path):
    make("reference", seed=2**64 - 1, hidden_size=3).save(tmp_path / "m.npz")
    assert fastrnn.RNNClassifier.load(tmp_path / "m.npz").seed == 2**64 - 1


@pytest.mark.parametrize("x, labels, exc, match", [
    (np.zeros((4, 5, 27), np.float32), np.zeros(4, int), ValueError,
     r"x: expected shape \[B,T,I\]"),
    (np.zeros((4, 28 * 28), np.float32), np.zeros(4, int), ValueError, "x: expected shape"),
    (np.zeros((4, 5, 28), np.uint8), np.zeros(4, int), TypeError, "x: expected a floating"),
    ([[[0.0] * 28]], [0], TypeError, "x: expected a NumPy or CuPy array of shape"),
    (np.zeros((4, 5, 28), np.float32), np.zeros(3, int), ValueError,
     r"labels: expected shape \[B\]"),
    (np.zeros((4, 5, 28), np.float32), np.array([0, 1, 2, 10]), ValueError,
     r"labels: expected labels in \[0, 10\), got values from 0 to 10"),
    (np.zeros((4, 5, 28), np.float32), np.array([0, -1, 2, 3]), ValueError, "labels"),
    (np.zeros((4, 5, 28), np.float32), np.zeros(4, np.float32), TypeError,
     "labels: expected an integer array"),
])
def test_train_step_rejects_invalid_inputs(x, labels, exc, match):
    model = make("reference")
    before = model.params.copy()
    with pytest.raises(exc, match=match):
        model.train_step(x, labels)
    np.testing.assert_array_equal(model.params, before)
    assert model.step == 0


def test_load_rejects_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="bad.npz: not a fastrnn model file"):
        fastrnn.RNNClassifier.load(bad)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a fastrnn model file"):
        fastrnn.RNNClassifier.load(tmp_path / "other.npz")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """The entries of a saved float32 model that took one step (m, v non-zero)."""
    model = make("reference", input_size=3, hidden_size=4, num_classes=3)
    model.train_step(np.ones((2, 2, 3), np.float32), np.array([0, 2]))
    path = tmp_path_factory.mktemp("model") / "m.npz"
    model.save(path)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _with_one(a: np.ndarray, value: float) -> np.ndarray:
    a = a.copy()
    a[1] = value
    return a


# each would load silently before (truncated, or a model whose next train_step writes NaN/inf),
# or fail with an error naming neither the file nor the entry
@pytest.mark.parametrize("entry, value, message", [
    ("step", np.array(-1), r"step: expected an integer in \[0, 9223372036854775807\), got -1"),
    ("step", np.array(2.7), r"step: expected an integer, got numpy array of shape \(\) and dtype "
                            r"float64"),
    ("seed", np.array(2.5), "seed: expected an integer, got numpy array"),
    ("seed", np.array(-3), "seed: expected an int >= 0, got -3"),
    ("sizes", np.array([3.9, 4.2, 1.0, 3.0]), r"sizes: expected 4 integers \(input_size, "
                                              r"hidden_size, num_layers, num_classes\), got"),
    ("sizes", np.array([3, 4, 1]), r"sizes: expected 4 integers .* shape \(3,\)"),
    ("sizes", np.array([-4, 4, 1, 3]), "input_size: expected a positive int, got -4"),
    ("format_version", np.array([1, 1]), r"format_version: expected an integer, got numpy array "
                                         r"of shape \(2,\)"),
    ("format_version", np.array(2), r"not a fastrnn model file of format 1 \(format_version 2\)"),
    ("hyper", np.array([1e-3, 0.9, 0.999]), r"hyper: expected 4 floats \(lr, beta1, beta2, eps\)"),
    ("hyper", np.array([1e-3, 1.0, 0.999, 1e-8]), r"hyper: beta1: expected a float in \[0, 1\), "
                                                  r"got 1.0"),
    ("hyper", np.array([1e-3, np.nan, 0.999, 1e-8]), r"hyper: beta1: expected .*, got nan"),
    ("hyper", np.array([1e-3, 0.9, -0.5, 1e-8]), r"hyper: beta2: expected .*, got -0.5"),
    ("hyper", np.array([1e-3, 0.9, 0.999, -1.0]), "hyper: eps: expected a finite float > 0, "
                                                  "got -1.0"),
    ("hyper", np.array([1e-3, 0.9, 0.999, np.inf]), "hyper: eps: expected a finite float > 0"),
    ("hyper", np.array([1e300, 0.9, 0.999, 1e-8]), "lr: expected a finite float > 0 that float32 "
                                                   "can hold"),
    ("hyper", np.array([np.nan, 0.9, 0.999, 1e-8]), "lr: expected a finite float > 0, got nan"),
    ("clip_norm", np.array(-1.0), "clip_norm: expected None, 0 or a finite float > 0, got -1.0"),
    ("m", "nan", "m: expected finite values, got 1 NaN or inf"),
    ("v", "inf", "v: expected finite values, got 1 NaN or inf"),
    ("v", "-1", r"v: expected values >= 0 \(Adam's second moment\), got 1 negative"),
    ("params", "inf", "params: expected finite values, got 1 NaN or inf"),
])
def test_load_refuses_a_tampered_entry_naming_file_and_entry(tmp_path, model_file, entry, value,
                                                             message):
    if isinstance(value, str):  # one element of the array set to this value
        value = _with_one(model_file[entry], float(value))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **(model_file | {entry: value}))
    with pytest.raises(ValueError, match=message) as e:
        fastrnn.RNNClassifier.load(bad, backend="reference")
    assert str(e.value).startswith(f"{bad}: ") and "\n" not in str(e.value)


def test_load_names_a_bad_argument_not_the_file(tmp_path, model_file):
    np.savez(tmp_path / "m.npz", **model_file)
    with pytest.raises(ValueError, match=r"^device: expected one of \('cpu', 'cuda'\), got 'tpu'"):
        fastrnn.RNNClassifier.load(tmp_path / "m.npz", device="tpu")
    loaded = fastrnn.RNNClassifier.load(tmp_path / "m.npz", backend="reference")
    assert loaded.step == 1 and loaded.seed == 0


def test_cuda_device_without_a_gpu_says_why():
    from tests.conftest import HAVE_GPU

    if HAVE_GPU:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="device='cuda' is unavailable: "):
        make(None, device="cuda")


@pytest.mark.parametrize("strategy", ["fused", "gemm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_relu_classifier_steps_follow_the_reference(strategy, layers, monkeypatch):
    """``nonlinearity="relu"``: four clipped training steps (B=5, T=7, a NaN batch in between
    that must change nothing), predict and evaluate, on both CPU strategies, against the
    reference classifier (float64)."""
    from fastrnn.backends import get_backend
    from fastrnn.params import ModelSpec, init_params
    from tests.steps import batch, run_steps
    from tests.tolerances import KERNEL_F32_BACKWARD, KERNEL_F32_FORWARD, assert_close

    monkeypatch.setenv("FASTRNN_CPU_STRATEGY", strategy)
    spec = ModelSpec(6, 33, layers, 4, nonlinearity="relu")
    want = run_steps(np, "reference", spec, 4, 5, 7, clip=0.5, nan_at=(2,))
    got = run_steps(np, "cpu", spec, 4, 5, 7, clip=0.5, nan_at=(2,))
    assert_close("losses", want[0], got[0], KERNEL_F32_FORWARD)
    assert_close("grad norms", want[2], got[2], KERNEL_F32_BACKWARD)
    assert_close("params after 3 steps", want[3], got[3], KERNEL_F32_BACKWARD)
    params, (x, labels) = init_params(spec, 1), batch(spec, 6, 7, 9)
    ref_clf, clf = get_backend("reference").classifier(spec), get_backend("cpu").classifier(spec)
    assert_close("logits", ref_clf.predict(params.astype(np.float64), x.astype(np.float64)),
                 clf.predict(params, x), KERNEL_F32_FORWARD)
    assert_close("evaluate loss",
                 ref_clf.evaluate(params.astype(np.float64), x.astype(np.float64), labels)[0],
                 clf.evaluate(params, x, labels)[0], KERNEL_F32_FORWARD)
    tanh = get_backend("reference").classifier(ModelSpec(6, 33, layers, 4))
    assert not np.allclose(tanh.predict(params.astype(np.float64), x.astype(np.float64)),
                           ref_clf.predict(params.astype(np.float64), x.astype(np.float64)))


def test_the_nonlinearity_is_saved_and_old_files_load_as_tanh(tmp_path):
    model = make(None, nonlinearity="relu")
    model.save(tmp_path / "relu.npz")
    assert fastrnn.RNNClassifier.load(tmp_path / "relu.npz").spec.nonlinearity == "relu"
    with np.load(tmp_path / "relu.npz") as f:  # a file from before the option: no entry
        data = {k: f[k] for k in f.files if k != "nonlinearity"}
    np.savez(tmp_path / "old.npz", **data)
    assert fastrnn.RNNClassifier.load(tmp_path / "old.npz").spec.nonlinearity == "tanh"
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu'"):
        make(None, nonlinearity="gelu")

"""fastrnn.torch.RNN against torch.nn.RNN autograd: outputs and every gradient (input, h0, each
weight and bias), float32 and float64, 1 and 3 layers, batch_first both ways, packed input with
mixed lengths, an empty batch; state_dict round trips; unsupported arguments, dtypes and
devices, and double backward, refused; torch stays optional; threads.

The reference is nn.RNN in float64 holding the same weights: float64 modules must match it to
KERNEL_F64, float32 ones to the float32 kernel tolerances (the same bound as the kernels against
fastrnn's float64 reference)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fastrnn.torch as ft  # noqa: E402
from tests.conftest import BACKENDS  # noqa: E402
from tests.tolerances import (  # noqa: E402
    KERNEL_F32_BACKWARD,
    KERNEL_F32_FORWARD,
    KERNEL_F64,
    assert_close,
)

DTYPES = {"float32": torch.float32, "float64": torch.float64}

B, T, I, H = 3, 7, 5, 6


def tols(dtype):
    return ((KERNEL_F64, KERNEL_F64) if dtype == torch.float64
            else (KERNEL_F32_FORWARD, KERNEL_F32_BACKWARD))


def device_of(backend):
    return "cuda" if backend == "cuda" else "cpu"


def pair(layers, dtype, backend, seed=0, **kw):
    """(fastrnn.torch.RNN in ``dtype``, nn.RNN in float64 with the same weights)."""
    dev = device_of(backend)
    torch.manual_seed(seed)
    fast = ft.RNN(I, H, layers, backend=None if backend == "cuda" else backend, **kw)
    fast = fast.to(device=dev, dtype=dtype)
    ref = torch.nn.RNN(I, H, layers, **kw).to(device=dev, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in fast.state_dict().items()})
    return fast, ref


def leaf(t):
    return t.detach().clone().requires_grad_(True)


def compare(name, ref, out, tol):
    assert_close(name, ref.detach().double().cpu().numpy(), out.detach().double().cpu().numpy(),
                 tol)


def run_both(fast, ref, x, h0, upstream):
    """Forward both, backprop <R, output> + <S, h_n>; returns outputs and leaves."""
    results = []
    for m, dt in ((fast, fast.weight_hh_l0.dtype), (ref, torch.float64)):
        xl = leaf(x.to(dt))
        hl = None if h0 is None else leaf(h0.to(dt))
        y, h_n = m(xl, hl)
        R, S = upstream
        (torch.sum(y.double() * R) + torch.sum(h_n.double() * S)).backward()
        results.append((y, h_n, xl, hl))
    return results


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_outputs_and_every_gradient_match_nn_rnn(backend, dtype, layers, batch_first, with_h0,
                                                 nonlinearity, bidirectional):
    if backend == "cuda" and dtype == "float64":
        pytest.skip("the cuda backend computes in float32 only")
    dt, dev = DTYPES[dtype], device_of(backend)
    fast, ref = pair(layers, dt, backend, batch_first=batch_first, nonlinearity=nonlinearity,
                     bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    g = torch.Generator().manual_seed(2)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g, dtype=torch.float64)
    h0 = torch.randn(D * layers, B, H, generator=g, dtype=torch.float64) if with_h0 else None
    R = torch.randn((B, T, D * H) if batch_first else (T, B, D * H), generator=g,
                    dtype=torch.float64)
    S = torch.randn(D * layers, B, H, generator=g, dtype=torch.float64)
    x, R, S = x.to(dev), R.to(dev), S.to(dev)
    h0 = None if h0 is None else h0.to(dev)
    (y, h_n, xl, hl), (y_r, h_r, xl_r, hl_r) = run_both(fast, ref, x, h0, (R, S))
    fwd, bwd = tols(dt)
    assert y.dtype == dt and y.shape == y_r.shape and h_n.shape == (D * layers, B, H)
    compare("output", y_r, y, fwd)
    compare("h_n", h_r, h_n, fwd)
    compare("d_input", xl_r.grad, xl.grad, bwd)
    if with_h0:
        compare("d_h0", hl_r.grad, hl.grad, bwd)
    for (name, p_r), p in zip(ref.named_parameters(), fast.parameters()):
        compare(f"d_{name}", p_r.grad, p.grad, bwd)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("enforce_sorted", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_sequence_matches_nn_rnn(backend, enforce_sorted, layers, batch_first,
                                        bidirectional):
    """Packed sequences of lengths T, 5, 3, 1: the reverse direction starts at each sequence's
    last step, as nn.RNN's."""
    dev = device_of(backend)
    dt = torch.float32 if backend == "cuda" else torch.float64  # cuda: float32 only
    fwd, bwd = tols(dt)
    fast, ref = pair(layers, dt, backend, batch_first=batch_first, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    lengths = torch.tensor([T, 5, 3, 1]) if enforce_sorted else torch.tensor([3, T, 1, 5])
    nb = len(lengths)
    g = torch.Generator().manual_seed(3)
    x = torch.randn((nb, T, I) if batch_first else (T, nb, I), generator=g, dtype=torch.float64)
    h0 = torch.randn(D * layers, nb, H, generator=g, dtype=torch.float64).to(dev)
    S = torch.randn(D * layers, nb, H, generator=g, dtype=torch.float64).to(dev)
    outs = []
    for m, m_dt in ((fast, dt), (ref, torch.float64)):
        xl, hl = leaf(x.to(dev, m_dt)), leaf(h0.to(m_dt))
        packed = pack_padded_sequence(xl, lengths, batch_first=batch_first,
                                      enforce_sorted=enforce_sorted)
        out, h_n = m(packed, hl)
        R = torch.arange(out.data.numel(), dtype=torch.float64, device=dev).reshape(
            out.data.shape).sin()
        (torch.sum(out.data.double() * R) + torch.sum(h_n.double() * S)).backward()
        outs.append((out, h_n, xl, hl))
    (out, h_n, xl, hl), (out_r, h_r, xl_r, hl_r) = outs
    assert isinstance(out, type(out_r))
    assert torch.equal(out.batch_sizes, out_r.batch_sizes)
    for a, b in ((out.sorted_indices, out_r.sorted_indices),
                 (out.unsorted_indices, out_r.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    compare("output.data", out_r.data, out.data, fwd)
    compare("h_n", h_r, h_n, fwd)
    compare("d_input", xl_r.grad, xl.grad, bwd)
    compare("d_h0", hl_r.grad, hl.grad, bwd)
    for (name, p_r), p in zip(ref.named_parameters(), fast.parameters()):
        compare(f"d_{name}", p_r.grad, p.grad, bwd)


@pytest.mark.parametrize("bias", [True, False])
def test_unbatched_input_and_bias_false(bias):
    fast, ref = pair(2, torch.float64, "reference", bias=bias)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in ref.named_parameters()]
    g = torch.Generator().manual_seed(4)
    x, h0 = torch.randn(T, I, generator=g, dtype=torch.float64), torch.randn(2, H, generator=g,
                                                                           dtype=torch.float64)
    outs = []
    for m in (fast, ref):
        xl, hl = leaf(x), leaf(h0)
        y, h_n = m(xl, hl)
        (y.sum() + h_n.square().sum()).backward()
        outs.append((y, h_n, xl, hl))
    (y, h_n, xl, hl), (y_r, h_r, xl_r, hl_r) = outs
    assert y.shape == (T, H) and h_n.shape == (2, H)
    compare("output", y_r, y, KERNEL_F64)
    compare("h_n", h_r, h_n, KERNEL_F64)
    compare("d_input", xl_r.grad, xl.grad, KERNEL_F64)
    compare("d_h0", hl_r.grad, hl.grad, KERNEL_F64)
    for (name, p_r), p in zip(ref.named_parameters(), fast.parameters()):
        compare(f"d_{name}", p_r.grad, p.grad, KERNEL_F64)


def test_layer_function_passes_gradcheck():
    g = torch.Generator().manual_seed(5)
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in ((2, 3, 4), (2, 3), (3, 4), (3, 3), (3,))]
    lengths = np.array([3, 1])
    assert torch.autograd.gradcheck(
        lambda *a: ft._RNNLayer.apply(*a, lengths, False, "tanh", "reference"), args)


def test_double_backward_raises_instead_of_dropping_second_order_terms():
    """The kernel's gradients are no torch graph: a create_graph backward must refuse, not return
    gradients whose own derivatives through x and the weights are silently zero."""
    fast, _ = pair(1, torch.float64, "reference")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64, requires_grad=True)
    R = torch.randn(T, B, H, generator=g, dtype=torch.float64, requires_grad=True)
    with pytest.raises(NotImplementedError, match="double backward.*use torch.nn.RNN"):
        torch.autograd.grad(fast(x)[0], x, R, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.gradgradcheck(lambda x: fast(x)[0], (x,))
    (d_x,) = torch.autograd.grad(fast(x)[0], x, R)  # first order still runs
    assert d_x.shape == x.shape and not d_x.requires_grad


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_empty_batch_matches_nn_rnn(batch_first, with_h0):
    """B = 0, as nn.RNN: empty output and h_n of the right shapes, zero parameter gradients."""
    fast, ref = pair(2, torch.float64, "reference", batch_first=batch_first)
    x_shape, y_shape = ((0, T, I), (0, T, H)) if batch_first else ((T, 0, I), (T, 0, H))
    x = torch.zeros(x_shape, dtype=torch.float64)
    h0 = torch.zeros(2, 0, H, dtype=torch.float64) if with_h0 else None
    upstream = torch.zeros(y_shape, dtype=torch.float64), torch.zeros(2, 0, H, dtype=torch.float64)
    (y, h_n, xl, hl), (y_r, h_r, _, _) = run_both(fast, ref, x, h0, upstream)
    assert y.shape == y_r.shape == y_shape and h_n.shape == h_r.shape == (2, 0, H)
    assert xl.grad.shape == x.shape and (hl is None or hl.grad.shape == h0.shape)
    for (name, p_r), p in zip(ref.named_parameters(), fast.parameters()):
        assert torch.equal(p.grad, p_r.grad), name  # zeros


def test_same_seed_same_init_and_state_dict_round_trips():
    torch.manual_seed(0)
    ref = torch.nn.RNN(I, H, 3, batch_first=True)
    torch.manual_seed(0)
    fast = ft.RNN(I, H, 3, batch_first=True)
    for (n_r, p_r), (n, p) in zip(ref.state_dict().items(), fast.state_dict().items()):
        assert n == n_r and p.shape == p_r.shape and torch.equal(p, p_r)
    trained = torch.nn.RNN(I, H, 3)
    with torch.no_grad():
        for p in trained.parameters():
            p.normal_()
    fast.load_state_dict(trained.state_dict())  # strict: same names and shapes
    back = torch.nn.RNN(I, H, 3)
    back.load_state_dict(fast.state_dict())
    for k, v in trained.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    no_bias = ft.RNN(I, H, bias=False)
    no_bias.load_state_dict(torch.nn.RNN(I, H, bias=False).state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        no_bias.load_state_dict(torch.nn.RNN(I, H).state_dict())


def test_adam_training_steps_follow_nn_rnn_step_by_step():
    fast, ref = pair(2, torch.float64, "reference", batch_first=True)
    heads = [torch.nn.Linear(H, 4).double() for _ in range(2)]
    heads[1].load_state_dict(heads[0].state_dict())
    g = torch.Generator().manual_seed(6)
    x = torch.randn(8, T, I, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (8,), generator=g)
    losses = []
    for rnn, head in zip((fast, ref), heads):
        opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-2)
        curve = []
        for _ in range(5):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(rnn(x)[0][:, -1]), labels)
            loss.backward()
            opt.step()
            curve.append(loss.item())
        losses.append(curve)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    assert losses[0][-1] < losses[0][0]


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"dropout": 0.5, "num_layers": 2}, NotImplementedError, "dropout=0.5"),
    ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity: expected 'tanh' or 'relu'"),
    ({"dropout": 1.5}, ValueError, r"dropout: expected a number in \[0, 1\]"),
    ({"num_layers": 0}, ValueError, "num_layers: expected a positive int"),
    ({"backend": "tpu"}, ValueError, "backend: expected one of"),
])
def test_unsupported_and_invalid_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ft.RNN(I, H, **kwargs)


def test_invalid_forward_arguments():
    m = ft.RNN(I, H, 2, backend="reference")
    with pytest.raises(ValueError, match="input: expected last dimension input_size = 5"):
        m(torch.zeros(T, B, I + 1))
    with pytest.raises(ValueError, match="input: expected 3 dimensions"):
        m(torch.zeros(T))
    with pytest.raises(TypeError, match="input: expected a torch.float32 tensor"):
        m(torch.zeros(T, B, I, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"hx: expected a Tensor of shape \[L,B,H\] = \(2, 3, 6"):
        m(torch.zeros(T, B, I), torch.zeros(1, B, H))
    with pytest.raises(TypeError, match="input: expected a Tensor or PackedSequence"):
        m(np.zeros((T, B, I), np.float32))
    with pytest.raises(ValueError, match=r"input: expected at least one time step \(T >= 1\)"):
        m(torch.zeros(0, B, I))


@pytest.mark.parametrize("make, x, exc, match", [
    ({"dtype": torch.bfloat16}, torch.zeros(T, B, I, dtype=torch.bfloat16), TypeError,
     "input: expected dtype torch.float32 or torch.float64 on the CPU, got torch.bfloat16"),
    ({"dtype": torch.float16}, torch.zeros(T, B, I, dtype=torch.float16), TypeError,
     "input: expected dtype torch.float32 or torch.float64 on the CPU, got torch.float16"),
    ({"dtype": torch.float16}, torch.zeros(T, B, I), TypeError,
     r"parameters \(weight_ih_l0\): expected dtype .* got torch.float16"),
    ({"device": "meta"}, torch.zeros(T, B, I, device="meta"), ValueError,
     "input: expected a tensor on the CPU or CUDA, got a tensor on meta"),
], ids=["bfloat16", "float16", "float16-parameters", "meta"])
def test_unsupported_dtype_or_device_is_named_before_any_conversion(make, x, exc, match):
    """Refused before the NumPy / DLPack views, naming input (or the parameters), not fastrnn's
    internal x."""
    with pytest.raises(exc, match=match):
        ft.RNN(I, H, **make)(x)


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=os.environ | env, timeout=120)


def test_torch_is_optional():
    r = _python("import sys, fastrnn, fastrnn.cells, fastrnn.convert\n"
                "assert 'torch' not in sys.modules, 'import fastrnn imported torch'")
    assert r.returncode == 0, r.stderr
    r = _python("import sys; sys.modules['torch'] = None\nimport fastrnn.torch")
    assert "ImportError: fastrnn.torch needs PyTorch: pip install torch" in r.stderr


def test_cpu_threads_share_the_process_with_torch():
    """Functional part of the threads check (timings: bench/test_bench_torch_dropin.py): the CPU
    kernels run on Numba's OpenMP layer where it loads (unless the user chose one) and leave
    torch's thread settings alone. Run in a fresh process so no earlier test has picked the
    layer."""
    r = _python(
        "import numba, torch\n"
        "import fastrnn.torch as ft\n"
        "n = torch.get_num_threads()\n"
        "m = ft.RNN(4, 8, 2, backend='cpu')\n"
        "y, h = m(torch.randn(5, 3, 4))\n"
        "(y.sum() + h.sum()).backward()\n"
        "assert torch.get_num_threads() == n\n"
        "print(numba.threading_layer())\n")
    assert r.returncode == 0, r.stderr
    if not any(k.startswith("NUMBA_THREADING_LAYER") for k in os.environ):
        assert r.stdout.strip() == ("omp" if importlib.util.find_spec("numba.np.ufunc.omppool")
                                    else "workqueue")


@pytest.mark.gpu
def test_cuda_runs_on_torchs_current_stream():
    fast, ref = pair(3, torch.float32, "cuda", batch_first=True)
    x = torch.randn(B, T, I, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        y, h_n = fast(x)
        y.sum().backward()
    torch.cuda.synchronize()
    y_r, h_r = ref(x.double())
    compare("output", y_r, y, KERNEL_F32_FORWARD)
    compare("h_n", h_r, h_n, KERNEL_F32_FORWARD)
    assert fast.weight_hh_l2.grad is not None


def test_drop_in_example_curves_match():
    """examples/torch_drop_in.py: both runs print the same losses (reference backend: no JIT)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "torch_drop_in.py"
    r = subprocess.run([sys.executable, str(script), "--synthetic", "--steps", "4",
                        "--print-every", "1", "--batch-size", "16", "--backend", "reference"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.split()[0].isdigit()]
    assert len(rows) == 4
    for _, loss_torch, loss_fast, diff in rows:
        assert abs(float(loss_torch) - float(loss_fast)) < 1e-5 and float(diff) < 1e-5
    assert "speedup of fastrnn.torch.RNN over nn.RNN" in r.stdout

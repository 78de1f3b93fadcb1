"""The TF1-style API (fastrnn.cells) against the reference: dynamic_rnn/static_rnn forward and the
tape's backward, with lengths, time_major and initial_state; MultiRNNCell with separate and shared
weights (shared gradients also against central finite differences); invalid arguments."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from fastrnn import reference as ref
from fastrnn.cells import (
    BasicRNNCell,
    Gradients,
    MultiRNNCell,
    RNNTape,
    bidirectional_dynamic_rnn,
    dynamic_rnn,
    keras_init,
    static_rnn,
)
from fastrnn.params import ModelSpec, init_params, views
from tests.conftest import BACKENDS
from tests.gradcheck import numeric_grad
from tests.tolerances import (
    FINITE_DIFF,
    KERNEL_F32_BACKWARD,
    KERNEL_F32_FORWARD,
    KERNEL_F64,
    assert_close,
)


def precision(backend):
    """(dtype, forward tol, backward tol): the cuda backend computes in float32 only."""
    if backend == "cuda":
        return "float32", KERNEL_F32_FORWARD, KERNEL_F32_BACKWARD
    return "float64", KERNEL_F64, KERNEL_F64


def dev(a, backend):
    """``a`` on the backend's device (CuPy for cuda) in the backend's dtype."""
    if a is None:
        return a
    a = a.astype(precision(backend)[0])
    if backend != "cuda":
        return a
    import cupy

    return cupy.asarray(a)


def host(a):
    """A float64 NumPy copy."""
    return (a.get() if hasattr(a, "get") else np.asarray(a)).astype(np.float64)


def rounded(backend, *arrays):
    """Arrays rounded to the backend's dtype, back in float64 (the reference's exact inputs)."""
    dt = precision(backend)[0]
    return [None if a is None else a.astype(dt).astype(np.float64) for a in arrays]


def rand(rng, *shape):
    return rng.standard_normal(shape)


def case(time_major, with_lengths, with_h0, B=3, T=5, I=4, Hs=(6,), seed=0):
    """Random float64 inputs, lengths (incl. 0 and T), initial states, upstream gradients."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *((T, B, I) if time_major else (B, T, I)))
    lengths = np.array([T, 0, 2][:B] + [1] * max(0, B - 3)) if with_lengths else None
    h0s = [rand(rng, B, H) for H in Hs] if with_h0 else None
    dy = rand(rng, *((T, B, Hs[-1]) if time_major else (B, T, Hs[-1])))
    dhs = [rand(rng, B, H) for H in Hs]
    return x, lengths, h0s, dy, dhs


def check_grads(name, g_ref, g, tol):
    for n, a, b in zip(("w_ih", "w_hh", "b"), g_ref, (g["w_ih"], g["w_hh"], g["b"])):
        assert_close(f"{name}.{n}", a, host(b), tol)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_dynamic_rnn_one_cell_matches_reference(backend, time_major, with_lengths, with_h0,
                                                activation):
    x, lengths, h0s, dy, dhs = case(time_major, with_lengths, with_h0)
    dt, fwd, bwd = precision(backend)
    cell = BasicRNNCell(6, seed=1, dtype=dt, activation=activation)
    h0 = None if h0s is None else h0s[0]
    x, h0, dy, dh = rounded(backend, x, h0, dy, dhs[0])
    out, state, tape = dynamic_rnn(cell, dev(x, backend), lengths, dev(h0, backend), time_major,
                                   return_tape=True, backend=backend)
    w_ih, w_hh, b = (host(a) for a in cell.get_weights())
    y_ref, h_ref = ref.rnn_forward(x, h0, w_ih, w_hh, b, lengths, time_major, activation)
    assert_close("outputs", y_ref, host(out), fwd)
    assert_close("state", h_ref, host(state), fwd)
    g = tape.backward(dev(dy, backend), dev(dh, backend))
    dx, dh0, *dw = ref.rnn_backward(dy, dh, x, h0, w_ih, w_hh, y_ref, lengths, time_major,
                                    activation)
    assert_close("d_inputs", dx, host(g.inputs), bwd)
    assert_close("d_initial_state", dh0, host(g.initial_state), bwd)
    check_grads("cell", dw, g.weights[cell], bwd)
    check_grads("cell.grads", dw, cell.grads, bwd)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("time_major", [False, True])
def test_multi_rnn_cell_separate_weights_matches_stack_reference(backend, time_major):
    Hs = (5, 3, 6)  # different sizes per layer, as TF allows
    x, lengths, h0s, dy, dhs = case(time_major, True, True, Hs=Hs)
    dt, fwd, bwd = precision(backend)
    x, dy, *h0s = rounded(backend, x, dy, *h0s)
    dhs = rounded(backend, *dhs)
    cells = [BasicRNNCell(H, seed=k, dtype=dt) for k, H in enumerate(Hs)]
    multi = MultiRNNCell(cells)
    h0s[1] = None  # None entries mean zeros
    out, state, tape = dynamic_rnn(multi, dev(x, backend), lengths,
                                   tuple(dev(h, backend) for h in h0s), time_major,
                                   return_tape=True, backend=backend)
    layers = [tuple(host(a) for a in c.get_weights()) for c in cells]
    h0_ref = [np.zeros((x.shape[1 if time_major else 0], H)) if h is None else h
              for h, H in zip(h0s, Hs)]
    ys, hs = [], []
    inp = x
    for (w_ih, w_hh, b), h0 in zip(layers, h0_ref):  # stack_forward, with per-layer H
        y, h = ref.rnn_forward(inp, h0, w_ih, w_hh, b, lengths, time_major)
        ys.append(y)
        hs.append(h)
        inp = y
    assert_close("outputs", ys[-1], host(out), fwd)
    assert isinstance(state, tuple) and len(state) == 3
    for k in range(3):
        assert_close(f"state[{k}]", hs[k], host(state[k]), fwd)
    g = tape.backward(dev(dy, backend), [dev(d, backend) for d in dhs])
    d_out = dy
    for k in reversed(range(3)):
        w_ih, w_hh, _ = layers[k]
        inp = x if k == 0 else ys[k - 1]
        d_out, dh0, *dw = ref.rnn_backward(d_out, dhs[k], inp, h0_ref[k], w_ih, w_hh, ys[k],
                                           lengths, time_major)
        assert_close(f"d_initial_state[{k}]", dh0, host(g.initial_state[k]), bwd)
        check_grads(f"cells[{k}]", dw, g.weights[cells[k]], bwd)
    assert_close("d_inputs", d_out, host(g.inputs), bwd)


def test_multi_rnn_cell_shared_weights_match_stack_reference_summed():
    x, lengths, h0s, dy, dhs = case(False, True, True, I=4, Hs=(4, 4, 4))
    cell = BasicRNNCell(4, seed=3, dtype="float64")
    out, state, tape = dynamic_rnn(MultiRNNCell([cell] * 3), x, lengths, tuple(h0s),
                                   return_tape=True, backend="reference")
    lay = cell.get_weights()
    ys, h_n = ref.stack_forward(x, np.stack(h0s), [lay] * 3, lengths)
    assert_close("outputs", ys[-1], out, KERNEL_F64)
    assert_close("state", h_n, np.stack(state), KERNEL_F64)
    g = tape.backward(dy, tuple(dhs))
    dx, dh0, grads = ref.stack_backward(dy, np.stack(dhs), x, np.stack(h0s), [lay] * 3, ys,
                                        lengths)
    assert list(g.weights) == [cell]
    check_grads("shared", [sum(gr[i] for gr in grads) for i in range(3)], g.weights[cell],
                KERNEL_F64)
    assert_close("d_inputs", dx, g.inputs, KERNEL_F64)
    assert_close("d_initial_state", dh0, np.stack(g.initial_state), KERNEL_F64)


@pytest.mark.parametrize("pattern", ["aaa", "abb", "aba"])
def test_shared_weight_gradients_match_finite_differences(pattern):
    """loss = <R, outputs> + sum_k <S_k, state_k>; every distinct cell's w_ih, w_hh, b."""
    B, T, H = 2, 3, 3
    rng = np.random.default_rng(7)
    x = rand(rng, B, T, H)
    lengths = np.array([3, 2])
    objs = {c: BasicRNNCell(H, seed=i, dtype="float64") for i, c in enumerate("ab")}
    multi = MultiRNNCell([objs[c] for c in pattern])
    R, S = rand(rng, B, T, H), [rand(rng, B, H) for _ in pattern]

    def loss():
        out, state = dynamic_rnn(multi, x, lengths, backend="reference")
        return np.sum(R * out) + sum(np.sum(s * h) for s, h in zip(S, state))

    _, _, tape = dynamic_rnn(multi, x, lengths, return_tape=True, backend="reference")
    g = tape.backward(R, S)
    assert len(g.weights) == len(set(pattern))
    for cell, grads in g.weights.items():
        for name in ("w_ih", "w_hh", "b"):
            fd = numeric_grad(loss, getattr(cell, name))
            assert_close(f"{pattern}:{name}", fd, grads[name], FINITE_DIFF)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_static_rnn_matches_dynamic_rnn_time_major(with_lengths):
    x, lengths, h0s, dy, dhs = case(True, with_lengths, True, Hs=(6, 6))
    multi = MultiRNNCell([BasicRNNCell(6, seed=0, dtype="float64"),
                          BasicRNNCell(6, seed=1, dtype="float64")])
    out_d, state_d, tape_d = dynamic_rnn(multi, x, lengths, tuple(h0s), time_major=True,
                                         return_tape=True, backend="reference")
    out_s, state_s, tape_s = static_rnn(multi, list(x), tuple(h0s), lengths, return_tape=True,
                                        backend="reference")
    assert isinstance(out_s, list) and len(out_s) == x.shape[0]
    np.testing.assert_array_equal(np.stack(out_s), out_d)
    for a, b in zip(state_s, state_d):
        np.testing.assert_array_equal(a, b)
    g_d, g_s = tape_d.backward(dy, dhs), tape_s.backward(list(dy), dhs)
    assert isinstance(g_s.inputs, list) and len(g_s.inputs) == x.shape[0]
    np.testing.assert_array_equal(np.stack(g_s.inputs), g_d.inputs)
    for c in multi.cells:
        for n in ("w_ih", "w_hh", "b"):
            np.testing.assert_array_equal(g_s.weights[c][n], g_d.weights[c][n])
    out_n, _ = static_rnn(multi, list(x), sequence_length=lengths, backend="reference")
    assert len(out_n) == len(out_s)


def test_grads_accumulate_over_calls_and_zero_grad_resets():
    x, _, _, dy, dhs = case(False, False, False)
    cell = BasicRNNCell(6, seed=0, dtype="float64")
    _, _, tape = dynamic_rnn(cell, x, return_tape=True, backend="reference")
    g1 = tape.backward(dy, None)
    assert isinstance(tape, RNNTape) and isinstance(g1, Gradients)
    np.testing.assert_array_equal(cell.grads["w_hh"], g1.weights[cell]["w_hh"])
    tape.backward(dy, None)
    np.testing.assert_allclose(cell.grads["w_hh"], 2 * g1.weights[cell]["w_hh"], rtol=1e-15)
    cell.zero_grad()
    assert cell.grads == {}
    g0 = tape.backward()  # no upstream gradient at all: zeros
    assert not np.any(g0.weights[cell]["w_ih"]) and not np.any(g0.inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("static", [False, True])
def test_backward_after_in_place_writes_is_still_the_forwards(backend, static):
    """The docstring's SGD step on the weights, then writes into inputs, initial_state,
    sequence_length and outputs: a second backward gives bitwise the first one's gradients.
    A shared cell ([shared, shared, top]) still gets the sum over its layers."""
    x, lengths, h0s, dy, dhs = case(True, True, True, I=4, Hs=(4, 4, 5))
    dt = precision(backend)[0]
    shared, top = BasicRNNCell(4, seed=0, dtype=dt), BasicRNNCell(5, seed=1, dtype=dt)
    multi = MultiRNNCell([shared, shared, top])
    x, dy = dev(x, backend), dev(dy, backend)
    h0s, dhs = [dev(h, backend) for h in h0s], [dev(d, backend) for d in dhs]
    lens = lengths.astype(np.int32)  # int32: sequence_length is then used as given, not copied
    if backend == "cuda":
        import cupy

        lens = cupy.asarray(lens)
    if static:
        out, _, tape = static_rnn(multi, list(x), tuple(h0s), lens, return_tape=True,
                                  backend=backend)
        d_out = list(dy)
    else:
        out, _, tape = dynamic_rnn(multi, x, lens, tuple(h0s), time_major=True,
                                   return_tape=True, backend=backend)
        d_out = dy
    g1 = tape.backward(d_out, dhs)
    assert set(g1.weights) == {shared, top}
    for c in multi.unique_cells():
        for name, grad in c.grads.items():
            getattr(c, name)[...] -= 0.1 * grad
    x[...] = 7
    for h in h0s:
        h[...] = 3
    lens[...] = 1
    for o in out if static else [out]:
        o[...] = 0.5
    g2 = tape.backward(d_out, dhs)
    for t, (a, b) in enumerate(zip(g1.inputs if static else [g1.inputs],
                                   g2.inputs if static else [g2.inputs])):
        np.testing.assert_array_equal(host(a), host(b), err_msg=f"inputs[{t}]")
    for k in range(3):
        np.testing.assert_array_equal(host(g1.initial_state[k]), host(g2.initial_state[k]),
                                      err_msg=f"initial_state[{k}]")
    for c in (shared, top):
        for name in ("w_ih", "w_hh", "b"):
            np.testing.assert_array_equal(host(g1.weights[c][name]), host(g2.weights[c][name]),
                                          err_msg=f"{c!r}.{name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_bidirectional_dynamic_rnn_matches_the_reference(backend, time_major, with_lengths):
    """TF1's bidirectional_dynamic_rnn: the reverse direction over each sequence's valid steps
    (lengths T, 0, 2), outputs in time order, both states; the tape's gradients against
    ``reference.bidirectional_backward``. The reverse cell is relu, to tell the two apart."""
    x, lengths, h0s, dy, dhs = case(time_major, with_lengths, True, Hs=(6, 6))
    dt, fwd, bwd = precision(backend)
    fw, bw = BasicRNNCell(6, seed=1, dtype=dt), BasicRNNCell(6, seed=2, dtype=dt,
                                                               activation="relu")
    x, h_fw, h_bw, dy, d_fw, d_bw = rounded(backend, x, h0s[0], h0s[1], dy, dhs[0], dhs[1])
    (o_fw, o_bw), (s_fw, s_bw), tape = bidirectional_dynamic_rnn(
        fw, bw, dev(x, backend), lengths, dev(h_fw, backend), dev(h_bw, backend), time_major,
        return_tape=True, backend=backend)
    w_fw = tuple(host(a) for a in fw.get_weights())
    w_bw = tuple(host(a) for a in bw.get_weights())
    # the reference runs one nonlinearity per call: each direction on its own
    y_f, h_f = ref.rnn_forward(x, h_fw, *w_fw, lengths, time_major)
    rev = lambda a: ref.reverse_sequence(a, lengths, time_major)  # noqa: E731
    y_r, h_b = ref.rnn_forward(rev(x), h_bw, *w_bw, lengths, time_major, "relu")
    for name, want, got in (("output_fw", y_f, o_fw), ("output_bw", rev(y_r), o_bw),
                            ("state_fw", h_f, s_fw), ("state_bw", h_b, s_bw)):
        assert_close(name, want, host(got), fwd)
    g = tape.backward((dev(dy, backend), dev(dy, backend)), (dev(d_fw, backend),
                                                            dev(d_bw, backend)))
    dx_f, dh0_f, *dw_f = ref.rnn_backward(dy, d_fw, x, h_fw, *w_fw[:2], y_f, lengths, time_major)
    dx_r, dh0_b, *dw_b = ref.rnn_backward(rev(dy), d_bw, rev(x), h_bw, *w_bw[:2], y_r, lengths,
                                          time_major, "relu")
    assert_close("d_inputs", dx_f + rev(dx_r), host(g.inputs), bwd)
    assert_close("d_initial_state_fw", dh0_f, host(g.initial_state[0]), bwd)
    assert_close("d_initial_state_bw", dh0_b, host(g.initial_state[1]), bwd)
    check_grads("cell_fw", dw_f, g.weights[fw], bwd)
    check_grads("cell_bw", dw_b, g.weights[bw], bwd)


def test_relu_cell_step_is_the_reference_step():
    """``activation="relu"`` in a cell's one-step call (the streaming fast path, and the full
    checks with a backend), against the reference."""
    cell = BasicRNNCell(7, seed=2, dtype="float64", activation="relu")
    x = np.random.default_rng(3).standard_normal((2, 5))
    h, _ = cell(x, None)
    w_ih, w_hh, b = cell.get_weights()
    want = ref.rnn_forward(x[:, None], None, w_ih, w_hh, b, nonlinearity="relu")[1]
    assert_close("relu step", want, h, KERNEL_F64)
    assert_close("relu step (reference backend)", want, cell(x, None, backend="reference")[0],
                 KERNEL_F64)
    assert (h >= 0).all() and (h == 0).any()
    assert "activation='relu'" in repr(cell)


def test_one_step_call_and_zero_state():
    rng = np.random.default_rng(0)
    cell = BasicRNNCell(5, seed=0, dtype="float64")
    x, h = rand(rng, 3, 4), rand(rng, 3, 5)
    out, new = cell(x, h, backend="reference")
    y_ref, _ = dynamic_rnn(cell, x[:, None], initial_state=h, backend="reference")
    np.testing.assert_array_equal(out, y_ref[:, 0])
    np.testing.assert_array_equal(out, new)
    assert cell.zero_state(3).shape == (3, 5) and cell.zero_state(3).dtype == np.float64
    multi = MultiRNNCell([cell, BasicRNNCell(2, dtype="float64")])
    assert [z.shape for z in multi.zero_state(3)] == [(3, 5), (3, 2)]
    assert multi.state_size == (5, 2) and multi.output_size == 2


def test_init_is_params_init_for_one_layer():
    cell = BasicRNNCell(7, seed=5)
    cell.build(3)
    spec = ModelSpec(3, 7, 1, 1)
    v = views(init_params(spec, 5), spec)
    np.testing.assert_array_equal(cell.w_ih, v["w_ih_l0"])
    np.testing.assert_array_equal(cell.w_hh, v["w_hh_l0"])
    assert cell.w_ih.dtype == np.float32 and not np.any(cell.b)
    w_hh = keras_init(3, 7, 5, "float64")[1]
    np.testing.assert_allclose(w_hh @ w_hh.T, np.eye(7), atol=1e-12)


def test_set_weights_copies_into_the_cell_dtype():
    cell = BasicRNNCell(2)
    w_ih, w_hh, b = np.ones((2, 3)), np.eye(2), np.zeros(2)
    cell.set_weights(w_ih, w_hh, b)
    assert cell.input_size == 3 and cell.w_hh.dtype == np.float32
    w_ih[0, 0] = 5
    assert cell.w_ih[0, 0] == 1


def test_module_docstring_example_runs():
    import fastrnn.cells

    assert doctest.testmod(fastrnn.cells).failed == 0


def _x(B=2, T=3, I=4, dtype=np.float32):
    return np.zeros((B, T, I), dtype)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: dynamic_rnn(MultiRNNCell([BasicRNNCell(5)] * 2), _x()), ValueError,
     r"shared cell to see one input size.*layers 0 \(input size 4\) and 1 \(input size 5\)"),
    (lambda: MultiRNNCell([BasicRNNCell(5), *[BasicRNNCell(3)] * 2]), ValueError,
     "shared cell to see one input size"),
    (lambda: dynamic_rnn(BasicRNNCell(4), _x(dtype=np.float64)), TypeError,
     "inputs: expected dtype float32 .the cell's dtype., got float64"),
    (lambda: dynamic_rnn(BasicRNNCell(4), np.zeros((2, 3), np.float32)), ValueError,
     "inputs: expected 3 dimensions"),
    (lambda: dynamic_rnn(BasicRNNCell(4), _x(T=0)), ValueError,
     r"inputs: expected shape \[B,T,I\] with T >= 1"),
    (lambda: dynamic_rnn("cell", _x()), TypeError, "cell: expected a BasicRNNCell"),
    (lambda: dynamic_rnn(BasicRNNCell(4), _x(), sequence_length=[1, 4]), ValueError,
     r"sequence_length: expected values in \[0, T\] = \[0, 3\]"),
    (lambda: dynamic_rnn(BasicRNNCell(4), _x(), sequence_length=[1.0, 2.0]), TypeError,
     "sequence_length: expected integers"),
    (lambda: dynamic_rnn(BasicRNNCell(4), _x(), initial_state=np.zeros((2, 5), np.float32)),
     ValueError, r"initial_state: expected shape \[B,H\] = \(2, 4\)"),
    (lambda: dynamic_rnn(MultiRNNCell([BasicRNNCell(4)] * 2), _x(),
                         initial_state=np.zeros((2, 4), np.float32)), ValueError,
     "initial_state: expected a tuple of 2 arrays"),
    (lambda: dynamic_rnn(BasicRNNCell(4), _x(), time_major=1), TypeError,
     "time_major: expected a bool"),
    (lambda: static_rnn(BasicRNNCell(4), []), TypeError, "inputs: expected a non-empty list"),
    (lambda: static_rnn(BasicRNNCell(4), [np.zeros((2, 3), np.float32),
                                          np.zeros((2, 4), np.float32)]), ValueError,
     r"inputs\[1\]: expected shape \[B,N\] like inputs\[0\] = \(2, 3\)"),
    (lambda: MultiRNNCell([]), TypeError, "cells: expected a non-empty list of BasicRNNCell"),
    (lambda: MultiRNNCell(BasicRNNCell(2)), TypeError, "cells: expected a non-empty list"),
    (lambda: MultiRNNCell([BasicRNNCell(2), "x"]), TypeError, r"cells\[1\]: expected a Basic"),
    (lambda: MultiRNNCell([BasicRNNCell(2), BasicRNNCell(2, dtype="float64")]), ValueError,
     "cells: expected cells of one dtype"),
    (lambda: BasicRNNCell(0), ValueError, "num_units: expected a positive int"),
    (lambda: BasicRNNCell(3, dtype="float16"), ValueError, "dtype: expected 'float32' or"),
    (lambda: BasicRNNCell(3, seed=-1), ValueError, "seed: expected an int >= 0 or None"),
    (lambda: BasicRNNCell(3).get_weights(), ValueError, "weights: expected a built cell"),
    (lambda: BasicRNNCell(3).set_weights(np.zeros((2, 2)), np.zeros((3, 3)), np.zeros(3)),
     ValueError, r"w_ih: expected shape \[H,I\] with H = num_units = 3"),
])
def test_invalid_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_a_built_cell_refuses_another_input_size():
    cell = BasicRNNCell(4)
    dynamic_rnn(cell, _x(I=3), backend="reference")
    with pytest.raises(ValueError, match="inputs: expected input size 3 .this cell's weights"):
        dynamic_rnn(cell, _x(I=5), backend="reference")


def test_tape_backward_checks_d_state_and_d_outputs():
    """Errors name backward's own arguments (d_outputs, d_state and its elements)."""
    multi = MultiRNNCell([BasicRNNCell(4), BasicRNNCell(3)])
    _, _, tape = dynamic_rnn(multi, _x(), return_tape=True, backend="reference")
    with pytest.raises(ValueError, match="^d_state: expected a tuple of 2 arrays"):
        tape.backward(None, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"^d_outputs: expected shape \[B,T,H\] = \(2, 3, 3\)"):
        tape.backward(np.zeros((2, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"^d_state\[1\]: expected shape \[B,H_k\] = \(2, 3\)"):
        tape.backward(None, (None, np.zeros((2, 4), np.float32)))
    with pytest.raises(TypeError, match=r"^d_state\[0\]: expected dtype float32"):
        tape.backward(None, (np.zeros((2, 4)), None))
    _, _, tape = dynamic_rnn(BasicRNNCell(4), _x(), time_major=True, return_tape=True,
                             backend="reference")
    with pytest.raises(ValueError, match=r"^d_state: expected shape \[B,H\] = \(3, 4\)"):
        tape.backward(None, np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="^d_outputs: expected dtype float32"):
        tape.backward(np.zeros((2, 3, 4)))
    _, _, tape = static_rnn(BasicRNNCell(4), list(_x(T=3)), return_tape=True, backend="reference")
    with pytest.raises(ValueError, match="^d_outputs: expected a list of T = 2 arrays"):
        tape.backward([np.zeros((3, 4), np.float32)])
    with pytest.raises(ValueError, match=r"^d_outputs\[0\]: expected shape \[B,H\] = \(3, 4\)"):
        tape.backward([np.zeros((3, 5), np.float32)] * 2)


@pytest.mark.parametrize("inputs, state, exc, match", [
    (np.zeros((2, 3), np.float32), np.zeros((2, 5), np.float32), ValueError,
     r"^state: expected shape \[B,H\] = \(2, 4\), got shape \(2, 5\)"),
    (np.zeros((2, 3), np.float32), np.zeros((2, 4)), TypeError,
     "^state: expected dtype float32 .the cell's dtype., got float64"),
    (np.zeros((2, 3), np.float32), np.zeros(4, np.float32), ValueError,
     "^state: expected 2 dimensions"),
    (np.zeros((2, 3), np.float32), "zeros", TypeError, "^state: expected a numpy array"),
    (np.zeros((0, 3), np.float32), None, ValueError,
     r"^inputs: expected shape \[B,I\] with B >= 1 and I >= 1, got shape \(0, 3\)"),
    (np.zeros((2, 0), np.float32), None, ValueError,
     r"^inputs: expected shape \[B,I\] with B >= 1 and I >= 1, got shape \(2, 0\)"),
])
def test_cell_call_errors_name_its_arguments(inputs, state, exc, match):
    with pytest.raises(exc, match=match):
        BasicRNNCell(4)(inputs, state, backend="reference")

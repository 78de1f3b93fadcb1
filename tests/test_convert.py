"""Weight conversion: nn.RNN state dicts and TF1 BasicRNNCell variables to and from fastrnn layers,
checked by round trips and by running the converted weights through each framework's math."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from fastrnn import convert
from fastrnn import reference as ref
from fastrnn.cells import BasicRNNCell, MultiRNNCell, dynamic_rnn
from tests.tolerances import KERNEL_F64, assert_close

I, Hs = 5, (4, 4, 3)


def layers(seed=0, sizes=Hs, dtype=np.float64, inputs=I):
    rng = np.random.default_rng(seed)
    out, i = [], inputs
    for H in sizes:
        out.append(tuple(rng.standard_normal(s).astype(dtype) for s in ((H, i), (H, H), (H,))))
        i = H
    return out


def assert_layers_equal(a, b):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        for x, y in zip(la, lb):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)


def test_docstring_example():
    assert doctest.testmod(convert).failed == 0


def test_torch_round_trip_and_names():
    lys = layers()
    sd = convert.to_torch(lys)
    assert list(sd) == [f"{n}_l{k}" for k in range(3)
                        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert not np.any(sd["bias_hh_l1"])
    assert_layers_equal(convert.from_torch(sd), lys)
    model = {f"rnn.{k}": v for k, v in sd.items()} | {"fc.weight": np.zeros((2, 3))}
    assert_layers_equal(convert.from_torch(model, prefix="rnn."), lys)


def test_from_torch_sums_the_two_biases_and_accepts_no_bias():
    w = layers(sizes=(4,))[0]
    sd = {"weight_ih_l0": w[0], "weight_hh_l0": w[1], "bias_ih_l0": w[2], "bias_hh_l0": w[2] * 2}
    np.testing.assert_array_equal(convert.from_torch(sd)[0][2], 3 * w[2])
    no_bias = convert.from_torch({"weight_ih_l0": w[0], "weight_hh_l0": w[1]})
    assert not np.any(no_bias[0][2]) and no_bias[0][2].shape == (4,)
    sd = convert.to_torch([(w[0], w[1], np.zeros(4))], bias=False)
    assert sorted(sd) == ["weight_hh_l0", "weight_ih_l0"]


def bidirectional_layers(seed=0, H=4, L=2):
    """2L entries: layer k's forward and reverse directions (inputs I, then 2H)."""
    rng = np.random.default_rng(seed)
    return [tuple(rng.standard_normal(s) for s in ((H, I if k < 2 else 2 * H), (H, H), (H,)))
            for k in range(2 * L)]


def test_bidirectional_torch_round_trip_and_nn_rnn():
    """``_reverse`` names in nn.RNN's order both ways, and nn.RNN(bidirectional=True) runs the
    converted weights as the reference does."""
    lys = bidirectional_layers()
    sd = convert.to_torch(lys, bidirectional=True)
    assert list(sd) == [f"{n}_l{k}{sfx}" for k in range(2) for sfx in ("", "_reverse")
                        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert_layers_equal(convert.from_torch(sd), lys)
    torch = pytest.importorskip("torch")
    rnn = torch.nn.RNN(I, 4, 2, batch_first=True, bidirectional=True).double()
    rnn.load_state_dict(convert.to_torch(lys, as_tensors=True, bidirectional=True))
    x = np.random.default_rng(1).standard_normal((3, 6, I))
    y, h_n = rnn(torch.from_numpy(x))
    ys, h_ref = ref.stack_forward(x, None, lys, bidirectional=True)
    assert_close("output", ys[-1], y.detach().numpy(), KERNEL_F64)
    assert_close("h_n", h_ref, h_n.detach().numpy(), KERNEL_F64)
    assert_layers_equal(convert.from_torch(rnn.state_dict()), convert.from_torch(sd))


def test_nn_rnn_runs_converted_weights_like_the_reference():
    torch = pytest.importorskip("torch")
    lys = layers(sizes=(4, 4))
    rnn = torch.nn.RNN(I, 4, 2, batch_first=True).double()
    rnn.load_state_dict(convert.to_torch(lys, as_tensors=True))
    x = np.random.default_rng(1).standard_normal((3, 6, I))
    y, h_n = rnn(torch.from_numpy(x))
    ys, h_ref = ref.stack_forward(x, None, lys)
    assert_close("output", ys[-1], y.detach().numpy(), KERNEL_F64)
    assert_close("h_n", h_ref, h_n.detach().numpy(), KERNEL_F64)
    trained = torch.nn.RNN(I, 4, 2).double()  # tensors (with grad) in, b_ih + b_hh out
    back = convert.from_torch(trained.state_dict())
    np.testing.assert_array_equal(back[1][2], (trained.bias_ih_l1 + trained.bias_hh_l1).detach())


def test_tf_kernel_layout_is_x_rows_then_h_rows():
    w_ih, w_hh, b = layers(sizes=(4,))[0]
    kernel = convert.tf_kernel(w_ih, w_hh)
    assert kernel.shape == (I + 4, 4)
    rng = np.random.default_rng(2)
    x, h = rng.standard_normal((3, I)), rng.standard_normal((3, 4))
    tf_step = np.tanh(np.concatenate([x, h], axis=1) @ kernel + b)  # BasicRNNCell.call
    _, h_ref = ref.rnn_forward(x[:, None], h, w_ih, w_hh, b)
    assert_close("tf step", h_ref, tf_step, KERNEL_F64)
    for a, c in zip(convert.split_tf_kernel(kernel), (w_ih, w_hh)):
        np.testing.assert_array_equal(a, c)
        assert a.flags.c_contiguous


def test_tf_round_trip_names_and_order():
    lys = layers()
    tf_vars = convert.to_tf(lys, scope="enc")
    assert sorted(tf_vars) == sorted(f"enc/multi_rnn_cell/cell_{k}/basic_rnn_cell/{n}"
                                     for k in range(3) for n in ("kernel", "bias"))
    shuffled = {k + ":0": tf_vars[k] for k in sorted(tf_vars, reverse=True)}
    assert_layers_equal(convert.from_tf(shuffled), lys)
    one = convert.to_tf(lys[:1])
    assert sorted(one) == ["rnn/basic_rnn_cell/bias", "rnn/basic_rnn_cell/kernel"]
    assert_layers_equal(convert.from_tf(one), lys[:1])


def test_tf_variables_into_cells_reproduce_tf_math():
    lys = layers(sizes=(4, 4), dtype=np.float32)
    tf_vars = convert.to_tf(lys)
    cells = [BasicRNNCell(4) for _ in lys]
    for c, lay in zip(cells, convert.from_tf(tf_vars)):
        c.set_weights(*lay)
    x = np.random.default_rng(3).standard_normal((2, 5, I)).astype(np.float32)
    out, state = dynamic_rnn(MultiRNNCell(cells), x, backend="reference")
    h = [np.zeros((2, 4), np.float32) for _ in lys]
    for t in range(5):  # TF1's MultiRNNCell of BasicRNNCells, written out
        inp = x[:, t]
        for k in range(2):
            name = f"rnn/multi_rnn_cell/cell_{k}/basic_rnn_cell"
            h[k] = np.tanh(np.concatenate([inp, h[k]], 1) @ tf_vars[f"{name}/kernel"]
                           + tf_vars[f"{name}/bias"])
            inp = h[k]
    assert_close("outputs[:, -1]", inp, out[:, -1], 1e-6)
    assert_close("state[0]", h[0], state[0], 1e-6)


def test_tf_layer_order_reads_the_cell_component_not_a_scope_that_ends_in_cell_k():
    lys = layers()
    tf_vars = convert.to_tf(lys, scope="decoder_cell_1")  # not cell 1 of anything
    shuffled = {k: tf_vars[k] for k in sorted(tf_vars, reverse=True)}
    assert_layers_equal(convert.from_tf(shuffled), lys)


def test_tf_cells_given_a_name_of_their_own_are_read():
    """``BasicRNNCell(31, name="my_cell")`` in a MultiRNNCell: ``cell_{k}/my_cell/kernel``."""
    lys = layers()
    tf_vars = {k.replace("/basic_rnn_cell/", "/my_cell/"): v
               for k, v in convert.to_tf(lys).items()}
    assert_layers_equal(convert.from_tf(tf_vars), lys)


@pytest.mark.parametrize("sizes, i", [((1,), 1), ((1, 1), 1), ((1,), 3), ((3, 1), 1)])
def test_converters_return_new_arrays_even_for_size_one_dims(sizes, i):
    lys = layers(sizes=sizes, inputs=i)  # H = 1 or I = 1: a transpose is then contiguous
    inputs = [a for lay in lys for a in lay]
    sd, tf_vars = convert.to_torch(lys), convert.to_tf(lys)
    kernel = tf_vars[next(k for k in tf_vars if k.endswith("kernel"))]
    results = {
        "to_torch": list(sd.values()),
        "to_tf": list(tf_vars.values()),
        "tf_kernel": [convert.tf_kernel(*lys[0][:2])],
        "from_torch": [a for lay in convert.from_torch(sd) for a in lay],
        "from_tf": [a for lay in convert.from_tf(tf_vars) for a in lay],
        "split_tf_kernel": list(convert.split_tf_kernel(kernel)),
    }
    sources = {"to_torch": inputs, "to_tf": inputs, "tf_kernel": inputs,
               "from_torch": list(sd.values()), "from_tf": list(tf_vars.values()),
               "split_tf_kernel": [kernel]}
    for fn, outs in results.items():
        for out in outs:
            assert not any(np.shares_memory(out, a) for a in sources[fn]), fn


@pytest.mark.parametrize("call, exc, match", [
    (lambda: convert.from_torch({"weight_ih_l0_reverse": np.zeros((2, 2)),
                                 "weight_hh_l0_reverse": np.zeros((2, 2))}), ValueError,
     r"state_dict: expected both directions of layers 0..0, got layers \['l0_reverse'\]"),
    (lambda: convert.to_torch(layers(sizes=(4, 4, 4)), bidirectional=True), ValueError,
     "layers: expected an even number of entries"),
    (lambda: convert.to_torch(layers(sizes=(4, 4)), bidirectional=True), ValueError,
     r"layers\[1\]: expected the shapes of layers\[0\] \(one layer's two directions\)"),
    (lambda: convert.from_torch({"weight_hr_l0": np.zeros((2, 2))}), NotImplementedError,
     "proj_size"),
    (lambda: convert.from_torch({"fc.weight": np.zeros(2)}), ValueError,
     "state_dict: expected nn.RNN keys like weight_ih_l0"),
    (lambda: convert.from_torch({"weight_ih_l1": np.zeros((2, 2)),
                                 "weight_hh_l1": np.zeros((2, 2))}), ValueError,
     r"state_dict: expected layers 0..0, got layers \['l1'\]"),
    (lambda: convert.from_torch({"weight_ih_l0": np.zeros((2, 3))}), ValueError,
     "state_dict: expected weight_hh_l0"),
    (lambda: convert.from_torch({"weight_ih_l0": np.zeros((2, 3)), "weight_hh_l0": np.zeros((2, 2)),
                                 "bias_ih_l0": np.zeros(2)}), ValueError, "or neither"),
    (lambda: convert.to_torch([(np.zeros((2, 3)), np.zeros((2, 2)), np.ones(2))], bias=False),
     ValueError, "all zeros with bias=False"),
    (lambda: convert.to_torch([(np.zeros((2, 3)), np.zeros((3, 3)), np.zeros(3))]), ValueError,
     r"layers\[0\].w_ih: expected shape \[H,I\] with H = 3"),
    (lambda: convert.to_torch([*layers(sizes=(4,)), *layers(sizes=(3,))]), ValueError,
     r"layers\[1\].w_ih: expected input size 4"),
    (lambda: convert.to_torch([]), TypeError, "layers: expected a non-empty list"),
    (lambda: convert.to_torch([(np.zeros((2, 3), int),) * 3]), TypeError,
     "expected dtype float32 or float64"),
    (lambda: convert.split_tf_kernel(np.zeros((3, 3))), ValueError,
     r"kernel: expected shape \[I\+H, H\]"),
    (lambda: convert.from_tf({"a/kernel": np.zeros((5, 2))}), ValueError,
     "variables: expected both a/kernel and a/bias"),
    (lambda: convert.from_tf({f"{s}/{n}": np.zeros((5, 2) if n == "kernel" else 2)
                              for s in ("a", "b") for n in ("kernel", "bias")}), ValueError,
     r"MultiRNNCell scopes with cell_\{k\}"),
    (lambda: convert.from_tf({"w": np.zeros(2)}), ValueError, "names ending in /kernel"),
    # a missing or repeated cell, or two stacks in one dict: refused, not stacked as found
    (lambda: convert.from_tf({k: v for k, v in convert.to_tf(layers()).items()
                              if "cell_1" not in k}), ValueError,
     r"variables: expected cells 0\.\.1 \(MultiRNNCell's cell_\{k\}\), got cells \[0, 2\]"),
    (lambda: convert.from_tf(convert.to_tf(layers())
                             | {k.replace("cell_1", "cell_01"): v
                                for k, v in convert.to_tf(layers()).items() if "cell_1" in k}),
     ValueError, r"expected cells 0\.\.3 .*, got cells \[0, 1, 1, 2\]"),
    (lambda: convert.from_tf(convert.to_tf(layers(), scope="enc")
                             | convert.to_tf(layers(), scope="dec")), ValueError,
     r"variables: expected the cells of one MultiRNNCell \(a single scope\), got scopes "
     r"\['dec/multi_rnn_cell', 'enc/multi_rnn_cell'\]"),
    (lambda: convert.from_tf({"rnn/basic_rnn_cell/kernel": np.zeros((5, 2)),
                              "rnn/basic_rnn_cell/bias": np.zeros(2),
                              "rnn/basic_rnn_cell/bias:0": np.zeros(2)}), ValueError,
     "variables: expected one rnn/basic_rnn_cell/bias, got it twice"),
    (lambda: convert.from_tf({"simple_rnn/simple_rnn_cell/kernel:0": np.zeros((3, 2)),
                              "simple_rnn/simple_rnn_cell/recurrent_kernel:0": np.zeros((2, 2)),
                              "simple_rnn/simple_rnn_cell/bias:0": np.zeros(2)}), ValueError,
     r"variables: expected TF1 BasicRNNCell variables .*, got "
     r"simple_rnn/simple_rnn_cell/recurrent_kernel:0, Keras SimpleRNN's layout"),
    (lambda: convert.from_tf({0: np.zeros(2)}), TypeError, "variables: expected str keys"),
    (lambda: convert.from_tf([("rnn/basic_rnn_cell/kernel", np.zeros((3, 2)))]), TypeError,
     "variables: expected a mapping"),
    # from_torch: a bias that would broadcast, a dtype that would promote, a non-str key
    (lambda: convert.from_torch({"weight_ih_l0": np.zeros((4, 3)), "weight_hh_l0": np.zeros((4, 4)),
                                 "bias_ih_l0": np.zeros(4), "bias_hh_l0": np.ones(1)}), ValueError,
     r"bias_hh_l0: expected shape \[H\] = \(4,\), got shape \(1,\)"),
    (lambda: convert.from_torch({"weight_ih_l0": np.zeros((4, 3), np.float32),
                                 "weight_hh_l0": np.zeros((4, 4), np.float32),
                                 "bias_ih_l0": np.zeros(4, np.float32), "bias_hh_l0": np.zeros(4)}),
     TypeError, r"bias_hh_l0: expected dtype float32 \(the dtype of weight_hh_l0\), got float64"),
    (lambda: convert.from_torch({"rnn.weight_ih_l0": np.zeros((4, 3)),
                                 "rnn.weight_hh_l0": np.zeros((4, 3))}, prefix="rnn."), ValueError,
     r"rnn.weight_hh_l0: expected shape \[H,H\], got shape \(4, 3\)"),
    (lambda: convert.from_torch({0: np.zeros(2)}), TypeError,
     "state_dict: expected str keys .*, got int 0"),
    (lambda: convert.from_torch({"weight_ih_l0": np.zeros(2)}, prefix=None), TypeError,
     "prefix: expected a str, got None"),
    (lambda: convert.from_torch(None), TypeError, "state_dict: expected a mapping"),
    # tf_kernel checks its inputs as the layer converters do; one dtype per layer everywhere
    (lambda: convert.tf_kernel(np.zeros((2, 3)), np.zeros((2, 5))), ValueError,
     r"w_hh: expected shape \[H,H\], got shape \(2, 5\)"),
    (lambda: convert.tf_kernel(np.zeros((3, 3)), np.zeros((2, 2))), ValueError,
     r"w_ih: expected shape \[H,I\] with H = 2, got shape \(3, 3\)"),
    (lambda: convert.to_tf([(np.zeros((2, 3), np.float32), np.zeros((2, 2)), np.zeros(2))]),
     TypeError, r"layers\[0\]\.w_ih: expected dtype float64 \(the dtype of layers\[0\]\.w_hh\), "
     r"got float32"),
    (lambda: convert.to_torch([(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2, np.float32))]),
     TypeError, r"layers\[0\]\.b: expected dtype float64"),
    (lambda: convert.from_tf({"rnn/basic_rnn_cell/kernel": np.zeros((5, 2)),
                              "rnn/basic_rnn_cell/bias": np.zeros(2, np.float32)}),
     TypeError, r"rnn/basic_rnn_cell/bias: expected dtype float64 \(the dtype of "
     r"rnn/basic_rnn_cell/kernel\), got float32"),
])
def test_invalid_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()

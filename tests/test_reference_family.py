"""The reference's Elman family (issue 18): relu, bidirectional layers (TF's reverse_sequence
semantics), dropout between layers from a counter-based generator. Checked against central
finite differences in float64, against PyTorch's ``nn.RNN`` with the same options and weights
(forward and gradients, dropout off; with a given mask, layer by layer), and the generator
against Random123's known answers."""

from __future__ import annotations

import numpy as np
import pytest

from fastrnn import reference as ref
from tests.gradcheck import assert_layer_grads_match, numeric_grad
from tests.tolerances import FINITE_DIFF, assert_close


def stack_problem(rng, B, T, I, H, L, bidirectional, time_major):
    """float64 inputs of a stack; relu-safe: no pre-activation lands within ~1e-3 of 0 (the
    finite differences step 1e-6)."""
    D = 2 if bidirectional else 1
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I))
    h0 = rng.standard_normal((D * L, B, H)) * 0.5
    layers = [(rng.standard_normal((H, I if k < D else D * H)) * 0.5,
               rng.standard_normal((H, H)) * 0.4, rng.standard_normal(H) * 0.1)
              for k in range(D * L)]
    return x, h0, layers


OPTIONS = [("tanh", False), ("relu", False), ("tanh", True), ("relu", True)]


@pytest.mark.parametrize("dropout", [False, True], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("nonlinearity,bidirectional", OPTIONS, ids=lambda v: str(v))
def test_stack_gradients_match_finite_differences(nonlinearity, bidirectional, time_major,
                                                  dropout):
    """Three stacked layers, lengths 0, T and between, with and without dropout masks."""
    rng = np.random.default_rng(7)
    B, T, I, H, L = 3, 4, 2, 3, 3
    x, h0, layers = stack_problem(rng, B, T, I, H, L, bidirectional, time_major)
    lens = np.array([4, 0, 2])
    kw = {"nonlinearity": nonlinearity, "bidirectional": bidirectional}
    ys, h_n = ref.stack_forward(x, h0, layers, lens, time_major, **kw)
    masks = [ref.dropout_mask(5, 1, k, ys[k].shape, 0.3, np.float64, time_major)
             for k in range(L - 1)] if dropout else None
    ys, h_n = ref.stack_forward(x, h0, layers, lens, time_major, masks=masks, **kw)
    dy, dh_n = rng.standard_normal(ys[-1].shape), rng.standard_normal(h_n.shape)

    def objective():
        ys, h_n = ref.stack_forward(x, h0, layers, lens, time_major, masks=masks, **kw)
        return np.sum(ys[-1] * dy) + np.sum(h_n * dh_n)

    dx, dh0, grads = ref.stack_backward(dy, dh_n, x, h0, layers, ys, lens, time_major,
                                        masks=masks, **kw)
    assert_close("dx", numeric_grad(objective, x), dx, FINITE_DIFF)
    assert_close("dh0", numeric_grad(objective, h0), dh0, FINITE_DIFF)
    assert_layer_grads_match(objective, layers, grads)


@pytest.mark.parametrize("time_major", [False, True])
def test_reverse_direction_runs_over_the_valid_prefix_only(time_major):
    """The reverse direction starts at step lengths[b]-1: its outputs on a sequence's prefix do
    not depend on what lies past the length, its padding is zero, and its final state is the
    state after step 0; lengths 0 gives zeros and h0."""
    rng = np.random.default_rng(8)
    B, T, I, H = 3, 5, 2, 3
    x, h0, layers = stack_problem(rng, B, T, I, H, 1, True, time_major)
    lens = np.array([5, 2, 0])
    (y,), h_n = ref.stack_forward(x, h0, layers, lens, time_major, bidirectional=True)
    x2 = x.copy()
    past = (slice(2, None), 1) if time_major else (1, slice(2, None))
    x2[past] = 100.0  # beyond sequence 1's length
    (y2,), h_n2 = ref.stack_forward(x2, h0, layers, lens, time_major, bidirectional=True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(h_n, h_n2)
    yb = y.swapaxes(0, 1) if time_major else y
    assert np.all(yb[1, 2:] == 0) and np.all(yb[2] == 0)
    np.testing.assert_array_equal(h_n[1, 1], yb[1, 0, H:])  # reverse final state: after step 0
    np.testing.assert_array_equal(h_n[:, 2], h0[:, 2])
    np.testing.assert_array_equal(ref.reverse_sequence(ref.reverse_sequence(x, lens, time_major),
                                                       lens, time_major), x)


def test_philox_known_answers():
    """Random123's known-answer vectors for Philox-4x32-10 (kat_vectors)."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2,
              (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, want in cases:
        got = ref.philox4x32([[c] for c in counter], key)[:, 0]
        assert [int(v) for v in got] == list(want), [hex(v) for v in got]


def test_dropout_mask_is_keyed_scaled_and_layout_free():
    shape, p = (64, 50, 20), 0.25
    m = ref.dropout_mask(7, 3, 1, shape, p, np.float32)
    assert m.dtype == np.float32 and set(np.unique(m)) == {0, np.float32(1 / (1 - p))}
    assert abs((m == 0).mean() - p) < 0.01  # 64,000 draws: ~5 sigma
    np.testing.assert_array_equal(m, ref.dropout_mask(7, 3, 1, shape, p, np.float32))
    for other in ((8, 3, 1), (7, 4, 1), (7, 3, 2)):  # seed, step, layer each change the mask
        assert not np.array_equal(m, ref.dropout_mask(*other, shape, p, np.float32))
    tm = ref.dropout_mask(7, 3, 1, (50, 64, 20), p, np.float32, time_major=True)
    np.testing.assert_array_equal(tm, m.swapaxes(0, 1))  # the same mask in either layout
    assert np.all(ref.dropout_mask(7, 3, 1, shape, 0.0) == 1)
    assert ref.dropout_threshold(0.5) == 2**31 and ref.dropout_threshold(1 - 2**-40) == 2**32 - 1


# --- against PyTorch -----------------------------------------------------------------------------

def _torch_rnn(torch, layers, I, H, L, nonlinearity, bidirectional):
    """``nn.RNN`` (float64, batch_first) holding ``layers`` (b_ih = b, b_hh = 0)."""
    rnn = torch.nn.RNN(I, H, L, nonlinearity=nonlinearity, bidirectional=bidirectional,
                       batch_first=True).double()
    D = 2 if bidirectional else 1
    with torch.no_grad():
        for k in range(L):
            for d in range(D):
                sfx = f"l{k}" + ("_reverse" if d else "")
                w_ih, w_hh, b = layers[D * k + d]
                getattr(rnn, f"weight_ih_{sfx}").copy_(torch.from_numpy(w_ih))
                getattr(rnn, f"weight_hh_{sfx}").copy_(torch.from_numpy(w_hh))
                getattr(rnn, f"bias_ih_{sfx}").copy_(torch.from_numpy(b))
                getattr(rnn, f"bias_hh_{sfx}").zero_()
    return rnn


@pytest.mark.parametrize("lengths", [None, [5, 3, 1, 4]], ids=["full", "packed"])
@pytest.mark.parametrize("nonlinearity,bidirectional", OPTIONS, ids=lambda v: str(v))
def test_stack_matches_nn_rnn(nonlinearity, bidirectional, lengths):
    """Outputs, h_n and every gradient of a 2-layer stack against ``nn.RNN`` (packed sequences
    for ``lengths``: PyTorch's reverse direction also starts at each sequence's last step)."""
    torch = pytest.importorskip("torch", reason="no PyTorch (pip install -e '.[bench]')")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    rng = np.random.default_rng(9)
    B, T, I, H, L = 4, 5, 3, 4, 2
    x, h0, layers = stack_problem(rng, B, T, I, H, L, bidirectional, False)
    lens = None if lengths is None else np.array(lengths)
    kw = {"nonlinearity": nonlinearity, "bidirectional": bidirectional}
    ys, h_n = ref.stack_forward(x, h0, layers, lens, **kw)
    dy, dh_n = rng.standard_normal(ys[-1].shape), rng.standard_normal(h_n.shape)
    dx, dh0, grads = ref.stack_backward(dy, dh_n, x, h0, layers, ys, lens, **kw)

    rnn = _torch_rnn(torch, layers, I, H, L, nonlinearity, bidirectional)
    xt, h0t = torch.from_numpy(x).requires_grad_(), torch.from_numpy(h0).requires_grad_()
    if lens is None:
        yt, hnt = rnn(xt, h0t)
    else:
        packed = pack_padded_sequence(xt, torch.from_numpy(lens), batch_first=True,
                                      enforce_sorted=False)
        yt, hnt = rnn(packed, h0t)
        yt = pad_packed_sequence(yt, batch_first=True, total_length=T)[0]
    assert_close("y", yt.detach().numpy(), ys[-1], FINITE_DIFF)
    assert_close("h_n", hnt.detach().numpy(), h_n, FINITE_DIFF)
    ((yt * torch.from_numpy(dy)).sum() + (hnt * torch.from_numpy(dh_n)).sum()).backward()
    assert_close("dx", xt.grad.numpy(), dx, FINITE_DIFF)
    assert_close("dh0", h0t.grad.numpy(), dh0, FINITE_DIFF)
    D = 2 if bidirectional else 1
    for k in range(L):
        for d in range(D):
            sfx = f"l{k}" + ("_reverse" if d else "")
            for name, got in zip(("weight_ih", "weight_hh", "bias_ih"), grads[D * k + d]):
                assert_close(f"{name}_{sfx}", getattr(rnn, f"{name}_{sfx}").grad.numpy(), got,
                             FINITE_DIFF)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_matches_a_layer_by_layer_torch_model(bidirectional):
    """``nn.RNN(dropout=p)``'s semantics with a given mask: two one-layer ``nn.RNN``s with the
    mask multiplied in between, forward and gradients."""
    torch = pytest.importorskip("torch", reason="no PyTorch (pip install -e '.[bench]')")
    rng = np.random.default_rng(10)
    B, T, I, H, L = 3, 4, 2, 3, 2
    D = 2 if bidirectional else 1
    x, h0, layers = stack_problem(rng, B, T, I, H, L, bidirectional, False)
    mask = ref.dropout_mask(11, 2, 0, (B, T, D * H), 0.4)
    kw = {"nonlinearity": "relu", "bidirectional": bidirectional, "masks": [mask]}
    ys, h_n = ref.stack_forward(x, h0, layers, None, **kw)
    dy = rng.standard_normal(ys[-1].shape)
    dx, _, grads = ref.stack_backward(dy, None, x, h0, layers, ys, None, **kw)

    first = _torch_rnn(torch, layers[:D], I, H, 1, "relu", bidirectional)
    second = _torch_rnn(torch, layers[D:], D * H, H, 1, "relu", bidirectional)
    xt = torch.from_numpy(x).requires_grad_()
    mid, _ = first(xt, torch.from_numpy(h0[:D]))
    yt, _ = second(mid * torch.from_numpy(mask), torch.from_numpy(h0[D:]))
    assert_close("y", yt.detach().numpy(), ys[-1], FINITE_DIFF)
    (yt * torch.from_numpy(dy)).sum().backward()
    assert_close("dx", xt.grad.numpy(), dx, FINITE_DIFF)
    assert_close("dw_hh of the second layer", second.weight_hh_l0.grad.numpy(), grads[D][1],
                 FINITE_DIFF)

"""Weight conversion between fastrnn's layout, PyTorch ``nn.RNN`` state dicts and TF1 BasicRNNCell.

fastrnn's layers are ``(w_ih [H,I], w_hh [H,H], b [H])`` per layer, bottom first (the layout of
:mod:`fastrnn.reference`, :class:`fastrnn.cells.BasicRNNCell` and :class:`fastrnn.torch.RNN`).

PyTorch ``nn.RNN`` (tanh or relu: the weights are the same)::

    weight_ih_l{k} [H,I_k] = w_ih     weight_hh_l{k} [H,H] = w_hh
    bias_ih_l{k} + bias_hh_l{k} = b   (export: bias_ih = b, bias_hh = 0)

    bidirectional: 2L layers, layer k's forward direction at 2k and its reverse at 2k+1 (the
    order of :func:`fastrnn.reference.stack_forward` and of ``h_n``), the reverse one under
    the ``_reverse`` names; layers above the first take ``2H`` inputs

TF1 ``BasicRNNCell`` (``h = tanh(concat([x, h]) @ kernel + bias)``)::

    kernel [I+H, H] = concat([w_ih.T, w_hh.T])   (the x rows first, then the h rows)
    bias [H] = b

Every function takes NumPy arrays (or anything with ``.detach().cpu().numpy()`` or ``__array__``,
so torch tensors work without this module importing torch) and returns new NumPy arrays.

>>> import numpy as np
>>> from fastrnn import convert
>>> rng = np.random.default_rng(0)
>>> layers = [(rng.standard_normal((4, 3)), rng.standard_normal((4, 4)), rng.standard_normal(4))]
>>> sd = convert.to_torch(layers)          # nn.RNN(3, 4).load_state_dict(convert.to_torch(
>>> sorted(sd)                             #     layers, as_tensors=True)) works as is
['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0']
>>> tf_vars = convert.to_tf(layers)
>>> tf_vars["rnn/basic_rnn_cell/kernel"].shape
(7, 4)
>>> back = convert.from_tf(tf_vars)[0]
>>> all(np.array_equal(a, b) for a, b in zip(back, layers[0]))
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from fastrnn import _validate as check

Layer = tuple[np.ndarray, np.ndarray, np.ndarray]  # (w_ih [H,I], w_hh [H,H], b [H])

_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
#: a MultiRNNCell cell's scope: ``{prefix}/cell_{k}/{cell name}`` (``basic_rnn_cell`` unless the
#: cell was given a name), cell_{k} a whole component
_TF_CELL = re.compile(r"^(?:(.*)/)?cell_(\d+)/[^/]+$")


def _str_keys(name: str, mapping, expected: str) -> None:
    """``mapping`` is a Mapping whose keys are all str (``expected`` says what they name)."""
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name}: expected a mapping of {expected} -> array, got "
                        f"{check._describe(mapping)}")
    for key in mapping:
        if not isinstance(key, str):
            raise TypeError(f"{name}: expected str keys ({expected}), got {check._describe(key)}")


def _numpy(name: str, a) -> np.ndarray:
    """A NumPy float array from an array or a CPU/CUDA torch tensor (torch is not imported)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    elif type(a).__module__.startswith("cupy"):
        a = a.get()
    a = np.asarray(a)
    if a.dtype not in check.FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    return a


def _check_weights(where: str, w_ih, w_hh) -> tuple[np.ndarray, np.ndarray]:
    """``w_ih [H,I]`` and ``w_hh [H,H]`` as NumPy arrays of one dtype (``where`` prefixes the
    names in messages)."""
    w_ih, w_hh = _numpy(f"{where}w_ih", w_ih), _numpy(f"{where}w_hh", w_hh)
    if w_hh.ndim != 2 or w_hh.shape[0] != w_hh.shape[1]:
        check.fail(f"{where}w_hh", "shape [H,H]", f"shape {w_hh.shape}")
    H = w_hh.shape[0]
    if w_ih.ndim != 2 or w_ih.shape[0] != H:
        check.fail(f"{where}w_ih", f"shape [H,I] with H = {H}", f"shape {w_ih.shape}")
    if w_ih.dtype != w_hh.dtype:
        raise TypeError(f"{where}w_ih: expected dtype {w_hh.dtype} (the dtype of {where}w_hh), "
                        f"got {w_ih.dtype}")
    return w_ih, w_hh


def _check_layers(layers: Sequence, bidirectional: bool = False) -> list[Layer]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"layers: expected a non-empty list of (w_ih, w_hh, b), got "
                        f"{check._describe(layers)}")
    D = 2 if bidirectional else 1
    if len(layers) % D:
        check.fail("layers", "an even number of entries (two directions per layer) with "
                   "bidirectional=True", f"{len(layers)} entries")
    out = []
    for k, lay in enumerate(layers):
        if not isinstance(lay, Sequence) or len(lay) != 3:
            check.fail(f"layers[{k}]", "a tuple (w_ih [H,I], w_hh [H,H], b [H])",
                       check._describe(lay))
        w_ih, w_hh = _check_weights(f"layers[{k}].", *lay[:2])
        b = _numpy(f"layers[{k}].b", lay[2])
        check.shape(f"layers[{k}].b", b, w_hh.shape[:1], "[H]")
        if b.dtype != w_hh.dtype:
            raise TypeError(f"layers[{k}].b: expected dtype {w_hh.dtype} (the dtype of "
                            f"layers[{k}].w_hh), got {b.dtype}")
        if k >= D and w_ih.shape[1] != D * out[-1][1].shape[0]:
            what = "twice the previous layer's H" if D == 2 else "the previous layer's H"
            check.fail(f"layers[{k}].w_ih", f"input size {D * out[-1][1].shape[0]} ({what})",
                       f"shape {w_ih.shape}")
        if k % D and (w_ih.shape != out[-1][0].shape or w_hh.shape != out[-1][1].shape):
            check.fail(f"layers[{k}]", f"the shapes of layers[{k - 1}] (one layer's two "
                       "directions)", f"w_ih {w_ih.shape}, w_hh {w_hh.shape}")
        out.append((w_ih, w_hh, b))
    return out


def to_torch(layers: Sequence, *, bias: bool = True, as_tensors: bool = False,
             bidirectional: bool = False) -> dict:
    """An ``nn.RNN`` state dict from fastrnn layers.

    Parameters
    ----------
    layers : list of (w_ih [H,I_k], w_hh [H,H], b [H])
        Bottom first; with ``bidirectional``, each layer's forward then reverse direction.
    bias : bool
        True: ``bias_ih_l{k} = b``, ``bias_hh_l{k} = 0`` (for ``nn.RNN(..., bias=True)``);
        False: no bias entries (for ``bias=False``; every ``b`` must then be zero).
    as_tensors : bool
        Return torch tensors (imports torch) instead of NumPy arrays.
    bidirectional : bool
        For ``nn.RNN(..., bidirectional=True)``: entry 2k + 1 goes to the ``_reverse`` names.

    Returns
    -------
    dict
        ``weight_ih_l{k}``, ``weight_hh_l{k}`` (and ``bias_ih_l{k}``, ``bias_hh_l{k}``; each with
        ``_reverse`` for the reverse direction), copies, in nn.RNN's order.
    """
    out = {}
    D = 2 if bidirectional else 1
    for k, (w_ih, w_hh, b) in enumerate(_check_layers(layers, bidirectional)):
        sfx = f"{k // D}" + ("_reverse" if k % D else "")
        out[f"weight_ih_l{sfx}"], out[f"weight_hh_l{sfx}"] = w_ih.copy(), w_hh.copy()
        if bias:
            out[f"bias_ih_l{sfx}"], out[f"bias_hh_l{sfx}"] = b.copy(), np.zeros_like(b)
        elif np.any(b):
            check.fail(f"layers[{k}].b", "all zeros with bias=False (the bias would be lost)",
                       "a non-zero bias")
    if as_tensors:
        import torch

        out = {k: torch.from_numpy(v) for k, v in out.items()}
    return out


def from_torch(state_dict: Mapping, *, prefix: str = "") -> list[Layer]:
    """fastrnn layers from an ``nn.RNN`` (or :class:`fastrnn.torch.RNN`) state dict.

    Parameters
    ----------
    state_dict : mapping of name -> tensor or array
        As ``nn.RNN(...).state_dict()``; a model's whole state dict works with ``prefix``.
    prefix : str
        Taken off the keys, e.g. ``"rnn."``; keys without it are ignored.

    Returns
    -------
    list of (w_ih [H,I_k], w_hh [H,H], b [H])
        ``b = bias_ih + bias_hh`` (zeros when the RNN had ``bias=False``). With ``_reverse``
        weights (``bidirectional=True``): two entries per layer, forward then reverse.

    Raises
    ------
    NotImplementedError
        Projected (``weight_hr_*``) weights.
    TypeError
        Keys that are not str, or a layer whose arrays differ in dtype.
    ValueError
        Missing layers or parameters, or inconsistent shapes.
    """
    _str_keys("state_dict", state_dict, "parameter names")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix: expected a str, got {check._describe(prefix)}")
    found: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.startswith("weight_hr"):
            raise NotImplementedError(f"{key}: projected (proj_size > 0) weights are not "
                                      "supported")
        m = _TORCH_KEY.match(name)
        if m:  # entry 2k + 1 for layer k's reverse direction, 2k for the others (for now)
            found.setdefault((int(m.group(2)), bool(m.group(3))), {})[m.group(1)] = _numpy(
                key, value)
    bidirectional = any(rev for _, rev in found)
    D = 2 if bidirectional else 1
    found = {D * k + rev: p for (k, rev), p in found.items()}
    if not found:
        check.fail("state_dict", f"nn.RNN keys like {prefix}weight_ih_l0",
                   sorted(state_dict)[:6])
    if sorted(found) != list(range(len(found))) or len(found) % D:
        names = [f"l{i // D}" + ("_reverse" if i % D else "") for i in sorted(found)]
        want = "both directions of " if D == 2 else ""
        check.fail("state_dict", f"{want}layers 0..{(len(found) + D - 1) // D - 1}",
                   f"layers {names}")
    layers = []
    for i in range(len(found)):
        p = found[i]
        k = f"{i // D}" + ("_reverse" if i % D else "")
        for n in ("weight_ih", "weight_hh"):
            if n not in p:
                check.fail("state_dict", f"{prefix}{n}_l{k}", "no such key")
        if ("bias_ih" in p) != ("bias_hh" in p):
            check.fail("state_dict", f"both {prefix}bias_ih_l{k} and {prefix}bias_hh_l{k} "
                       "or neither", "only one")
        w_hh = p["weight_hh"]
        if w_hh.ndim != 2 or w_hh.shape[0] != w_hh.shape[1]:
            check.fail(f"{prefix}weight_hh_l{k}", "shape [H,H]", f"shape {w_hh.shape}")
        H = w_hh.shape[0]
        for n, a in p.items():  # before the sum, which would broadcast and promote
            if a.dtype != w_hh.dtype:
                raise TypeError(f"{prefix}{n}_l{k}: expected dtype {w_hh.dtype} (the dtype of "
                                f"{prefix}weight_hh_l{k}), got {a.dtype}")
            if n.startswith("bias"):
                check.shape(f"{prefix}{n}_l{k}", a, (H,), "[H]")
        b = p["bias_ih"] + p["bias_hh"] if "bias_ih" in p else np.zeros(H, w_hh.dtype)
        layers.append((p["weight_ih"].copy(), p["weight_hh"].copy(), b))
    return _check_layers(layers, bidirectional)


def tf_kernel(w_ih, w_hh) -> np.ndarray:
    """TF's ``kernel [I+H, H] = concat([w_ih.T, w_hh.T])`` from ``w_ih [H,I]``, ``w_hh [H,H]``."""
    w_ih, w_hh = _check_weights("", w_ih, w_hh)
    return np.concatenate([w_ih.T, w_hh.T], axis=0)


def split_tf_kernel(kernel) -> tuple[np.ndarray, np.ndarray]:
    """``(w_ih [H,I], w_hh [H,H])`` from TF's ``kernel [I+H, H]`` (H = its columns)."""
    kernel = _numpy("kernel", kernel)
    if kernel.ndim != 2 or kernel.shape[0] <= kernel.shape[1] or kernel.shape[1] < 1:
        check.fail("kernel", "shape [I+H, H] with I, H >= 1", f"shape {kernel.shape}")
    I = kernel.shape[0] - kernel.shape[1]
    return kernel[:I].T.copy(), kernel[I:].T.copy()  # copies, C order, also when I or H is 1


def _tf_scope(scope: str, k: int, num_layers: int) -> str:
    cell = "basic_rnn_cell" if num_layers == 1 else f"multi_rnn_cell/cell_{k}/basic_rnn_cell"
    return f"{scope}/{cell}" if scope else cell


def to_tf(layers: Sequence, *, scope: str = "rnn") -> dict[str, np.ndarray]:
    """TF1 variables (names without ``:0``) of ``dynamic_rnn`` over a BasicRNNCell (one layer) or
    a MultiRNNCell of BasicRNNCells: ``{scope}/basic_rnn_cell/kernel [I+H,H]`` and ``.../bias
    [H]``, or ``{scope}/multi_rnn_cell/cell_{k}/basic_rnn_cell/...`` per layer."""
    layers = _check_layers(layers)
    out = {}
    for k, (w_ih, w_hh, b) in enumerate(layers):
        name = _tf_scope(scope, k, len(layers))
        out[f"{name}/kernel"], out[f"{name}/bias"] = tf_kernel(w_ih, w_hh), b.copy()
    return out


def from_tf(variables: Mapping) -> list[Layer]:
    """fastrnn layers from TF1 BasicRNNCell variables.

    Parameters
    ----------
    variables : mapping of name -> array
        Names ending in ``kernel`` / ``bias`` (with or without ``:0``), e.g. from
        ``{v.name: sess.run(v) for v in tf.trainable_variables()}``. Each ``.../kernel`` needs its
        ``.../bias``. With several cells, the names must be one MultiRNNCell's,
        ``{prefix}/cell_{k}/{cell name}/...`` with one ``prefix`` and k = 0..n-1, which give
        the layer order; without ``cell_{k}``, there must be a single cell.

    Returns
    -------
    list of (w_ih [H,I_k], w_hh [H,H], b [H])

    Raises
    ------
    TypeError
        Keys that are not str.
    ValueError
        Missing, repeated or unpaired variables, the cells of several stacks, or Keras
        ``SimpleRNN`` variables (``recurrent_kernel``: another layout).
    """
    _str_keys("variables", variables, "variable names")
    cells: dict[str, dict[str, np.ndarray]] = {}
    for key, value in variables.items():
        name = key[:-2] if key.endswith(":0") else key
        scope, _, leaf = name.rpartition("/")
        if leaf == "recurrent_kernel":
            check.fail("variables", "TF1 BasicRNNCell variables ({scope}/kernel [I+H,H] and "
                       "{scope}/bias [H])", f"{key}, Keras SimpleRNN's layout (kernel [I,H], "
                       "recurrent_kernel [H,H], bias [H]: its layer is (kernel.T, "
                       "recurrent_kernel.T, bias))")
        if leaf in ("kernel", "bias"):
            cell = cells.setdefault(scope, {})
            if leaf in cell:
                check.fail("variables", f"one {name}", "it twice (with and without :0)")
            cell[leaf] = _numpy(key, value)
    if not cells:
        check.fail("variables", "names ending in /kernel and /bias", sorted(variables)[:6])
    for scope, v in cells.items():
        if set(v) != {"kernel", "bias"}:
            check.fail("variables", f"both {scope}/kernel and {scope}/bias", sorted(v))
    scopes = list(cells)
    parsed = {s: _TF_CELL.match(s) for s in scopes}
    if len(cells) > 1 and not all(parsed.values()):
        check.fail("variables", "one cell, or MultiRNNCell scopes with cell_{k}/{cell name} "
                   "in every name", sorted(cells))
    if all(parsed.values()):
        prefixes = sorted({m.group(1) or "" for m in parsed.values()})
        if len(prefixes) > 1:
            check.fail("variables", "the cells of one MultiRNNCell (a single scope)",
                       f"scopes {prefixes}")
        scopes.sort(key=lambda s: int(parsed[s].group(2)))
        ks = [int(parsed[s].group(2)) for s in scopes]
        if ks != list(range(len(ks))):
            check.fail("variables", f"cells 0..{len(ks) - 1} (MultiRNNCell's cell_{{k}})",
                       f"cells {ks}")
    layers = []
    for s in scopes:
        kernel, bias = cells[s]["kernel"], cells[s]["bias"]
        if bias.dtype != kernel.dtype:
            raise TypeError(f"{s}/bias: expected dtype {kernel.dtype} (the dtype of {s}/kernel), "
                            f"got {bias.dtype}")
        w_ih, w_hh = split_tf_kernel(kernel)
        layers.append((w_ih, w_hh, bias.copy()))
    return _check_layers(layers)

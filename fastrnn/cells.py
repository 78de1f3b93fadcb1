"""TensorFlow-1-style cells: ``BasicRNNCell``, ``MultiRNNCell``, ``dynamic_rnn``, ``static_rnn`` and
``bidirectional_dynamic_rnn``.

Code written for TF1's ``tf.nn.dynamic_rnn`` runs here with the same calls and the same semantics
(``sequence_length``: zero outputs and a carried state past each length), on NumPy arrays (CPU)
or CuPy arrays (GPU), through the functional API :func:`fastrnn.rnn_forward` /
:func:`fastrnn.rnn_backward`.

Gradients
---------
There is no graph here, so no ``tf.gradients``. Instead ``dynamic_rnn``/``static_rnn`` called with
``return_tape=True`` also return an :class:`RNNTape`, which holds what the forward saved; its
:meth:`RNNTape.backward` takes the upstream gradients on the outputs and on the final state (either
may be None) and returns a :class:`Gradients` with the gradients on ``inputs``, on
``initial_state`` and on every cell's weights. A cell used by several layers (``[cell] * 3``) or by
several taped calls gets the sum, as in TF. The weight gradients are also *added* into each cell's
``cell.grads`` dict (like PyTorch's ``.grad``), so an optimiser can walk the cells; reset them with
:meth:`BasicRNNCell.zero_grad`. The tape keeps copies of what its forward read (the inputs, the
initial state, the weights), so an update of the weights in place, as below, leaves its backward
unchanged.

>>> import numpy as np
>>> from fastrnn.cells import BasicRNNCell, dynamic_rnn
>>> cell = BasicRNNCell(4, seed=0, dtype="float64")
>>> x = np.random.default_rng(0).standard_normal((2, 5, 3))               # [B,T,I]
>>> outputs, state, tape = dynamic_rnn(cell, x, sequence_length=[5, 3], return_tape=True)
>>> outputs.shape, state.shape                                             # [B,T,H], [B,H]
((2, 5, 4), (2, 4))
>>> g = tape.backward(d_outputs=np.ones_like(outputs), d_state=None)      # d(sum(outputs))
>>> g.inputs.shape, g.initial_state.shape, sorted(cell.grads)
((2, 5, 3), (2, 4), ['b', 'w_hh', 'w_ih'])
>>> for name, grad in cell.grads.items():                                  # plain SGD
...     getattr(cell, name)[...] -= 0.1 * grad
>>> cell.zero_grad()

Weights are stored in fastrnn's layout (``w_ih [H,I]``, ``w_hh [H,H]``, one bias ``b [H]``);
:mod:`fastrnn.convert` turns TF's ``kernel [I+H,H]``/``bias [H]`` into it and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastrnn import _validate as check
from fastrnn import api
from fastrnn.params import ModelSpec, init_params, views
from fastrnn.reference import reverse_index

WEIGHT_NAMES = ("w_ih", "w_hh", "b")


def keras_init(input_size: int, num_units: int, seed: int | None, dtype: str):
    """``(w_ih [H,I], w_hh [H,H], b [H])`` initialised as :func:`fastrnn.params.init_params`
    initialises one layer: Glorot-uniform ``w_ih``, orthogonal ``w_hh``, zero ``b``.

    Runs the classifier's initialiser on a one-layer spec and keeps its first layer, so both draw
    their weights the same way (same seed, same sizes: same ``w_ih`` and ``w_hh``).
    """
    spec = ModelSpec(input_size, num_units, num_layers=1, num_classes=1, dtype=dtype)
    v = views(init_params(spec, seed), spec)
    return tuple(v[name].copy() for name in ("w_ih_l0", "w_hh_l0", "b_l0"))


class BasicRNNCell:
    """An RNN cell, TF1's ``BasicRNNCell``: ``h_t = f(W_ih x_t + W_hh h_{t-1} + b)``, f = tanh
    (TF's default) or relu (``activation="relu"``, TF's ``activation=tf.nn.relu``).

    The weights are created at the first call, when the input size is known (or by
    :meth:`build` / :meth:`set_weights`), with Keras's initialisers: Glorot-uniform ``w_ih``,
    orthogonal ``w_hh``, zero ``b`` (see :func:`keras_init`). They live on the device of the first
    inputs (NumPy: CPU, CuPy: GPU).

    Parameters
    ----------
    num_units : int
        H, the state and output size.
    seed : int or None
        Seeds the initialisation (None: fresh entropy).
    dtype : {"float32", "float64"}
        Of the weights; inputs must have the same dtype.
    activation : {"tanh", "relu"}
        f (a name: TF takes the function itself).

    Attributes
    ----------
    w_ih : array [H,I] or None (before the first call)
    w_hh : array [H,H] or None
    b : array [H] or None
    grads : dict
        ``{"w_ih", "w_hh", "b"}`` -> accumulated gradients, filled by :meth:`RNNTape.backward`;
        empty until then and after :meth:`zero_grad`.
    """

    def __init__(self, num_units: int, *, seed: int | None = None, dtype: str = "float32",
                 activation: str = "tanh"):
        self.num_units = check.positive_int("num_units", num_units)
        self.activation = check.nonlinearity("activation", activation)
        if str(dtype) not in ("float32", "float64"):
            check.fail("dtype", "'float32' or 'float64'", repr(dtype))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            check.fail("seed", "an int >= 0 or None", repr(seed))
        self.seed = seed
        self.dtype = np.dtype(str(dtype))
        self.w_ih = self.w_hh = self.b = None
        self.grads: dict[str, Any] = {}

    # --- TF's cell protocol -------------------------------------------------------------------
    @property
    def state_size(self) -> int:
        return self.num_units

    @property
    def output_size(self) -> int:
        return self.num_units

    @property
    def input_size(self) -> int | None:
        """I, once the weights exist."""
        return None if self.w_ih is None else int(self.w_ih.shape[1])

    @property
    def built(self) -> bool:
        return self.w_ih is not None

    def zero_state(self, batch_size: int, dtype=None, xp=np):
        """Zeros ``[batch_size, H]`` (of the cell's dtype unless given)."""
        return xp.zeros((check.positive_int("batch_size", batch_size), self.num_units),
                        dtype=self.dtype if dtype is None else dtype)

    def __call__(self, inputs, state, *, backend: str | None = None):
        """One step, forward only (as TF's ``cell(inputs, state)``): ``inputs [B,I]``,
        ``state [B,H]`` (None: zeros) -> ``(output [B,H], new_state [B,H])``, one new array
        returned twice. Runs :func:`fastrnn.rnn_step` (its fast path: a few microseconds on
        NumPy arrays of the cell's dtype). For gradients run :func:`dynamic_rnn` with
        ``return_tape=True``."""
        if backend is None and self.built:
            h = api.fast_step(inputs, state, self.w_ih, self.w_hh, self.b, self.activation)
            if h is not None:
                return h, h
        xp = api._xp(inputs)
        x = check.array("inputs", inputs, xp, 2)
        self._check_dtype("inputs", x)
        if 0 in x.shape:
            check.fail("inputs", "shape [B,I] with B >= 1 and I >= 1", f"shape {tuple(x.shape)}")
        if state is not None:  # checked here so that errors name this method's arguments
            state = check.array("state", state, xp, 2, like="inputs")
            self._check_dtype("state", state)
            check.shape("state", state, (x.shape[0], self.num_units), "[B,H]")
        self.build(x.shape[1], xp)
        h = api.rnn_step(x, state, self.w_ih, self.w_hh, self.b, nonlinearity=self.activation,
                         backend=backend)
        return h, h

    # --- weights ------------------------------------------------------------------------------
    def build(self, input_size: int, xp=np) -> None:
        """Create the weights for inputs of size ``input_size`` (no-op if they exist for it).

        Raises ValueError if the cell already has weights for another input size (a cell shared
        between layers, or reused on different inputs, needs the same input size everywhere).
        """
        input_size = check.positive_int("input_size", input_size)
        if self.built:
            if input_size != self.input_size:
                check.fail("inputs", f"input size {self.input_size} (this cell's weights were "
                           f"built for it: w_ih is [H,I] = {tuple(self.w_ih.shape)})",
                           f"input size {input_size}")
            return
        w_ih, w_hh, b = keras_init(input_size, self.num_units, self.seed, self.dtype.name)
        self.w_ih, self.w_hh, self.b = xp.asarray(w_ih), xp.asarray(w_hh), xp.asarray(b)

    def get_weights(self):
        """``(w_ih [H,I], w_hh [H,H], b [H])``: the cell's own arrays, not copies."""
        if not self.built:
            raise ValueError("weights: expected a built cell (call it once, or build(input_size)),"
                             " got a cell without weights")
        return self.w_ih, self.w_hh, self.b

    def set_weights(self, w_ih, w_hh, b) -> None:
        """Replace the weights (copied, into the cell's dtype; NumPy or CuPy arrays).

        Shapes: ``w_ih [H,I]`` (any I >= 1), ``w_hh [H,H]``, ``b [H]`` with H = ``num_units``.
        """
        xp = api._xp(w_ih)
        H = self.num_units
        w_ih = check.array("w_ih", w_ih, xp, 2)
        if w_ih.shape[0] != H or w_ih.shape[1] < 1:
            check.fail("w_ih", f"shape [H,I] with H = num_units = {H} and I >= 1",
                       f"shape {tuple(w_ih.shape)}")
        w_hh = check.array("w_hh", w_hh, xp, 2, like="w_ih")
        check.shape("w_hh", w_hh, (H, H), "[H,H]")
        b = check.array("b", b, xp, 1, like="w_ih")
        check.shape("b", b, (H,), "[H]")
        self.w_ih, self.w_hh, self.b = (xp.array(a, dtype=self.dtype) for a in (w_ih, w_hh, b))

    def zero_grad(self) -> None:
        """Forget the accumulated ``grads``."""
        self.grads = {}

    def _accumulate(self, grads: dict) -> None:
        for name, g in grads.items():
            self.grads[name] = self.grads[name] + g if name in self.grads else g.copy()

    def _check_dtype(self, name: str, a) -> None:
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (the cell's dtype), "
                            f"got {a.dtype}")

    def __repr__(self) -> str:
        act = "" if self.activation == "tanh" else f", activation={self.activation!r}"
        return f"BasicRNNCell(num_units={self.num_units}, dtype={self.dtype.name!r}{act})"


class MultiRNNCell:
    """Stacked cells, TF1's ``MultiRNNCell``: layer k's outputs are layer k+1's inputs.

    Distinct cell objects have separate weights; the same object repeated (``[cell] * 3``) is one
    shared set of weights (TF >= 1.2), whose gradient is the sum over the layers using it. A cell
    used by several layers must see the same input size in each: above the first layer that is the
    previous layer's ``num_units``, so ``[cell] * 3`` on inputs of size I needs ``I == num_units``.

    Parameters
    ----------
    cells : sequence of BasicRNNCell
        Bottom layer first (at least one).
    """

    def __init__(self, cells: Sequence[BasicRNNCell]):
        if isinstance(cells, BasicRNNCell) or not isinstance(cells, Sequence) or not cells:
            raise TypeError(f"cells: expected a non-empty list of BasicRNNCell, got "
                            f"{check._describe(cells)}")
        for k, c in enumerate(cells):
            if not isinstance(c, BasicRNNCell):
                raise TypeError(f"cells[{k}]: expected a BasicRNNCell, got {check._describe(c)}")
        dtypes = {c.dtype for c in cells}
        if len(dtypes) > 1:
            check.fail("cells", "cells of one dtype", sorted(d.name for d in dtypes))
        self.cells = list(cells)
        self.dtype = cells[0].dtype
        # a shared cell must see one input size: check now what is known without the input
        self._layer_input_sizes(None)

    @property
    def state_size(self) -> tuple[int, ...]:
        return tuple(c.num_units for c in self.cells)

    @property
    def output_size(self) -> int:
        return self.cells[-1].num_units

    def unique_cells(self) -> list[BasicRNNCell]:
        """Each distinct cell once, in order of first use."""
        return list({id(c): c for c in self.cells}.values())

    def zero_state(self, batch_size: int, dtype=None, xp=np) -> tuple:
        """One ``[batch_size, H_k]`` zeros array per layer."""
        return tuple(c.zero_state(batch_size, dtype, xp) for c in self.cells)

    def zero_grad(self) -> None:
        for c in self.unique_cells():
            c.zero_grad()

    def _layer_input_sizes(self, input_size: int | None) -> list[int | None]:
        """Input size of each layer; ValueError when a shared cell would see two sizes."""
        sizes = [input_size] + [c.num_units for c in self.cells[:-1]]
        seen: dict[int, tuple[int, int | None]] = {}
        for k, (c, size) in enumerate(zip(self.cells, sizes)):
            size = c.input_size if size is None else size
            if id(c) in seen:
                j, other = seen[id(c)]
                if size is not None and other is not None and size != other:
                    raise ValueError(
                        f"cells: expected a shared cell to see one input size, got cell {c!r} in "
                        f"layers {j} (input size {other}) and {k} (input size {size}); above the "
                        f"first layer a layer's input size is the previous layer's num_units, so "
                        f"a shared cell needs input size == num_units there")
            else:
                seen[id(c)] = (k, size)
        return sizes

    def build(self, input_size: int, xp=np) -> None:
        for c, size in zip(self.cells, self._layer_input_sizes(input_size)):
            c.build(size, xp)

    def __repr__(self) -> str:
        return f"MultiRNNCell({self.cells!r})"


Cell = BasicRNNCell | MultiRNNCell


@dataclass
class Gradients:
    """What :meth:`RNNTape.backward` returns.

    Attributes
    ----------
    inputs : array like the call's ``inputs`` (a list of T ``[B,I]`` arrays for ``static_rnn``)
    initial_state : array [B,H] (BasicRNNCell) or tuple of per-layer ``[B,H_k]`` (MultiRNNCell)
        Gradient on ``initial_state`` (zeros were used when it was None).
    weights : dict
        ``cell -> {"w_ih": [H,I], "w_hh": [H,H], "b": [H]}``, one entry per distinct cell, summed
        over the layers that share it. The same arrays were added into ``cell.grads``.
    """

    inputs: Any
    initial_state: Any
    weights: dict = field(default_factory=dict)


class RNNTape:
    """The forward's saved arrays, and the backward pass through them (from ``return_tape=True``).

    The tape holds its own copies of everything the forward read (inputs, initial states,
    ``sequence_length``, each cell's ``w_ih`` and ``w_hh``) and of the outputs it returned, so
    its backward is that forward's, whatever is later written into those arrays or into the
    cells' weights (an optimiser step included). One tape may be run backward more than once
    (each run adds into ``cell.grads`` again).
    """

    def __init__(self, cells, weights, xs, h0s, ys, lengths, time_major, backend, multi,
                 static):
        # per layer k: cells[k] (gets the gradient), weights[k] = (w_ih, w_hh) as the forward
        # used them (one pair for all the layers sharing a cell), xs[k], h0s[k], ys[k]
        self._cells, self._weights, self._xs, self._h0s, self._ys = cells, weights, xs, h0s, ys
        self._lengths, self._time_major, self._backend = lengths, time_major, backend
        self._multi, self._static = multi, static

    def backward(self, d_outputs=None, d_state=None) -> Gradients:
        """BPTT from upstream gradients on the outputs and on the final state.

        Parameters
        ----------
        d_outputs : array like ``outputs`` (a list of T ``[B,H]`` arrays for ``static_rnn``) or None
            None means zeros. Ignored past each sequence's length (those outputs are constant 0).
        d_state : like ``state`` or None
            ``[B,H]`` for a BasicRNNCell, a tuple/list of per-layer ``[B,H_k]`` (entries may be
            None) for a MultiRNNCell; None means zeros.

        Returns
        -------
        Gradients
        """
        L = len(self._cells)
        y = self._ys[-1]
        if d_outputs is not None and self._static:
            d_outputs = _stack_steps("d_outputs", d_outputs, y.shape[0])
            _check_grad("d_outputs[0]", d_outputs[0], y, y.shape[1:], "[B,H]")
        elif d_outputs is not None:
            _check_grad("d_outputs", d_outputs, y, y.shape,
                        "[T,B,H]" if self._time_major else "[B,T,H]")
        if d_state is None:
            d_state = (None,) * L
        elif self._multi:
            if not isinstance(d_state, (tuple, list)) or len(d_state) != L:
                check.fail("d_state", f"a tuple of {L} arrays [B,H_k] (or None)",
                           check._describe(d_state))
        else:
            d_state = (d_state,)
        B = y.shape[1 if self._time_major else 0]
        for k, d in enumerate(d_state):
            if d is not None and self._multi:
                _check_grad(f"d_state[{k}]", d, y, (B, self._cells[k].num_units), "[B,H_k]")
            elif d is not None:
                _check_grad("d_state", d, y, (B, self._cells[k].num_units), "[B,H]")
        weights: dict = {}
        d_h0 = [None] * L
        d_y = d_outputs
        for k in reversed(range(L)):
            cell = self._cells[k]
            w_ih, w_hh = self._weights[k]
            d_x, d_h0[k], dw_ih, dw_hh, db = api.rnn_backward(
                d_y, d_state[k], self._xs[k], self._h0s[k], w_ih, w_hh, self._ys[k],
                self._lengths, self._time_major, nonlinearity=cell.activation,
                backend=self._backend)
            g = {"w_ih": dw_ih, "w_hh": dw_hh, "b": db}
            if cell in weights:
                weights[cell] = {n: weights[cell][n] + g[n] for n in WEIGHT_NAMES}
            else:
                weights[cell] = g
            d_y = d_x
        for cell, g in weights.items():
            cell._accumulate(g)
        d_inputs = list(d_y) if self._static else d_y
        return Gradients(d_inputs, tuple(d_h0) if self._multi else d_h0[0], weights)


def _check_grad(name: str, g, like, shape: tuple, meaning: str) -> None:
    """An upstream gradient ``g``: an array on ``like``'s device, of its dtype and of ``shape``
    (``meaning`` spells it in symbols, e.g. ``[B,H]``)."""
    g = check.array(name, g, api._xp(like), len(shape), like="the forward's inputs",
                    contiguous=False)
    if g.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (the forward's dtype), got {g.dtype}")
    check.shape(name, g, shape, meaning)


def _stack_steps(name: str, steps, T: int | None = None):
    """A list of T arrays ``[B,N]`` -> one ``[T,B,N]`` array."""
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise TypeError(f"{name}: expected a non-empty list of [B,N] arrays (one per step), "
                        f"got {check._describe(steps)}")
    if T is not None and len(steps) != T:
        check.fail(name, f"a list of T = {T} arrays", f"{len(steps)}")
    xp = api._xp(steps[0])
    first = check.array(f"{name}[0]", steps[0], xp, 2)
    for t, s in enumerate(steps):
        a = check.array(f"{name}[{t}]", s, xp, 2, first.dtype, like=f"{name}[0]")
        check.shape(f"{name}[{t}]", a, first.shape, f"[B,N] like {name}[0]")
    return xp.stack(steps)


def _run(cell: Cell, x, initial_state, sequence_length, time_major: bool, backend, static: bool,
         taped: bool):
    """Validate, build the cells, run the layers; returns ``(outputs, state, tape)``, the tape
    None unless ``taped``. ``static``: ``x`` is a fresh array that static_rnn stacked."""
    if not isinstance(cell, (BasicRNNCell, MultiRNNCell)):
        raise TypeError(f"cell: expected a BasicRNNCell or MultiRNNCell, got "
                        f"{check._describe(cell)}")
    if not isinstance(time_major, bool):
        raise TypeError(f"time_major: expected a bool, got {time_major!r}")
    xp = api._xp(x)
    x = check.array("inputs", x, xp, 3, contiguous=False)
    if x.dtype != cell.dtype:
        raise TypeError(f"inputs: expected dtype {cell.dtype} (the cell's dtype), got {x.dtype}")
    T, B, I = x.shape if time_major else (x.shape[1], x.shape[0], x.shape[2])
    for n, v in (("B", B), ("T", T), ("I", I)):
        if v < 1:
            check.fail("inputs", f"shape {'[T,B,I]' if time_major else '[B,T,I]'} with {n} >= 1",
                       f"shape {tuple(x.shape)}")
    multi = isinstance(cell, MultiRNNCell)
    cells = cell.cells if multi else [cell]
    L = len(cells)
    if initial_state is None:
        h0s = [None] * L
    elif multi:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != L:
            check.fail("initial_state", f"a tuple of {L} arrays [B,H_k] (one per layer)",
                       check._describe(initial_state))
        h0s = list(initial_state)
    else:
        h0s = [initial_state]
    for k, h0 in enumerate(h0s):
        if h0 is not None:
            name = f"initial_state[{k}]" if multi else "initial_state"
            h0 = check.array(name, h0, xp, 2, x.dtype, like="inputs", contiguous=False)
            check.shape(name, h0, (B, cells[k].num_units), "[B,H]")
            h0s[k] = h0
    cell.build(I, xp)
    lengths = None
    if sequence_length is not None:  # validated once here, then reused by every layer
        lengths = check.lengths("sequence_length", sequence_length, xp, B, T, like="inputs")
    # what the tape's backward reads must stay what this forward read, whatever the caller later
    # writes into its arrays or into the weights: the forward runs on copies that the tape keeps
    # (one copy of a cell shared by several layers; the layers above 0 read the layer below's
    # fresh outputs, and static_rnn's x is already a fresh stack of the steps)
    weights = {id(c): (c.w_ih, c.w_hh) for c in cells}
    if taped:
        x = x if static else x.copy()
        h0s = [None if h0 is None else h0.copy() for h0 in h0s]
        lengths = None if lengths is None else lengths.copy()
        weights = {key: (w_ih.copy(), w_hh.copy()) for key, (w_ih, w_hh) in weights.items()}
    layer_weights = [weights[id(c)] for c in cells]
    xs, ys, states = [], [], []
    inp = x
    for k, c in enumerate(cells):
        w_ih, w_hh = layer_weights[k]
        y, h = api.rnn_forward(inp, h0s[k], w_ih, w_hh, c.b, lengths, time_major,
                               nonlinearity=c.activation, backend=backend)
        xs.append(inp)
        ys.append(y)
        states.append(h)
        inp = y
    state = tuple(states) if multi else states[0]
    if not taped:
        return ys[-1], state, None
    # the returned outputs are the caller's; backward takes tanh' from the tape's copy
    tape = RNNTape(cells, layer_weights, xs, h0s, ys[:-1] + [ys[-1].copy()], lengths, time_major,
                   backend, multi, static)
    return ys[-1], state, tape


def dynamic_rnn(cell: Cell, inputs, sequence_length=None, initial_state=None,
                time_major: bool = False, *, return_tape: bool = False,
                backend: str | None = None):
    """Run ``cell`` over every step of ``inputs``, as TF1's ``tf.nn.dynamic_rnn``.

    Parameters
    ----------
    cell : BasicRNNCell or MultiRNNCell
    inputs : array [B,T,I] (or [T,B,I] when ``time_major``), float32 or float64
        NumPy array: runs on the CPU; CuPy array: on the GPU. Its dtype must be the cell's.
    sequence_length : integer array [B] or None
        For ``t >= sequence_length[b]`` the output is zero and the state is carried, so the final
        state of sequence b is its state at step ``sequence_length[b]-1`` (its initial state for
        length 0). None: every sequence runs all T steps.
    initial_state : array [B,H], or a tuple of per-layer ``[B,H_k]`` for a MultiRNNCell, or None
        None means zeros (entries of the tuple may also be None).
    time_major : bool
        Layout of ``inputs`` and ``outputs``.
    return_tape : bool
        Also return an :class:`RNNTape` whose ``backward(d_outputs, d_state)`` gives every
        gradient (see the module docstring for an example).
    backend : {None, "cpu", "reference", "cuda"}
        Passed to :func:`fastrnn.rnn_forward`; None picks by the array type.

    Returns
    -------
    outputs : array [B,T,H] (or [T,B,H]), the top layer's outputs
    state : array [B,H] (BasicRNNCell) or tuple of per-layer ``[B,H_k]`` (MultiRNNCell)
    tape : RNNTape, only when ``return_tape``
    """
    outputs, state, tape = _run(cell, inputs, initial_state, sequence_length, time_major,
                                backend, static=False, taped=return_tape)
    return (outputs, state, tape) if return_tape else (outputs, state)


def static_rnn(cell: Cell, inputs: Sequence, initial_state=None, sequence_length=None, *,
               return_tape: bool = False, backend: str | None = None):
    """Run ``cell`` over a list of T step inputs, as TF1's ``tf.nn.static_rnn``.

    Parameters
    ----------
    cell : BasicRNNCell or MultiRNNCell
    inputs : list of T arrays [B,I]
    initial_state, sequence_length, return_tape, backend
        As in :func:`dynamic_rnn`.

    Returns
    -------
    outputs : list of T arrays [B,H]
    state : as in :func:`dynamic_rnn`
    tape : RNNTape, only when ``return_tape``; its ``backward`` takes ``d_outputs`` as a list of T
        ``[B,H]`` arrays and returns ``Gradients.inputs`` as a list of T ``[B,I]`` arrays.
    """
    x = _stack_steps("inputs", inputs)
    outputs, state, tape = _run(cell, x, initial_state, sequence_length, True, backend,
                                static=True, taped=return_tape)
    outputs = list(outputs)
    return (outputs, state, tape) if return_tape else (outputs, state)


def _reverse_sequence(x, lengths, time_major: bool):
    """TF's ``reverse_sequence`` (:func:`fastrnn.reference.reverse_sequence`) on NumPy or CuPy:
    each sequence's first ``lengths[b]`` steps reversed, the rest in place; a new array."""
    xp = api._xp(x)
    T, B = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    idx = reverse_index(T, B, lengths, xp)
    idx = idx if time_major else idx.T
    return xp.take_along_axis(x, idx[..., None], axis=0 if time_major else 1)


class BidirectionalTape:
    """The tapes of both directions of :func:`bidirectional_dynamic_rnn`; ``backward`` takes
    ``d_outputs = (d_fw, d_bw)`` and ``d_state = (d_state_fw, d_state_bw)`` (each entry may be
    None) and returns :class:`Gradients` whose ``inputs`` is the sum over both directions,
    ``initial_state`` the pair ``(fw, bw)``, and ``weights`` both cells' (summed for a cell
    used in both directions)."""

    def __init__(self, fw: RNNTape, bw: RNNTape, lengths, time_major: bool):
        self._fw, self._bw, self._lengths, self._time_major = fw, bw, lengths, time_major

    def backward(self, d_outputs=None, d_state=None) -> Gradients:
        d_fw, d_bw = (None, None) if d_outputs is None else d_outputs
        s_fw, s_bw = (None, None) if d_state is None else d_state
        rev = lambda a: None if a is None else _reverse_sequence(  # noqa: E731
            a, self._lengths, self._time_major)
        g_fw = self._fw.backward(d_fw, s_fw)
        g_bw = self._bw.backward(rev(d_bw), s_bw)
        weights = dict(g_fw.weights)
        for cell, g in g_bw.weights.items():
            weights[cell] = {n: weights[cell][n] + g[n] for n in WEIGHT_NAMES} if (
                cell in weights) else g
        return Gradients(g_fw.inputs + rev(g_bw.inputs),
                         (g_fw.initial_state, g_bw.initial_state), weights)


def bidirectional_dynamic_rnn(cell_fw: Cell, cell_bw: Cell, inputs, sequence_length=None,
                              initial_state_fw=None, initial_state_bw=None,
                              time_major: bool = False, *, return_tape: bool = False,
                              backend: str | None = None):
    """TF1's ``tf.nn.bidirectional_dynamic_rnn``: ``cell_fw`` over ``inputs`` and ``cell_bw``
    over each sequence's valid steps in reverse (TF's ``reverse_sequence`` with
    ``sequence_length``: it starts at step ``sequence_length[b]-1``), its outputs put back in
    time order (zero past each length).

    Parameters
    ----------
    cell_fw, cell_bw : BasicRNNCell or MultiRNNCell
    inputs, sequence_length, time_major, return_tape, backend : as in :func:`dynamic_rnn`
    initial_state_fw, initial_state_bw : as ``initial_state`` in :func:`dynamic_rnn`

    Returns
    -------
    outputs : ``(output_fw, output_bw)``, each ``[B,T,H]`` (``[T,B,H]``); TF concatenates
        nothing either (``xp.concatenate(outputs, -1)`` gives nn.RNN's ``[fw, bw]``)
    states : ``(state_fw, state_bw)``, each as ``state`` in :func:`dynamic_rnn`
    tape : :class:`BidirectionalTape`, only when ``return_tape``
    """
    out_fw, st_fw, tape_fw = _run(cell_fw, inputs, initial_state_fw, sequence_length, time_major,
                                  backend, static=False, taped=return_tape)
    xp = api._xp(out_fw)
    B, T = (out_fw.shape[1], out_fw.shape[0]) if time_major else out_fw.shape[:2]
    lengths = None if sequence_length is None else check.lengths(
        "sequence_length", sequence_length, xp, B, T, like="inputs")
    x = xp.asarray(inputs)  # checked by the forward direction's run above
    out_r, st_bw, tape_bw = _run(cell_bw, _reverse_sequence(x, lengths, time_major),
                                 initial_state_bw, lengths, time_major, backend, static=False,
                                 taped=return_tape)
    outputs = (out_fw, _reverse_sequence(out_r, lengths, time_major))
    if not return_tape:
        return outputs, (st_fw, st_bw)
    return outputs, (st_fw, st_bw), BidirectionalTape(tape_fw, tape_bw, lengths, time_major)

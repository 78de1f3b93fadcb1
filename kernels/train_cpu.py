"""Numba kernels for the rest of a classifier training step on the CPU, and the step itself.

What they compute (the math of ``fastrnn/reference.py``):
    dense + sparse softmax cross-entropy (mean over the batch) + accuracy, and their gradients:
        logits = h W^T + b,  loss = mean(logsumexp(logits) - logits[label]),
        dlogits = (softmax(logits) - onehot) / B,
        dh = dlogits W,  dW = dlogits^T h,  db = sum dlogits
    Adam over one flat buffer (bias-corrected, eps added to sqrt(v_hat), as the reference).
    The global gradient norm ``sqrt(sum g*g)`` (squares summed in float64, in a fixed order;
    reported in the parameters' dtype), and, when ``clip_norm > 0``, every gradient scaled by
    ``clip_norm / max(norm, clip_norm)`` before Adam (``fastrnn.reference.clip_by_global_norm``).
    A step whose loss or norm is not finite (in the parameters' dtype) writes nothing; one whose
    update makes a parameter or moment NaN or inf puts back a copy: params, m and v keep their
    bits either way.
    ``ClassifierStep``: the whole training step of an L-layer RNN classifier on the flat
    parameter layout (per layer w_ih [H,I_k], w_hh [H,H], b [H]; then w_out [C,H], b_out [C]),
    given as element offsets by the caller (this package does not import fastrnn).

Shapes: h [B,H], w [C,H], b [C], labels [B] int64, logits/dlogits [B,C]; flat buffers params, m,
v, grad [P] (must not alias each other). x [B,T,I] batch-major, C-contiguous (read in place
through a time-major view).

Launch shape: one Numba call per training step (``step_kernel``; also per predict/evaluate with
``train=False``): a serial weight pack (~1 us), then ONE ``prange`` over chunks of
``rnn_cpu.chunk_rows(B)`` batch rows (32 for the showcase), each chunk running its rows through
every layer forward, the head, and every layer backward (``_chunk_step``, called by address; its
rows stay in L1/L2, and it writes only its own rows and its own partial gradients), then a serial
tail: the chunks' partials summed in chunk order (a tile's lanes at a time) and the float64 sum of
their squares (``_reduce``), then the finiteness check, the clipping factor and Adam (``_adam_all``,
after a copy of params, m and v: if a new value is not finite, the copy is put back). Adam is
serial and bound by its division and square root (2,180 parameters at the showcase): a separate
check pass before it made the showcase step ~1.3x slower in alternating runs; the copy (26 KB
there) made no difference measurable on this noisy 2-vCPU machine.
The tail is serial: an OpenMP launch costs ~1.3 us, but a second ``prange`` in ``step_kernel``
adds ~5 s to its compile, and a tried version that ran the tail as two more launches of the one
parallel body was no faster on this 2-vCPU VM (its partials come from both cores' caches).
Chunking depends on B only: results are bitwise identical run to run and for 1 or any number of
threads (``test_train_step_bitwise_reproducible``).

Check: ``pytest tests/test_kernels_cpu.py``. Time: ``pytest bench/ --benchmark-only -k mnist``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, typeof, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import rnn_cpu
from ._numba_env import JIT_OPTIONS, ParallelKernel, compile_in_two_processes


@njit(**JIT_OPTIONS)
def _head_rows(h, wt, wp, b, labels, batch, logits, dlogits, dh, dw, db, want_grad, lo, hi):
    """Rows ``lo:hi`` of dense + softmax-xent; returns ``(sum of row losses (float64), correct)``.

    h [B,HP] (columns >= H zero)   wt [H,CP] = W^T zero-padded to CP = padded(C) columns
    wp [C,HP] = W zero-padded   b [C]   labels [B]; writes logits [B,CP] (columns >= C: 0) and, if
    ``want_grad``, dlogits [B,CP] (columns < C), dh [B,HP], and *this row range's* dw [C,HP] and
    db [C] (overwritten, not accumulated). The gradients are of the mean loss over ``batch``
    rows (B, or the global batch of a data-parallel step, whose other rows are elsewhere).
    The three products run on the register tiles of ``rnn_cpu`` (scalar dot products here
    were 15% of the whole showcase step).
    """
    H, C = wt.shape[0], b.shape[0]
    HP = dh.shape[1]
    inv_b = 1.0 / batch
    for b0 in range(lo, hi, rnn_cpu.ROWS):
        rnn_cpu._vecmat(h, b0, hi - 1, wt, H, logits)
    loss = 0.0
    correct = 0
    for r in range(lo, hi):
        best = 0
        for c in range(C):
            s = logits[r, c] + b[c]
            logits[r, c] = s
            if s > logits[r, best]:
                best = c
        lab = labels[r]
        if best == lab:
            correct += 1
        mx = logits[r, best]
        z = 0.0
        for c in range(C):  # one exp per logit: e_c kept in dlogits until z is known
            e_c = math.exp(logits[r, c] - mx)
            z += e_c
            if want_grad:
                dlogits[r, c] = e_c
        loss += math.log(z) - (logits[r, lab] - mx)
        if want_grad:
            s_b = inv_b / z
            for c in range(C):
                dlogits[r, c] = dlogits[r, c] * s_b - (inv_b if c == lab else 0.0)
    if want_grad:
        for b0 in range(lo, hi, rnn_cpu.ROWS):
            rnn_cpu._vecmat(dlogits, b0, hi - 1, wp, C, dh)
        for c in range(C):
            s = db.dtype.type(0)
            for r in range(lo, hi):
                s += dlogits[r, c]
            db[c] = s
            for j0 in range(0, HP, rnn_cpu.LANES):
                acc = rnn_cpu._zero(dw)
                for r in range(lo, hi):
                    acc = rnn_cpu._fma_at(acc, dlogits[r, c], h[r], j0)
                rnn_cpu._store_at(dw[c], j0, acc)
    return loss, correct


@njit(**JIT_OPTIONS)
def dense_xent_kernel(h, wt, wp, b, labels, logits, dlogits, dh, dw, db, want_grad):
    """Dense + softmax cross-entropy (+ gradients if ``want_grad``); returns ``(loss, correct)``.

    Arguments as :func:`_head_rows` (padded), all rows. ``loss`` is the batch mean (float64),
    ``correct`` a count.
    """
    B = labels.shape[0]
    loss, correct = _head_rows(h, wt, wp, b, labels, B, logits, dlogits, dh, dw, db, want_grad, 0,
                               B)
    return loss / labels.shape[0], correct


@njit(inline="always")
def _adam1(param, m, v, i, g, b1, b2, one, c1, c2, a, e, s):
    """Adam on element ``i`` given its gradient ``g``, first scaled by ``s`` (the clipping
    factor in the buffers' dtype; ``g * 1`` is exact, so no clipping changes no bit). Returns 0
    if the new values are all finite, else NaN (``x * 0`` is NaN for inf and NaN: no branch)."""
    g = g * s
    mi = b1 * m[i] + (one - b1) * g
    vi = b2 * v[i] + (one - b2) * g * g
    pi = param[i] - a * (mi / c1) / (np.sqrt(vi / c2) + e)
    m[i] = mi
    v[i] = vi
    param[i] = pi
    zero = one - one
    return pi * zero + mi * zero + vi * zero


@njit(**JIT_OPTIONS)
def adam_kernel(param, grad, m, v, step, lr, beta1, beta2, eps, scale):
    """Adam in place on ``param``, ``m``, ``v`` [P] given ``grad`` [P], each gradient first
    multiplied by ``scale``; ``step`` is 1-based. Returns whether every new value is finite.

    Arithmetic in the buffers' dtype, like the reference (scalars rounded to it first).
    """
    f = param.dtype.type
    b1, b2, one, a, e, s = f(beta1), f(beta2), f(1), f(lr), f(eps), f(scale)
    c1, c2 = f(1 - beta1 ** step), f(1 - beta2 ** step)
    bad = f(0)  # stays 0 while every new value is finite, NaN after
    for i in range(param.shape[0]):
        bad += _adam1(param, m, v, i, grad[i], b1, b2, one, c1, c2, a, e, s)
    return bad == 0


@njit(**JIT_OPTIONS)
def sum_squares(a):
    """``sum(a*a)`` in float64, in index order (1-D ``a``)."""
    total = 0.0
    for i in range(a.shape[0]):
        g = np.float64(a[i])
        total += g * g
    return total


@njit(inline="always")
def _sq8(q, a):
    """``q + a*a`` lane by lane in float64; q 8 float64, a 8 of the gradients' dtype."""
    a0, a1, a2, a3 = np.float64(a[0]), np.float64(a[1]), np.float64(a[2]), np.float64(a[3])
    a4, a5, a6, a7 = np.float64(a[4]), np.float64(a[5]), np.float64(a[6]), np.float64(a[7])
    return (q[0] + a0 * a0, q[1] + a1 * a1, q[2] + a2 * a2, q[3] + a3 * a3,
            q[4] + a4 * a4, q[5] + a5 * a5, q[6] + a6 * a6, q[7] + a7 * a7)


@njit(**JIT_OPTIONS)
def _reduce_rows(p):
    """``p[0, :] = p[0] + p[1] + ... + p[n-1]`` in that order; p [n, HP], HP a multiple of 32."""
    for j0 in range(0, p.shape[1], rnn_cpu.LANES):
        acc = rnn_cpu._load_at(p[0], j0)
        for c in range(1, p.shape[0]):
            acc = rnn_cpu._add_at(acc, p[c], j0)
        rnn_cpu._store_at(p[0], j0, acc)


@njit(inline="always")
def _sq32(q, v):
    """``q + v[:32]**2`` lane by lane in float64 (q: 4 8-tuples of float64)."""
    return (_sq8(q[0], v[0:8]), _sq8(q[1], v[8:16]), _sq8(q[2], v[16:24]),
            _sq8(q[3], v[24:32]))


@njit(**JIT_OPTIONS)
def pack_kernel(params, layout, o_w, H, wih_t, whh_t, bias, wih_p, whh_p, wout_t, wout_p):
    """Copy every weight matrix from the flat buffer into the padded forms the kernels want.

    layout [L,4] int64: (offset of w_ih, of w_hh, of b, input size I_k) per layer; o_w the offset
    of w_out [C,H]. wih_t [L,Imax,HP], whh_t [L,H,HP], bias [L,HP], wih_p [L,H,IPmax],
    whh_p [L,H,HP], wout_t [H,CP], wout_p [C,HP]; padding columns are never written (zero from
    allocation).
    """
    for c in range(wout_p.shape[0]):
        for j in range(H):
            w = params[o_w + c * H + j]
            wout_t[j, c] = w
            wout_p[c, j] = w
    for k in range(layout.shape[0]):
        o_ih, o_hh, o_b, I = layout[k, 0], layout[k, 1], layout[k, 2], layout[k, 3]
        for j in range(H):
            bias[k, j] = params[o_b + j]
            for i in range(I):
                w = params[o_ih + j * I + i]
                wih_t[k, i, j] = w
                wih_p[k, j, i] = w
            for i in range(H):
                w = params[o_hh + j * H + i]
                whh_t[k, i, j] = w
                whh_p[k, j, i] = w


@njit(**JIT_OPTIONS)
def _chunk_step(c, args):
    """Chunk ``c`` of this process's rows in :func:`step_kernel`: its rows through every layer
    forward, the head, and (if ``train``) every layer backward, into its own partial gradients
    ``part_*[p]``, ``chunk_loss[p]``, ``chunk_correct[p]`` with ``p = dist[1] + c`` (its number
    in the global batch of ``dist[0]`` rows, which sets the chunk size)."""
    (xs, labels, layout, train, relu, b_out, wih_t, whh_t, bias, wih_p, whh_p, wout_t, wout_p, ys,
     h_n, hbuf, h0, dh_top, dxy, dh0, dhbuf, dz, part_ih, part_hh, part_b, part_w, part_bo,
     logits, dlogits, lengths, chunk_loss, chunk_correct, dist) = args
    L = layout.shape[0]
    H = h_n.shape[2]
    rows = rnn_cpu.chunk_rows(dist[0])
    lo = c * rows
    hi = min(xs.shape[1], lo + rows)
    p = dist[1] + c
    for k in range(L):
        inp = xs if k == 0 else ys[k - 1, :, :, :H]
        rnn_cpu._forward_chunk(inp, h0, wih_t[k], whh_t[k], bias[k], lengths, ys[k], h_n[k],
                               hbuf, lo, hi, relu)
    # the top layer's last output is its final state (the classifier runs every row T steps)
    loss, correct = _head_rows(ys[L - 1, xs.shape[0] - 1], wout_t, wout_p, b_out, labels,
                               dist[0], logits, dlogits, dh_top, part_w[p], part_bo[p], train, lo,
                               hi)
    chunk_loss[p] = loss
    chunk_correct[p] = correct
    if train:
        for k in range(L - 1, -1, -1):
            inp = xs if k == 0 else ys[k - 1, :, :, :H]
            # dy: the layer above's dx, or (top layer) dxy[2], which stays zero
            rnn_cpu._backward_chunk(dxy[2] if k == L - 1 else dxy[(k + 1) & 1],
                                    dh_top if k == L - 1 else h0, whh_p[k], ys[k], lengths,
                                    dh0, dhbuf, dz, lo, hi, relu)
            if k > 0:
                rnn_cpu._dx_chunk(dz, wih_p[k], dxy[k & 1], lo, hi)
            rnn_cpu._weight_grads_chunk(inp, h0, ys[k], dz, part_ih[p, k], part_hh[p, k],
                                        part_b[p, k], lo, hi)


@njit(**JIT_OPTIONS)
def _reduce(layout, part_ih, part_hh, part_b, part_w, part_bo):
    """Sum the chunks' partial gradients into chunk 0's, in chunk order; return the sum of the
    squares of every gradient, in float64 and in a fixed order (32 lanes, each summing its
    column of every row in row order, then the lanes in order, then the dense bias)."""
    L = layout.shape[0]
    nc, H = part_hh.shape[0], part_hh.shape[2]
    C = part_bo.shape[1]
    HP = part_hh.shape[3]
    # Serial (see the module docstring): ~14 us for the showcase on one layer.
    # 1) rnn_cpu.LANES lanes at a time (each lane its own chain: ~NC*4 cycles per row instead
    #    of per element); the squares below keep 32 lanes on every target, so the norm's
    #    summation order (and its bits) does not depend on the tile
    n_ih = part_ih.shape[2]
    n_row = n_ih + H + 1
    for r in range(L * n_row + C):
        if r < L * n_row:
            k, i = r // n_row, r % n_row
            if i < n_ih:
                if i < layout[k, 3]:
                    _reduce_rows(part_ih[:, k, i])
            elif i < n_ih + H:
                _reduce_rows(part_hh[:, k, i - n_ih])
            else:
                _reduce_rows(part_b[:, k])
        else:
            _reduce_rows(part_w[:, r - L * n_row])
    # 2) the squares of the sums: a second pass over chunk 0's contiguous rows, still in L1
    #    (~0.2 us for the showcase; folded into pass 1, whose strided views compile to
    #    gathers, they cost 4 us)
    z = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    q = (z, z, z, z)  # the 32 lanes of the sum of squares
    for j0 in range(0, HP, rnn_cpu.BLOCK):
        for r in range(L * n_row + C):  # the rows of pass 1, in order; one inlined _sq32
            if r < L * n_row:
                k, i = r // n_row, r % n_row
                if i < n_ih:
                    if i >= layout[k, 3]:
                        continue
                    row = part_ih[0, k, i]
                elif i < n_ih + H:
                    row = part_hh[0, k, i - n_ih]
                else:
                    row = part_b[0, k]
            else:
                row = part_w[0, r - L * n_row]
            q = _sq32(q, row[j0:j0 + 32])
    total = 0.0
    for a in q:
        for lane in a:
            total += lane
    for cl in range(C):
        for cc in range(1, nc):
            part_bo[0, cl] += part_bo[cc, cl]
        g = np.float64(part_bo[0, cl])
        total += g * g
    return total


@njit(**JIT_OPTIONS)
def _adam_all(params, m, v, layout, out_offsets, hyper, step, scale, part_ih, part_hh, part_b,
              part_w, part_bo):
    """Adam on every parameter from the reduced gradients (chunk 0's partials), each first
    multiplied by ``scale``; one gradient row per iteration: (layer k, unit j) -> w_ih[j,:],
    w_hh[j,:], b[j]; the last iteration is the dense head (w_out, b_out). Returns whether every
    new parameter and moment is finite."""
    L = layout.shape[0]
    H = part_hh.shape[2]
    C = part_bo.shape[1]
    o_w, o_b = out_offsets[0], out_offsets[1]
    f = params.dtype.type
    lr, beta1, beta2, eps = hyper[0], hyper[1], hyper[2], hyper[3]
    b1, b2, one, a, e, s = f(beta1), f(beta2), f(1), f(lr), f(eps), f(scale)
    c1, c2 = f(1 - beta1 ** step), f(1 - beta2 ** step)
    bad = f(0)  # stays 0 while every new value is finite, NaN after
    for r in range(L * H + 1):
        if r < L * H:
            k, j = r // H, r % H
            o_ih, o_hh, o_bk, I = layout[k, 0], layout[k, 1], layout[k, 2], layout[k, 3]
            for i in range(I):
                bad += _adam1(params, m, v, o_ih + j * I + i, part_ih[0, k, i, j], b1, b2, one,
                              c1, c2, a, e, s)
            for i in range(H):
                bad += _adam1(params, m, v, o_hh + j * H + i, part_hh[0, k, i, j], b1, b2, one,
                              c1, c2, a, e, s)
            bad += _adam1(params, m, v, o_bk + j, part_b[0, k, j], b1, b2, one, c1, c2, a, e, s)
        else:
            for cl in range(C):
                for j in range(H):
                    bad += _adam1(params, m, v, o_w + cl * H + j, part_w[0, cl, j], b1, b2, one,
                                  c1, c2, a, e, s)
                bad += _adam1(params, m, v, o_b + cl, part_bo[0, cl], b1, b2, one, c1, c2, a, e,
                              s)
    return bad == 0


@intrinsic
def _call_at(typingctx, address, c, args):
    """``f(c, args)`` for the Numba function ``f`` whose machine code starts at ``address``
    (``int64``; :func:`address_of`), compiled for exactly ``(typeof(c), typeof(args))`` and
    returning nothing. Numba links a callee's code into every caller and re-optimises it there;
    a call by address keeps ``f``'s code out of the caller (see ``step_kernel``)."""
    argtypes = (c, args)

    def codegen(context, builder, signature, llargs):
        fnty = context.call_conv.get_function_type(types.none, argtypes)
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtypes,
                                                    llargs[1:])
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.none(address, c, args), codegen


def address_of(dispatcher, argtypes: tuple) -> int:
    """Address of ``dispatcher``'s machine code for ``argtypes`` (compiled or loaded now)."""
    dispatcher.compile(argtypes)
    cres = dispatcher.overloads[tuple(argtypes)]
    return cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)


#: ``step_kernel``'s ``phase``: this process's chunks (pack, forward, head, BPTT into their
#: partials), the tail (sum of the partials, norm, clipping, Adam), or both: a data-parallel
#: step gathers every process's partials between its two calls
CHUNKS, TAIL, WHOLE = 1, 2, 3


@ParallelKernel
def step_kernel(params, m, v, saved, out_offsets, hyper, step, phase, chunk_step, args):
    """The whole classifier step in one call: forward, head, and if ``train`` BPTT, the
    gradient norm, clipping and Adam; or one of its two halves (``phase``: :data:`CHUNKS`,
    :data:`TAIL`, :data:`WHOLE`).

    params, m, v [P] (updated in place if ``train``, the loss and gradient norm are finite and
    so is every new value; otherwise left with their bits; must not alias each other)
    saved [3,P] workspace: params, m, v before the update, put back if it overflowed
    out_offsets [2] int64 (w_out, b_out)   hyper [5] float64 (lr, beta1, beta2, eps,
    clip_norm; clip_norm 0 = no clipping)   step >= 1
    chunk_step: ``address_of(_chunk_step, (int64, typeof(args)))``
    args: the tuple :func:`_chunk_step` takes: xs [T,B,I] (a time-major view of the batch-major
    x), labels [B] int64, layout [L,4] int64, train, relu (the layers' f: relu, else tanh),
    b_out = params[out_offsets[1]:][:C], then
    the workspaces (see ``ClassifierStep``): ys [L,T,B,HP] per-layer outputs, dxy [3,T,B,HP],
    part_* [NC,...] per-chunk partial gradients, chunk_loss [NC] float64, chunk_correct [NC],
    dist [2] int64: (global batch B_g, number of this process's first chunk); NC =
    num_chunks(B_g). One process: B_g = B, first chunk 0. Data-parallel: this process holds
    rows of chunks ``dist[1]:dist[1] + B/chunk_rows(B_g)`` of the global batch and writes only
    their entries; the tail reads all NC.
    Returns ``(sum of row losses, correct count, gradient norm, applied)`` over the global
    batch (zeros after :data:`CHUNKS` alone), the norm rounded to the parameters' dtype (0 unless
    ``train``), ``applied`` whether params, m, v were updated; logits are left in ``logits``
    [B,CP] (columns < C).

    Launch: 1 serial pack, 1 prange over this process's chunks of chunk_rows(B_g) rows
    (:func:`_chunk_step`, called by address, so this kernel's compile neither waits for nor
    re-emits the chunk code), then the serial :func:`_reduce` and :func:`_adam_all`. Chunking
    depends on B_g only: results are bitwise identical for any thread count, and for any
    split of the chunks among processes.
    """
    (xs, labels, layout, train, relu, b_out, wih_t, whh_t, bias, wih_p, whh_p, wout_t, wout_p, ys,
     h_n, hbuf, h0, dh_top, dxy, dh0, dhbuf, dz, part_ih, part_hh, part_b, part_w, part_bo,
     logits, dlogits, lengths, chunk_loss, chunk_correct, dist) = args
    B = dist[0]
    H = h_n.shape[2]
    if phase & CHUNKS:
        pack_kernel(params, layout, out_offsets[0], H, wih_t, whh_t, bias, wih_p, whh_p,
                    wout_t, wout_p)
        rows = rnn_cpu.chunk_rows(B)
        for c in prange((xs.shape[1] + rows - 1) // rows):
            _call_at(chunk_step, np.int64(c), args)  # the parallel body sees c as uint64
    loss = 0.0
    correct = 0
    norm = 0.0
    applied = False
    if not phase & TAIL:
        return loss, correct, norm, applied
    for c in range(chunk_loss.shape[0]):
        loss += chunk_loss[c]
        correct += chunk_correct[c]
    if train:
        exact = math.sqrt(_reduce(layout, part_ih, part_hh, part_b, part_w, part_bo))
        # NaN or inf anywhere in the batch or the weights reaches the loss or the norm (a NaN
        # gradient makes the sum NaN; float64 squares of finite gradients do not overflow).
        # Both are judged, and the norm reported, in the parameters' dtype, as the reference
        # and the CUDA kernel report them: float32 gradients whose norm passes 3.4e38 refuse too
        f = params.dtype.type
        norm = np.float64(f(exact))
        if math.isfinite(f(loss / B)) and math.isfinite(norm):
            clip = hyper[4]
            scale = clip / max(exact, clip) if clip > 0 else 1.0  # exactly 1 if norm <= clip
            saved[0, :] = params
            saved[1, :] = m
            saved[2, :] = v
            applied = _adam_all(params, m, v, layout, out_offsets, hyper, step, scale, part_ih,
                                part_hh, part_b, part_w, part_bo)
            if not applied:  # an overflowing update: every bit back as it was
                params[:] = saved[0]
                m[:] = saved[1]
                v[:] = saved[2]
    return loss, correct, norm, applied


def _compile_halves(params, m, v, saved, out_offsets, hyper, step, phase, chunk_step, args):
    """The kernels of one training step, typed as :func:`step_kernel` calls them with these
    arguments, in two halves for ``compile_in_two_processes``: ``(here, there)``, ~7-8 s of cold
    compile each (2-vCPU machine of the README, float32); ``_chunk_step`` comes after both.
    ``tests/test_kernels_cpu.py`` checks the types."""
    (xs, labels, layout, train, relu, b_out, wih_t, whh_t, bias, wih_p, whh_p, wout_t, wout_p, ys,
     h_n, hbuf, h0, dh_top, dxy, dh0, dhbuf, dz, part_ih, part_hh, part_b, part_w, part_bo,
     logits, dlogits, lengths, chunk_loss, chunk_correct, dist) = args
    H = h_n.shape[2]
    here = [  # pack_kernel first: a cheap probe of the cache (same source file as step_kernel);
        # then step_kernel's other callees, cached before the helper needs them for step_kernel
        (pack_kernel, (params, layout, 0, H, wih_t, whh_t, bias, wih_p, whh_p, wout_t, wout_p)),
        (_reduce, (layout, part_ih, part_hh, part_b, part_w, part_bo)),
        (_adam_all, (params, m, v, layout, out_offsets, hyper, step, 1.0, part_ih, part_hh,
                     part_b, part_w, part_bo)),
        (_head_rows, (ys[0, 0], wout_t, wout_p, b_out, labels, dist[0], logits, dlogits,
                      dh_top, part_w[0], part_bo[0], train, 0, 0)),
        (rnn_cpu._backward_chunk, (dxy[2], dh_top, whh_p[0], ys[0], lengths, dh0, dhbuf, dz, 0,
                                   0, relu)),
        (rnn_cpu._dx_chunk, (dz, wih_p[0], dxy[0], 0, 0)),
        (rnn_cpu._weight_grads_chunk, (xs, h0, ys[0], dz, part_ih[0, 0], part_hh[0, 0],
                                       part_b[0, 0], 0, 0)),
    ]
    there = [
        (rnn_cpu._forward_chunk, (xs, h0, wih_t[0], whh_t[0], bias[0], lengths, ys[0], h_n[0],
                                  hbuf, 0, 0, relu)),
        (step_kernel.parallel, (params, m, v, saved, out_offsets, hyper, step, phase,
                                chunk_step, args)),
    ]
    return ([(f, tuple(map(typeof, a))) for f, a in here],
            [(f, tuple(map(typeof, a))) for f, a in there])


def _padded_head(h: np.ndarray, w: np.ndarray):
    """``(h [B,HP], W^T [H,CP], W [C,HP])`` zero-padded, as :func:`_head_rows` reads them."""
    (B, H), C = h.shape, w.shape[0]
    HP, CP = rnn_cpu.padded(H), rnn_cpu.padded(C)
    h_p, wt, wp = np.zeros((B, HP), h.dtype), np.zeros((H, CP), h.dtype), np.zeros((C, HP), h.dtype)
    h_p[:, :H], wt[:, :C], wp[:, :H] = h, w.T, w
    return h_p, wt, wp


def dense_forward(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``logits [B,C] = h [B,H] @ w[C,H]^T + b [C]``, as ``fastrnn.reference.dense_forward``."""
    B, C = h.shape[0], w.shape[0]
    h_p, wt, wp = _padded_head(h, w)
    logits = np.empty((B, wt.shape[1]), h.dtype)
    dense_xent_kernel(h_p, wt, wp, b, np.zeros(B, np.int64), logits, logits, h_p, wp, b, False)
    return logits[:, :C].copy()


def dense_xent(h: np.ndarray, w: np.ndarray, b: np.ndarray, labels: np.ndarray):
    """Dense, softmax cross-entropy and all their gradients in one call.

    Returns ``loss, acc, logits [B,C], dlogits [B,C], dh [B,H], dw [C,H], db [C]`` (the reference's
    ``dense_forward`` + ``softmax_xent`` + ``dense_backward``).
    """
    (B, H), C = h.shape, w.shape[0]
    dt = h.dtype
    h_p, wt, wp = _padded_head(h, w)
    logits, dlogits = np.empty((B, wt.shape[1]), dt), np.empty((B, wt.shape[1]), dt)
    dh, dw, db = np.empty_like(h_p), np.empty_like(wp), np.empty(C, dt)
    loss, correct = dense_xent_kernel(h_p, wt, wp, b, labels, logits, dlogits, dh, dw, db, True)
    return (dt.type(loss), correct / B, logits[:, :C].copy(), dlogits[:, :C].copy(),
            dh[:, :H].copy(), dw[:, :H].copy(), db)


def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8) -> None:
    """Adam in place on 1-D ``param``, ``m``, ``v``; see :func:`fastrnn.reference.adam_update`."""
    adam_kernel(param, grad, m, v, step, lr, beta1, beta2, eps, 1.0)


def _fixed_type(a: np.ndarray, dtype) -> bool:
    """``a`` is a C-contiguous writable array of ``dtype`` (one Numba type per dtype and rank)."""
    return a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable


class ClassifierStep:
    """Workspaces for one classifier shape at one (batch, steps), reused every step; each
    operation is one call of :func:`step_kernel`.

    Parameters
    ----------
    layout : [L,4] int64 per layer (offset of w_ih, of w_hh, of b, input size I_k)
    out_offsets : (offset of w_out [C,H], offset of b_out [C])
    hidden_size, num_classes, num_params, batch, steps : sizes (``batch``: this process's rows)
    dtype : float32 or float64
    shard : ``(global batch, first chunk)`` for one process's share of a data-parallel step:
        its ``batch`` rows are chunks ``first chunk, ...`` of the global batch (a whole number
        of ``rnn_cpu.chunk_rows(global batch)``); None: the whole batch is here
    relu : the layers' nonlinearity is relu (else tanh)
    """

    def __init__(self, layout, out_offsets, hidden_size: int, num_classes: int, num_params: int,
                 batch: int, steps: int, dtype, shard: tuple[int, int] | None = None, *,
                 relu: bool = False):
        self.relu = bool(relu)
        self.layout = np.ascontiguousarray(layout, dtype=np.int64)
        L = self.layout.shape[0]
        H, C, B, T = hidden_size, num_classes, batch, steps
        self.out_offsets = np.array(out_offsets, np.int64)
        dt = self.dtype = np.dtype(dtype)
        HP = rnn_cpu.padded(H)
        imax = int(self.layout[:, 3].max())
        ipmax = rnn_cpu.padded(imax)
        self.dist = np.array(shard or (B, 0), np.int64)
        nc = rnn_cpu.num_chunks(int(self.dist[0]))
        CP = rnn_cpu.padded(C)
        self.num_classes = C
        z = np.zeros
        self.ws = (
            z((L, imax, HP), dt), z((L, H, HP), dt), z((L, HP), dt),   # wih_t, whh_t, bias
            z((L, H, ipmax), dt), z((L, H, HP), dt),                   # wih_p, whh_p
            z((H, CP), dt), z((C, HP), dt),                            # wout_t, wout_p
            z((L, T, B, HP), dt),       # ys: each layer's output, time-major, padded rows
            z((L, B, H), dt),           # h_n
            z((2, B, HP), dt),          # hbuf
            z((B, H), dt),              # h0: zero initial state / zero dh_n below the top
            z((B, HP), dt),             # dh_top
            z((3, T, B, HP), dt),       # dxy: dx of layer k = dy of layer k-1, alternating;
                                        # dxy[2] stays zero (the top layer's dy)
            z((B, H), dt),              # dh0
            z((2, B, HP), dt),          # dhbuf
            z((T, B, HP), dt),          # dz (padding columns stay zero)
            z((nc, L, imax, HP), dt),   # part_ih
            z((nc, L, H, HP), dt),      # part_hh
            z((nc, L, HP), dt),         # part_b
            z((nc, C, HP), dt),         # part_w (padded rows: reduced 32 lanes at a time)
            z((nc, C), dt),             # part_bo
        )
        self.logits = z((B, CP), dt)
        self.ws_tail = (self.logits, z((B, CP), dt), np.full(B, T, np.int32), z(nc, np.float64),
                        z(nc, np.int64), self.dist)
        #: what each process computes its own chunks of (rows ``[NC, ...]``, chunk order): a
        #: data-parallel step gathers them between its two halves
        self.partials = self.ws[-5:] + self.ws_tail[3:5]
        self.hyper = np.zeros(5, np.float64)
        self.saved = z((3, num_params), dt)  # params, m, v before an update (step_kernel)
        self.no_labels = z(B, np.int64)
        self._chunk_step = None  # its address (step_kernel's argument), once compiled

    def _run(self, params, m, v, step, x, labels, train, gather=None):
        # every element of chunk_args has one Numba type per instance, so one _chunk_step
        # address serves every call (a call with another type would read garbage): x and labels
        # are copied into that type when needed; params is updated in place, so it must have it
        if not _fixed_type(params, self.dtype):
            raise ValueError(f"params: expected a writable C-contiguous array of {self.dtype}, "
                             f"got dtype {params.dtype}, C-contiguous "
                             f"{params.flags.c_contiguous}, writable {params.flags.writeable}")
        x = x if _fixed_type(x, self.dtype) else np.array(x, self.dtype, order="C")
        labels = labels if _fixed_type(labels, np.int64) else np.array(labels, np.int64, order="C")
        o_b = self.out_offsets[1]
        chunk_args = (x.swapaxes(0, 1), labels, self.layout, train, self.relu,
                      params[o_b:o_b + self.num_classes], *self.ws, *self.ws_tail)
        if self._chunk_step is None:  # on a cold cache: compile the kernels on two cores
            args = (params, m, v, self.saved, self.out_offsets, self.hyper, step, WHOLE, 0,
                    chunk_args)
            compile_in_two_processes(*_compile_halves(*args))
            self._chunk_step = address_of(_chunk_step, (types.int64, typeof(chunk_args)))
        if gather is not None:  # data-parallel: this process's chunks, every process's partials
            step_kernel(params, m, v, self.saved, self.out_offsets, self.hyper, step, CHUNKS,
                        self._chunk_step, chunk_args)
            gather(self.partials)
        loss, correct, norm, applied = step_kernel(
            params, m, v, self.saved, self.out_offsets, self.hyper, step,
            WHOLE if gather is None else TAIL, self._chunk_step, chunk_args)
        B = int(self.dist[0])
        return loss / B, correct / B, norm, applied

    def train_step(self, params, m, v, step, x, labels, lr, beta1, beta2, eps, clip_norm,
                   gather=None):
        """Forward, xent, BPTT, dense grads, clipping (``clip_norm`` > 0) and Adam; updates
        params, m, v unless the loss, the gradient norm or a new value is not finite; returns
        ``(loss, acc, grad_norm, applied)`` of the global batch.

        ``gather(arrays)``, for a data-parallel step (``shard``): fill in place, in every
        process, the rows of :attr:`partials` that the other processes computed (each array's
        rows in chunk order, each process's rows contiguous: an MPI all-gather in place)."""
        self.hyper[:] = (lr, beta1, beta2, eps, clip_norm)
        return self._run(params, m, v, step, x, labels, True, gather)

    def predict(self, params, x):
        """Logits [B,C] (a fresh array)."""
        self._run(params, params, params, 1, x, self.no_labels, False)
        return self.logits[:, :self.num_classes].copy()

    def evaluate(self, params, x, labels):
        """(loss, acc) without updating anything."""
        return self._run(params, params, params, 1, x, labels, False)[:2]

"""The operations the model is written against, in two numerics: `NATIVE` and `EXACT`.

NATIVE is XLA's float32 arithmetic: fast, but its bits depend on the instruction set, the thread
count and the backend, so a file decodes only where the encoder's floats are reproduced.

EXACT computes every value that reaches the coder or the parameters from integers (intmath.py):
float32 arrays only carry integers times powers of two between these primitives, each a
`jax.custom_vjp` whose forward and backward are integer computations. `jax.grad` composes them;
what it adds itself (cotangents of reshapes, slices and concatenations, and sums of two
cotangents) is exact or a single IEEE add. Every reduction is an integer sum or a max.

Why each primitive gives the same bits on every machine, and how close it is to the float one:
- dense: x per row and the kernel per column are rounded to integers (16 and 8 bits) sharing a
  power-of-two scale; their product is an exact integer dot. Backward: the same with the
  gradient per row (dx) and x, gradient per column (dkernel).
- layer_norm: mean and variance are integer sums; 1/sqrt(var + eps) comes from the fixed-point
  log2 and exp2 tables; the products are integer products of 15-bit values.
- attention: integer dot products give the scores in fixed point (log2 units); 2**s comes from
  the exp2 table, the normalization is one integer division per row; probabilities (14 bits)
  times values is an integer dot, the values' scales folded into the probabilities.
- softmax and bits (bits_and_probs): logits in fixed point, 2**z from the table, the sum an
  integer sum, -log2 p from the log2 table; the coder is given the integer weights themselves.
- mix and mix_offsets: 16-bit weights times 16-bit fixed-point log-counts, an integer dot; the
  offsets' gradient is an integer dot over the bytes too, not a float sum of a broadcast.
- relu is exact in float; embedding gradients are 16-bit rows scatter-added as int32.
Row-wise quantization (a scale per position) keeps every position's result independent of the
other positions in the batch: a teacher-forced pass over a segment computes exactly what the
decoder computes one position at a time.
"""

from __future__ import annotations

import decimal
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from prequential import intmath as im

BITS_X = 8  # activations entering a matrix product, per row (or per column, for a weight gradient)
BITS_W = 8  # weights in a matrix product, per output column (per row, for the input gradient)
BITS_G = 8  # gradients entering a matrix product
BITS_QK = 8  # queries and keys
BITS_V = 8  # values
PROB_BITS = 14  # attention probabilities
SCORE_FRAC = im.LOG_FRAC  # attention scores and logits in fixed point, log2 units
LOGIT_FRAC = 12  # logits (natural units) enter the softmax in fixed point, |logit| < 256
LOG_COUNT_FRAC = 11  # ln(count + alpha) in fixed point, |value| < 16
LN_EPS = 1e-6

_MATMUL = (((1,), (0,)), ((), ()))  # (M, K) x (K, N)
_MATMUL_BT = (((1,), (1,)), ((), ()))  # (M, K) x (N, K)
_MATMUL_AT = (((0,), (0,)), ((), ()))  # (K, M) x (K, N)
_QK = (((3,), (3,)), ((0, 1), (0, 1)))  # bhqd, bhkd -> bhqk
_PV = (((3,), (2,)), ((0, 1), (0, 1)))  # bhqk, bhkd -> bhqd
_PT = (((2,), (2,)), ((0, 1), (0, 1)))  # bhqk, bhqd -> bhkd


def _dyadic(value: decimal.Decimal, bits: int) -> tuple[int, int]:
    """(m, e) with m * 2**e ~ value, m of `bits` bits: a constant as an integer multiplier."""
    e = math.floor(float(im.exact_log2(value))) - bits + 1
    return im.fixed(value, -e), e


@functools.cache
def _constant(name: str, bits: int) -> tuple[int, int]:
    """log2(e) or ln(2) as a multiplier of `bits` bits: logits and log-counts are in natural
    units, as in native numerics, and become log2 units (bits) where exp2 and log2 need them."""
    return _dyadic(1 / im._LN2 if name == "log2e" else im._LN2, bits)


def _shift(x: jnp.ndarray, e: jnp.ndarray, limit: int = 1 << 29) -> jnp.ndarray:
    """x * 2**e for int32 x and integer e of any sign (rounded), clipped to +-limit."""
    e = jnp.asarray(e, jnp.int32)
    left = jnp.minimum(jnp.maximum(e, 0), 30)
    bound = limit >> left
    grown = jnp.clip(x, -bound, bound) << left
    return jnp.clip(jnp.where(e >= 0, grown, im.round_shift(x, -e)), -limit, limit)


def _to_fixed(x: jnp.ndarray, frac_bits: int, limit: int = 1 << 29) -> jnp.ndarray:
    """round(x * 2**frac_bits) clipped to +-limit, as int32, for a carrier x (exact)."""
    return jnp.round(jnp.clip(x * float(2**frac_bits), -limit, limit)).astype(jnp.int32)


def _times_constant(x: jnp.ndarray, name: str) -> jnp.ndarray:
    """x * constant elementwise for a carrier x: a 15-bit by 15-bit integer product."""
    m, e = _constant(name, 15)
    q, s = im.quantize(x, 15, ())
    return im.scale(q * m, s + e)


def _ln_of_log2(log2_fixed: jnp.ndarray) -> jnp.ndarray:
    """ln(x) as a carrier from log2(x) in LOG_FRAC fractional bits (12 of them kept)."""
    m, e = _constant("ln2", 15)
    return im.scale((log2_fixed >> 4) * m, e - im.LOG_FRAC + 4)


# ---------------------------------------------------------------------------------------------
# Exact primitives
# ---------------------------------------------------------------------------------------------


class PreparedKernel(NamedTuple):
    """A kernel as the exact product reads it: 8-bit columns (int8) and their exponents.
    The decoder's steps through a segment all use the same parameters, so `Learner.prepare`
    makes these once per segment instead of once per step (most of a step's work otherwise)."""

    q: jnp.ndarray
    exponent: jnp.ndarray


def _prepare_kernel(kernel: jnp.ndarray) -> PreparedKernel:
    q, exponent = im.quantize(kernel, BITS_W, 0)
    return PreparedKernel(q.astype(jnp.int8), exponent)


def _dense_fwd(x, kernel, bias):
    rows = x.reshape(-1, x.shape[-1])
    xq, sx = im.quantize(rows, BITS_X, -1)
    prepared = kernel if isinstance(kernel, PreparedKernel) else _prepare_kernel(kernel)
    y = im.scale(im.int_dot(xq, BITS_X, prepared.q, BITS_W, _MATMUL), sx + prepared.exponent)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], prepared.q.shape[1]), (rows, kernel)


def _dense_bwd(res, dy):
    rows, kernel = res
    g = dy.reshape(-1, kernel.shape[1])
    gq, sg = im.quantize_stochastic(g, BITS_G, -1)
    wr, swr = im.quantize(kernel, BITS_W, 1)
    dx = im.scale(im.int_dot(gq, BITS_G, wr, BITS_W, _MATMUL_BT), sg + swr.T)
    xc, sxc = im.quantize(rows, BITS_X, 0)
    gc, sgc = im.quantize_stochastic(g, BITS_G, 0)
    dw = im.scale(im.int_dot(xc, BITS_X, gc, BITS_G, _MATMUL_AT), sxc.T + sgc)
    dbias = im.scale(im.small_sum(gc, 0), sgc[0])
    return dx.reshape(*dy.shape[:-1], rows.shape[1]), dw, dbias


@jax.custom_vjp
def _dense(x: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    """x @ kernel + bias: x per row and the kernel per column as 8-bit integers, an exact dot."""
    return _dense_fwd(x, kernel, bias)[0]


_dense.defvjp(_dense_fwd, _dense_bwd)


@jax.custom_vjp
def _linear(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """x @ kernel, as _dense without a bias."""
    return _dense_fwd(x, kernel, None)[0]


_linear.defvjp(lambda x, kernel: _dense_fwd(x, kernel, None), lambda res, dy: _dense_bwd(res, dy)[:2])


def _leading_sum(g: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """Exact sum of g over its leading axes, down to its last `ndim` axes."""
    axes = tuple(range(g.ndim - ndim))
    q, s = im.quantize(g, 16, axes)
    return im.scale(im.isum(q, axes), s.reshape(s.shape[len(axes) :]))


@jax.custom_vjp
def _add_broadcast(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """x + y, y broadcast over x's leading axes; its gradient is an exact sum."""
    return x + y


_add_broadcast.defvjp(lambda x, y: (x + y, y.ndim), lambda ndim, g: (g, _leading_sum(g, ndim)))


@functools.cache
def _log2_const(value) -> int:
    return im.fixed(im.exact_log2(value), im.LOG_FRAC)


def _rstd(var_sum: jnp.ndarray, exponent: jnp.ndarray, n: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """1 / sqrt(max(var_sum * 2**exponent / n, LN_EPS)) as (significand in [2**14, 2**15],
    exponent). (Native numerics add LN_EPS; the two differ only for rows of near-zero variance.)"""
    log_var = im.log2_of_carrier(jnp.maximum(var_sum, 1.0)) + (exponent << im.LOG_FRAC) - _log2_const(n)
    log_var = jnp.maximum(jnp.where(var_sum > 0, log_var, -(1 << 30)), _log2_const(decimal.Decimal(repr(LN_EPS))))
    significand, whole = im.exp2_parts(-(log_var >> 1))
    return im.round_shift(significand, 9), whole - 14


def _layer_norm_fwd(x, scale, bias):
    n = x.shape[-1]
    xq, sx = im.quantize(x, 16, -1)
    mean = jnp.floor_divide(2 * im.small_sum(xq, -1, keepdims=True) + n, 2 * n)
    centred = im.round_shift(xq - mean, 1)  # 15 bits, in units of 2**(sx + 1)
    coarse = im.round_shift(centred, 5)  # 10 bits: squares sum below 2**30
    rs, srs = _rstd(im.isum(coarse * coarse, -1)[..., None], 2 * (sx + 6), n)
    nq = im.round_shift(centred * rs, 15)  # the normalized row, 15 bits (rs is in [2**14, 2**15])
    sn = sx + 16 + srs
    gq, sg = im.quantize(scale, 15, None)
    return im.scale(nq * gq, sn + sg) + bias, (nq, sn, gq, sg, rs, srs)


def _layer_norm_bwd(res, dy):
    nq, sn, gq, sg, rs, srs = res
    n = dy.shape[-1]
    rows = tuple(range(dy.ndim - 1))
    dyc, sdyc = im.quantize(dy, 16, rows)
    nc, snc = im.quantize(im.scale(nq, sn), 16, rows)
    dscale = im.scale(im.isum(dyc * nc, rows), (sdyc + snc).reshape(-1))
    dbias = im.scale(im.isum(dyc, rows), sdyc.reshape(-1))
    dyq, sdy = im.quantize(dy, 16, -1)
    dnq = im.round_shift(dyq * gq, 14)  # d(normed) = dy * scale, 15 bits, in units of 2**sdn
    sdn = sdy + sg + 14
    mean = jnp.floor_divide(2 * im.small_sum(dnq, -1, keepdims=True) + n, 2 * n)
    # normed * mean(d(normed) * normed): the part of the gradient the normalization takes out
    pq, sp = im.quantize(im.isum(dnq * nq, -1)[..., None], 15, ())  # the sum, in units of 2**(sdn + sn)
    k = max(n - 1, 1).bit_length()
    per = jnp.floor_divide(pq << k, n)  # the mean, in units of 2**(sdn + sn + sp - k), below 2**16
    along = _shift((nq >> 1) * per, 1 + sp + 2 * sn - k)
    dxq, sdx = im.quantize(im.scale(dnq - mean - along, sdn), 15, -1)
    return im.scale(dxq * rs, sdx + srs), dscale, dbias


@jax.custom_vjp
def _layer_norm(x: jnp.ndarray, scale: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
    return _layer_norm_fwd(x, scale, bias)[0]


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def _normalize(e: jnp.ndarray, bits: int) -> jnp.ndarray:
    """e / sum(e) over the last axis in `bits` (<= 15) fractional bits, for int32 e >= 0 whose
    sum is below 2**31: the sum's top 15 bits, one integer division per row, integer products."""
    total = jnp.sum(e, -1, keepdims=True)
    sh = jnp.maximum(32 - jax.lax.clz(total) - 15, 0)
    r = jnp.floor_divide(1 << 29, jnp.maximum(total >> sh, 1))
    return im.round_shift((e >> sh) * r, 29 - bits)


@functools.cache
def _attention_constants(head_dim: int) -> tuple[tuple[int, int], tuple[int, int], int]:
    """The score scale log2(e) / sqrt(d) (scores are in log2 units) as an integer multiplier whose
    product with any 8-bit dot stays below 2**30; the gradient's factor ln(2) times that scale
    (1 / sqrt(d) up to rounding), 9 bits; and the shift that brings value dots to 15 bits."""
    dot_bits = (im.qmax(BITS_QK) ** 2 * head_dim).bit_length()
    if dot_bits > 24:  # the score dot is read back as an int32 from an exact float32 carrier
        raise ValueError(f"{BITS_QK}-bit queries and keys over {head_dim} dimensions overflow the exact score dot")
    log2e = 1 / im._LN2
    m, e = _dyadic(log2e / decimal.Decimal(head_dim).sqrt(), min(30 - dot_bits, 15))
    value_bits = (im.qmax(BITS_G) * im.qmax(BITS_V) * head_dim).bit_length()
    return (m, e), _dyadic(decimal.Decimal(m) * decimal.Decimal(2) ** e * im._LN2, 9), max(value_bits - 15, 0)


def _cache_entry(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Keys or values as the attention uses them: 8-bit integers with a scale per position
    (what a decoder's cache holds, so each position is quantized once). The integers are kept
    as float32, the type the exact dot reads: an int8 cache was converted at every step."""
    q, s = im.quantize(x, BITS_QK, -1)
    return q.astype(jnp.float32), s


def _attend(q, keys, values, mask):
    """The attention's forward from the quantized keys and values: (out, probabilities, the
    values' scales, their largest per query). Each query's row depends on nothing else."""
    (cm, ce), _, _ = _attention_constants(q.shape[-1])
    (kq, sk), (vq, sv) = keys, values
    mask = jnp.broadcast_to(mask, (*q.shape[:3], kq.shape[2]))
    qq, sq = im.quantize(q, BITS_QK, -1)
    dots = im.int_dot(qq, BITS_QK, kq, BITS_QK, _QK).astype(jnp.int32)  # exact
    z = jnp.where(mask, _shift(dots * cm, sq + jnp.swapaxes(sk, 2, 3) + ce + SCORE_FRAC), -(1 << 29))
    e = jnp.where(mask, im.exp2_int(z - jnp.max(z, -1, keepdims=True), PROB_BITS), 0)
    p = im.materialize(_normalize(e, PROB_BITS))  # read 5 times by the backward pass
    svt = jnp.swapaxes(sv, 2, 3)
    top = jnp.max(jnp.where(mask, svt, -(1 << 20)), -1, keepdims=True)
    folded = im.round_shift(p, top - svt)  # each value's scale folded into its probability
    # One exact dot, not one per 8-bit limb: the folded probabilities are non-negative and sum to
    # about 2**PROB_BITS, so every partial sum of the products stays below 2**(PROB_BITS + 8).
    out = im.scale(im.distribution_dot(folded, PROB_BITS + 1, vq, BITS_V, _PV), top - PROB_BITS)
    return out, p, svt, top, mask


def _attention_cached(q, keys, values, mask):
    """Attention of new positions q over cache entries (a decoder's step): the same integers as
    the teacher-forced `_attention` computes for those positions."""
    return _attend(q, keys, values, mask)[0]


def _attention_fwd(q, k, v, mask):
    keys, values = _cache_entry(k), _cache_entry(v)
    out, p, svt, top, mask = _attend(q, keys, values, mask)
    return out, (q, k, p, values[0], svt, top, mask)


def _attention_bwd(res, dout):
    q, k, p, vq, svt, top, mask = res
    _, (gm, ge), value_shift = _attention_constants(q.shape[-1])
    doc, sdoc = im.quantize(dout, BITS_G, 2)
    dv = im.scale(im.int_dot(p, 16, doc, BITS_G, _PT), sdoc - PROB_BITS)
    dor, sdor = im.quantize(dout, BITS_G, -1)
    dots = im.int_dot(dor, BITS_G, vq, BITS_V, _QK).astype(jnp.int32)  # dout . v, exact
    dp = jnp.where(mask, im.round_shift(dots, top - svt + value_shift), 0)  # in units of 2**(sdor + top + value_shift)
    mean = jnp.round(im.isum(p * dp, -1)[..., None] * 2.0**-PROB_BITS).astype(jnp.int32)
    ds = p * (dp - mean)  # the softmax backward, in units of 2**(sdor + top + value_shift - PROB_BITS)
    g = im.scale(im.round_shift(ds, 9) * gm, sdor + top + value_shift - PROB_BITS + 9 + ge)  # d loss / d(q . k)
    gr, sgr = im.quantize(g, BITS_G, -1)
    kc, skc = im.quantize(k, BITS_QK, 2)
    dq = im.scale(im.int_dot(gr, BITS_G, kc, BITS_QK, _PV), sgr + skc)
    gc, sgc = im.quantize(g, BITS_G, 2)
    qc, sqc = im.quantize(q, BITS_QK, 2)
    dk = im.scale(im.int_dot(gc, BITS_G, qc, BITS_QK, _PT), jnp.swapaxes(sgc, 2, 3) + sqc)
    return dq, dk, dv, None


@jax.custom_vjp
def _attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    return _attention_fwd(q, k, v, mask)[0]


_attention.defvjp(_attention_fwd, _attention_bwd)


@jax.custom_vjp
def _lookup(table: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """table[index] (rows of a 2-D table); its gradient is an integer scatter-add."""
    return table[index]


def _lookup_bwd(res, g):
    index, rows = res
    flat = g.reshape(-1, g.shape[-1])
    gq, sg = im.quantize(flat, 16, 0)
    # Integer addition is associative, so the sum is the same in any order the scatter takes:
    # exact, without the one-hot matrix (rows x positions) that a product would need.
    summed = jnp.zeros((rows, flat.shape[-1]), jnp.int32).at[index.reshape(-1)].add(gq)
    return im.scale(summed, sg), None


_lookup.defvjp(lambda table, index: (table[index], (index, table.shape[0])), _lookup_bwd)


_MIX = (((2,), (1,)), ((0,), (0,)))  # n 1 k, n k v -> n 1 v
_MIX_T = (((2,), (2,)), ((0,), (0,)))  # n 1 v, n k v -> n 1 k


def _mix_fwd(weights, log_counts):
    wq, sw = im.quantize(weights, 16, -1)
    lq = _to_fixed(log_counts, LOG_COUNT_FRAC, im.qmax(16))
    k, v = lq.shape[-2:]
    # A dot, not an elementwise sum: its operands are materialized once, not recomputed per use.
    out = im.int_dot(wq.reshape(-1, 1, k), 16, lq.reshape(-1, k, v), 16, _MIX).reshape(*wq.shape[:-1], v)
    return im.scale(out, sw - LOG_COUNT_FRAC), (wq, sw, lq)


def _per_channel(dzq: jnp.ndarray, table: jnp.ndarray, bits: int) -> jnp.ndarray:
    """sum_v dzq[..., v] * table[..., k, v] for each channel k, for 16-bit dzq: an exact dot."""
    k, v = table.shape[-2:]
    return im.int_dot(dzq.reshape(-1, 1, v), 16, table.reshape(-1, k, v), bits, _MIX_T).reshape(*dzq.shape[:-1], k)


def _mix_bwd(res, dz):
    wq, sw, lq = res
    dzq, sdz = im.quantize(dz, 16, -1)
    dw = _per_channel(dzq, lq, 16)
    dl = im.scale(wq[..., None] * dzq[..., None, :], sw[..., None] + sdz[..., None])
    return im.scale(dw, sdz - LOG_COUNT_FRAC), dl


@jax.custom_vjp
def _mix(weights: jnp.ndarray, log_counts: jnp.ndarray) -> jnp.ndarray:
    """sum_k weights[..., k] * log_counts[..., k, v]: each count channel's vote for every byte.
    Log-counts are fixed point (LOG_COUNT_FRAC bits): no scale to find, so nothing to reduce."""
    return _mix_fwd(weights, log_counts)[0]


_mix.defvjp(_mix_fwd, _mix_bwd)


def _with_offsets(log_counts: jnp.ndarray, largest: jnp.ndarray, offsets: jnp.ndarray) -> jnp.ndarray:
    """The log-counts with each channel's offset added where its count is the largest (one add)."""
    return log_counts + jnp.where(largest, offsets[..., None], 0.0)


def _mix_offsets_fwd(weights, log_counts, largest, offsets):
    out, (wq, sw, lq) = _mix_fwd(weights, _with_offsets(log_counts, largest, offsets))
    return out, (wq, sw, lq, largest)


def _mix_offsets_bwd(res, dz):
    wq, sw, lq, largest = res
    dzq, sdz = im.quantize(dz, 16, -1)
    dw = _per_channel(dzq, lq, 16)
    # d offset_k = w_k times the sum of dz over the bytes where channel k's count is the largest:
    # an integer dot, where the cotangent of every log-count would be summed in float.
    hits, sh = im.quantize(_per_channel(dzq, largest.astype(jnp.float32), 8), 15, ())
    return im.scale(dw, sdz - LOG_COUNT_FRAC), None, None, im.scale(wq * hits, sw + sdz + sh)


@jax.custom_vjp
def _mix_offsets(weights: jnp.ndarray, log_counts: jnp.ndarray, largest: jnp.ndarray, offsets: jnp.ndarray) -> jnp.ndarray:
    """mix(weights, log_counts + offsets where `largest`): each channel's offset added to the
    log-counts of its most frequent bytes. `log_counts` gets no gradient (a table of counts)."""
    return _mix_offsets_fwd(weights, log_counts, largest, offsets)[0]


_mix_offsets.defvjp(_mix_offsets_fwd, _mix_offsets_bwd)


def _log2_logits(logits: jnp.ndarray) -> jnp.ndarray:
    """Logits (natural units) as log2 units in SCORE_FRAC fractional bits: a fixed-point copy
    (LOGIT_FRAC bits, below 2**20) times log2(e) to 20 bits, as two products of 10 bits."""
    z = _to_fixed(logits, LOGIT_FRAC, 1 << 20)
    m, e = _constant("log2e", 20)
    high, low = m >> 10, m & 1023
    product = z * high + im.round_shift(z * low, 10)  # z * m / 2**10, each part below 2**30
    return _shift(product, e + 10 + SCORE_FRAC - LOGIT_FRAC)


def _coder_weights(logits: jnp.ndarray) -> jnp.ndarray:
    """Integer weights proportional to exp(logits), each at least 1, summing below 2**30: the
    coder is given these, so every byte stays codable and -log2(w / sum w) is the exact cost."""
    frac = min(22, 30 - max(logits.shape[-1] - 1, 1).bit_length())
    z = _log2_logits(logits)
    return jnp.maximum(im.exp2_int(z - jnp.max(z, -1, keepdims=True), frac), 1)


def _bits_and_weights_fwd(logits, targets):
    w = _coder_weights(logits)
    chosen = jnp.take_along_axis(w, targets[..., None], axis=-1)[..., 0]
    bits = im.scale(im.log2_fixed(jnp.sum(w, -1)) - im.log2_fixed(chosen), -im.LOG_FRAC)
    return (bits, w), (_normalize(w, 15), targets)


def _bits_and_weights_bwd(res, cotangents):
    p, targets = res
    dbits, _ = cotangents
    dq, sd = im.quantize(_times_constant(dbits[..., None], "log2e"), 15, ())
    target = jax.nn.one_hot(targets, p.shape[-1], dtype=jnp.int32) << 15
    return im.scale((p - target) * dq, sd - 15), None  # d bits / d logits = (p - one_hot) / ln 2


@jax.custom_vjp
def _bits_and_weights(logits: jnp.ndarray, targets: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    return _bits_and_weights_fwd(logits, targets)[0]


_bits_and_weights.defvjp(_bits_and_weights_fwd, _bits_and_weights_bwd)


@jax.custom_vjp
def _log1p_ratio(counts: jnp.ndarray, log_alpha: jnp.ndarray) -> jnp.ndarray:
    """ln(1 + counts / exp(log_alpha)) for integer counts and a carrier log_alpha: 0 where a
    byte was not seen, so that rounding errors times ln(alpha) never reach the logits."""
    return _log1p_ratio_fwd(counts, log_alpha)[0]


def _log1p_ratio_fwd(counts, log_alpha):
    a = _to_fixed(_times_constant(log_alpha, "log2e"), im.LOG_FRAC)  # log2(alpha)
    full = im.log2_add(im.log2_fixed(jnp.maximum(counts, 1)), a)  # log2(n + alpha)
    seen = counts > 0
    return _ln_of_log2(jnp.where(seen, full - a, 0)), (seen, a - full, log_alpha.shape)


def _log1p_ratio_bwd(res, g):
    seen, a_minus_full, shape = res
    # d/d log_alpha of ln(1 + n / alpha) = alpha / (n + alpha) - 1, in 15 fractional bits (0 unseen)
    slope = jnp.where(seen, im.exp2_int(a_minus_full, 15) - (1 << 15), 0)
    gq, sg = im.quantize(g, 16, None)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)  # where log_alpha was broadcast
    terms = gq * slope  # |terms| < 2**30
    total = im.isum(terms, axes).reshape(shape) if axes else terms
    return None, im.scale(total, sg - 15)


_log1p_ratio.defvjp(_log1p_ratio_fwd, _log1p_ratio_bwd)


@jax.custom_vjp
def _take_along(table: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """table[..., index[..., j]] along the last axis; its gradient is a one-hot integer sum."""
    return jnp.take_along_axis(table, index, axis=-1)


def _take_along_bwd(res, g):
    index, width = res
    gq, sg = im.quantize(g, 16, -1)
    one_hot = jax.nn.one_hot(index, width, dtype=jnp.int32)
    return im.scale(jnp.sum(one_hot * gq[..., None], -2), sg), None


_take_along.defvjp(lambda table, index: (_take_along(table, index), (index, table.shape[-1])), _take_along_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _times(x: jnp.ndarray, factor: float) -> jnp.ndarray:
    """x * factor for a Python constant, as a 16-bit by 8-bit integer product (and its gradient)."""
    m, e = _dyadic(decimal.Decimal(repr(factor)), 8)
    q, s = im.quantize(x, 16, ())  # a scale per element: no element depends on another
    return im.scale(q * m, s + e)


_times.defvjp(lambda x, factor: (_times(x, factor), None), lambda factor, _, g: (_times(g, factor),))


@functools.cache
def _count_log_table(alpha: float, max_count: int) -> np.ndarray:
    """ln(1 + n / alpha) for n < max_count in LOG_COUNT_FRAC bits, exactly built (as carriers)."""
    a = decimal.Decimal(repr(alpha))
    return np.array([im.fixed(im.exact_log2((n + a) / a) * im._LN2, LOG_COUNT_FRAC) for n in range(max_count)], np.float32) / (
        1 << LOG_COUNT_FRAC
    )


# ---------------------------------------------------------------------------------------------
# Initializers from integers (the same values under any JAX configuration and on any machine)
# ---------------------------------------------------------------------------------------------


def normal(std: float):
    """An initializer of approximately normal values: the sum of four uniform 16-bit integers
    hashed from the key and the element's index (Irwin-Hall), times a dyadic `std` factor."""

    def init(key, shape, dtype=jnp.float32):
        words = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        words = words.reshape(-1).astype(jnp.uint32)
        n = int(np.prod(shape))
        index = jnp.arange(4 * n, dtype=jnp.uint32)
        bits = im.mix32(im.mix32(index * np.uint32(0x9E3779B9) + words[0]) ^ words[-1]) >> 16
        centred = jnp.sum(bits.reshape(n, 4).astype(jnp.int32), -1) - 2 * 65535
        # The sum's standard deviation is 65536 * sqrt(4 / 12) (to 2e-5).
        m, e = _dyadic(decimal.Decimal(repr(std)) / (decimal.Decimal(65536) / decimal.Decimal(3).sqrt()), 8)
        return im.scale(centred * m, e).reshape(shape).astype(dtype)

    return init


def fan_in_normal(key, shape, dtype=jnp.float32):
    """normal(1 / sqrt(fan in)): LeCun's scale, as Flax's Dense default."""
    return normal(1 / math.sqrt(shape[0]))(key, shape, dtype)


# ---------------------------------------------------------------------------------------------
# The two op sets
# ---------------------------------------------------------------------------------------------


class Native:
    """XLA's float32 arithmetic (natural logarithms)."""

    name = "native"

    @staticmethod
    def prepare_kernel(kernel):
        return kernel

    @staticmethod
    def linear(x, kernel):
        return x @ kernel

    @staticmethod
    def dense(x, kernel, bias):
        return x @ kernel + bias

    @staticmethod
    def add_broadcast(x, y):
        return x + y

    @staticmethod
    def layer_norm(x, scale, bias):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.maximum(jnp.mean(x * x, -1, keepdims=True) - mean * mean, 0.0)
        return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * scale + bias

    @staticmethod
    def attention(q, k, v, mask):
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)

    @staticmethod
    def attention_cached(q, keys, values, mask):
        return Native.attention(q, keys, values, mask)

    @staticmethod
    def cache_entry(x):
        return x

    @staticmethod
    def lookup(table, index):
        return jnp.take(table, index, axis=0)

    @staticmethod
    def mix(weights, log_counts):
        return jnp.einsum("...k,...kv->...v", weights, log_counts)

    @staticmethod
    def mix_offsets(weights, log_counts, largest, offsets):
        return Native.mix(weights, _with_offsets(log_counts, largest, offsets))

    @staticmethod
    def count_log(counts, alpha: float, max_count: int):
        """ln(1 + n / alpha) for integer counts n < max_count, from a table. It is ln(n + alpha)
        less a constant, which the softmax ignores; 0 for an unseen byte, so a context that saw
        nothing adds nothing to the logits or to the gradients (rounding errors times a large
        constant would bias them)."""
        return jnp.log1p(jnp.arange(max_count, dtype=jnp.float32) / alpha)[counts.astype(jnp.int32)]

    @staticmethod
    def count_log_learned(counts, log_alpha):
        """ln(1 + n / alpha) with a learned log alpha: 0 for an unseen byte, as count_log."""
        return jnp.log1p(counts.astype(jnp.float32) * jnp.exp(-log_alpha))

    @staticmethod
    def log_count(seen):
        return jnp.log1p(seen.astype(jnp.float32))

    @staticmethod
    def take_along(table, index):
        """table[..., index] along the last axis, as a one-hot product (its gradient is a matrix
        product with a fixed summation order, where a gather's is a scatter-add)."""
        return jnp.einsum("...vl,...l->...v", jax.nn.one_hot(index, table.shape[-1], dtype=table.dtype), table)

    @staticmethod
    def log_of(value: float) -> float:
        return math.log(value)

    @staticmethod
    def times(x, factor: float):
        return x * factor

    @staticmethod
    def bits_and_weights(logits, targets):
        """-log2 p of each target, and the probabilities the coder is given."""
        logits = logits.astype(jnp.float32)
        log_p = jax.nn.log_softmax(logits)
        bits = -jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0] / math.log(2)
        return bits, jnp.exp(log_p)

    @staticmethod
    def coder_weights(logits):
        return jax.nn.softmax(logits.astype(jnp.float32))


class Exact:
    """Integer arithmetic (intmath.py): the same bits everywhere."""

    name = "exact"
    prepare_kernel = staticmethod(_prepare_kernel)
    linear = staticmethod(_linear)
    dense = staticmethod(_dense)
    add_broadcast = staticmethod(_add_broadcast)
    layer_norm = staticmethod(_layer_norm)
    attention = staticmethod(_attention)
    attention_cached = staticmethod(_attention_cached)
    cache_entry = staticmethod(_cache_entry)
    mix = staticmethod(_mix)
    mix_offsets = staticmethod(_mix_offsets)
    times = staticmethod(_times)
    take_along = staticmethod(_take_along)
    bits_and_weights = staticmethod(_bits_and_weights)

    @staticmethod
    def lookup(table, index):
        rows = table.reshape(table.shape[0], -1)
        return _lookup(rows, index).reshape(*index.shape, *table.shape[1:])

    @staticmethod
    def count_log(counts, alpha: float, max_count: int):
        """ln(1 + n / alpha) for integer counts n < max_count, from an exactly built table."""
        return jnp.asarray(_count_log_table(alpha, max_count))[counts.astype(jnp.int32)]

    @staticmethod
    def count_log_learned(counts, log_alpha):
        return _log1p_ratio(counts.astype(jnp.int32), log_alpha)

    @staticmethod
    def log_count(seen):
        return _ln_of_log2(im.log2_fixed(seen.astype(jnp.int32) + 1))

    @staticmethod
    def log_of(value: float) -> float:
        return float(im.exact_log2(decimal.Decimal(repr(value))) * im._LN2)

    @staticmethod
    def coder_weights(logits):
        return _coder_weights(logits).astype(jnp.float32)


OPS = {"native": Native, "exact": Exact}

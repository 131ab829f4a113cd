"""Integer arithmetic that computes the same bits on every machine: the kernels of exact numerics.

XLA may contract `a*b + c` into one FMA, evaluates `exp` and `log` with polynomials whose rounding
depends on the instruction set, and splits long float sums across threads in an order that depends
on the thread count. None of that can change an integer. So exact numerics (ops.py) computes with

- integers in int32 arrays, whose sums do not depend on their order;
- float32 arrays used only as *carriers*: every value is an integer times a power of two (a
  multiple of 2**MIN_EXP), made by exact operations (bit fields, multiplication by powers of two,
  conversion of integers). The only rounding float operation applied to carriers is a single
  elementwise add, which IEEE-754 defines bit for bit;
- matrix products of integers of at most 8 bits (and a sign), done as float32 dots: every product
  and every partial sum is an integer of at most 2**24, so the result is exact whatever the
  summation order, blocking, thread count, FMA use or backend (TF32 and bf16 hold them exactly too);
- fixed-point logarithms and powers of two from integer polynomials whose coefficients are
  solved here in exact rational arithmetic (with `fractions`, and `decimal`, correctly rounded by
  its specification), never from libm. Polynomials, not tables: XLA fuses a table's gather into
  the elementwise code around it and the whole loop stops vectorizing.
"""

from __future__ import annotations

import decimal
import fractions
import functools
import platform

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MIN_EXP = -100  # carriers are multiples of 2**MIN_EXP: their sums are never denormal
LOG_FRAC = 16  # fixed-point logarithms (base 2) carry 16 fractional bits
_TABLE_BITS = 10  # tables of log2 and exp2 over [0, 1) have 2**10 intervals, interpolated linearly
_SUM_CHUNK = 512  # 512 integers below 2**15 in magnitude sum below 2**24: exact in float32
_DOT_CHUNK = 1024  # 1024 products of two 8-bit integers sum to at most 2**24: exact in float32
_INT8_DOT_MAX = 1 << 17  # 2**17 products of two int8 sum to at most 2**31: exact in int32


def qmax(bits: int) -> int:
    """The largest magnitude a signed `bits`-bit integer takes here."""
    return (1 << (bits - 1)) - 1


# ---------------------------------------------------------------------------------------------
# Carriers: float32 fields, powers of two, quantization
# ---------------------------------------------------------------------------------------------


def pow2(exponent: jnp.ndarray) -> jnp.ndarray:
    """2.0 ** exponent as float32, built from its bits (exponent clipped to [-126, 127])."""
    e = lax.clamp(-126, jnp.asarray(exponent, jnp.int32), 127)
    return lax.bitcast_convert_type((e + 127) << 23, jnp.float32)


def scale(values: jnp.ndarray, exponent: jnp.ndarray | int) -> jnp.ndarray:
    """values * 2**exponent as a carrier, for integer-valued float32 or int32 `values`: exact
    where the result needs no more than float32's 24 bits, and 0 where exponent < MIN_EXP (so
    that every carrier is a multiple of 2**MIN_EXP)."""
    f = values if values.dtype == jnp.float32 else values.astype(jnp.float32)
    if isinstance(exponent, int):
        return f * float(2.0**exponent) if exponent >= MIN_EXP else jnp.zeros_like(f)
    e = jnp.asarray(exponent, jnp.int32)
    return jnp.where(e < MIN_EXP, 0.0, f * pow2(jnp.minimum(e, 96)))


def fields(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(negative, biased exponent, 24-bit significand) of float32 x; zero (and denormals, which
    carriers never are) give a zero significand. x = +-significand * 2**(biased - 150)."""
    bits = lax.bitcast_convert_type(x, jnp.int32)
    biased = (bits >> 23) & 0xFF
    significand = lax.select(biased > 0, (bits & 0x7FFFFF) | 0x800000, jnp.zeros_like(bits))
    return bits < 0, biased, significand


def round_shift(q: jnp.ndarray, shift: jnp.ndarray | int) -> jnp.ndarray:
    """q / 2**shift rounded half up, for int32 q and shift >= 0 (a shift <= 0 leaves q; no overflow)."""
    if isinstance(shift, int):
        return ((q >> (shift - 1)) + 1) >> 1 if shift > 0 else q
    shift = jnp.broadcast_to(jnp.asarray(shift, jnp.int32), jnp.broadcast_shapes(jnp.shape(q), jnp.shape(shift)))
    q = jnp.broadcast_to(q, shift.shape)
    return lax.select(shift > 0, ((q >> (shift - 1)) + 1) >> 1, q)


def materialize(x: jnp.ndarray) -> jnp.ndarray:
    """x, computed once and stored. XLA on CPU fuses an elementwise chain into every consumer of
    its result, so a chain with several consumers (a quantization's max and its rounding, the two
    limbs of a product, the attention probabilities' uses in the backward pass) is recomputed once
    per consumer. A reduction is never fused into
    its consumers, so the max of x over a broadcast pair (the same values) stores x; an
    optimization barrier would not, since XLA on CPU removes barriers before fusing."""
    if x.dtype == jnp.float32:  # as int32 bits: XLA's float max (NaN-aware) is 20 times slower
        return lax.bitcast_convert_type(materialize(lax.bitcast_convert_type(x, jnp.int32)), jnp.float32)
    return jnp.max(jnp.broadcast_to(x[None], (2, *x.shape)), 0)


def _top_exponent(x: jnp.ndarray, axis: int | tuple[int, ...] | None) -> jnp.ndarray:
    """The largest biased exponent of x over `axis` (kept), 0 for zeros: that of the largest |x|,
    since a float's magnitude orders as its bits do. A float max is exact, and XLA on CPU
    vectorizes float reductions but not integer ones (a third of a quantization's time)."""
    return fields(jnp.max(jnp.abs(x), axis=axis, keepdims=True))[1]


def quantize(x: jnp.ndarray, bits: int, axis: int | tuple[int, ...] | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(q, exponent): int32 q with |q| <= qmax(bits) and x ~ q * 2**exponent, one exponent per
    slice over `axis` (kept as size-1 dimensions; None: one for the whole array; (): one each).

    The exponent comes from the largest element's float exponent (an integer max, exact), and
    each q from its element's significand by an integer rounding shift: no float arithmetic."""
    x = materialize(x)  # read by the max and by the rounding
    negative, biased, significand = fields(x)
    top = _top_exponent(x, axis)
    exponent = top - 125 - bits  # the largest |x| < 2**(top - 126) maps below 2**(bits - 1)
    q = jnp.minimum(((significand >> (top - biased + 24 - bits)) + 1) >> 1, qmax(bits))
    return lax.select(negative, -q, q), exponent


def quantize_stochastic(x: jnp.ndarray, bits: int, axis: int | tuple[int, ...] | None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """As `quantize`, but each element rounds up with probability equal to the fraction it drops
    (stochastic rounding), so that elements far below the slice's largest survive on average: for
    gradients. The random bits are a hash of the element's own bits and its index, so they are the
    same on every machine and need no key."""
    x = materialize(x)  # read by the max, the rounding and the dither
    negative, biased, significand = fields(x)
    top = _top_exponent(x, axis)
    exponent = top - 125 - bits
    shift = (top - biased + 25 - bits).astype(jnp.uint32)  # the bits dropped, > 0
    index = lax.iota(jnp.uint32, x.size).reshape(x.shape) * np.uint32(0x9E3779B1)
    dither = mix32(lax.bitcast_convert_type(x, jnp.uint32) ^ mix32(index))
    near = jnp.minimum(shift, 31)
    significand = significand.astype(jnp.uint32)
    rounded = (significand + (dither & ((np.uint32(1) << near) - 1))) >> near  # below 2**32: no overflow
    # Beyond 31 dropped bits: up with probability significand / 2**shift, from the 32 dither bits.
    far = (dither < (significand >> jnp.minimum(shift - 32, 31))).astype(jnp.uint32)
    q = jnp.minimum(jnp.where(shift < 32, rounded, far).astype(jnp.int32), qmax(bits))
    return lax.select(negative, -q, q), exponent


def mix32(h: jnp.ndarray) -> jnp.ndarray:
    """MurmurHash3's finalizer: a bijection of uint32 that spreads every input bit."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def dequantize(q: jnp.ndarray, exponent: jnp.ndarray) -> jnp.ndarray:
    return scale(q, exponent)


# ---------------------------------------------------------------------------------------------
# Exact sums and matrix products of integers
# ---------------------------------------------------------------------------------------------


def small_sum(values: jnp.ndarray, axis: int | tuple[int, ...], keepdims: bool = False) -> jnp.ndarray:
    """Exact int32 sum of int32 values below 2**15 in magnitude, over at most 2**16 elements.

    Chunks of _SUM_CHUNK elements are summed as float32: every partial sum of such a chunk is an
    integer below 2**24, so float32 holds it exactly in any order of summation (XLA's float
    reductions are vectorized, its integer ones are not: 2-3 times faster on CPU). The chunks'
    sums are then added as int32."""
    axes = tuple(a % values.ndim for a in np.atleast_1d(axis))
    length = int(np.prod([values.shape[a] for a in axes]))
    if length <= _SUM_CHUNK:
        return jnp.sum(values.astype(jnp.float32), axes, keepdims=keepdims).astype(jnp.int32)
    kept = [n for a, n in enumerate(values.shape) if a not in axes]
    rows = jnp.moveaxis(values, axes, tuple(range(len(axes)))).reshape(length, -1)
    chunks = jnp.pad(rows, ((0, -length % _SUM_CHUNK), (0, 0))).reshape(-1, _SUM_CHUNK, rows.shape[1])
    total = jnp.sum(jnp.sum(chunks.astype(jnp.float32), 1).astype(jnp.int32), 0).reshape(kept)
    return jnp.expand_dims(total, axes) if keepdims else total


def isum(values: jnp.ndarray, axis: int | tuple[int, ...]) -> jnp.ndarray:
    """Exact sum of int32 values below 2**30 in magnitude, over at most 2**15 elements, as a
    float32 carrier rounded to nearest: high and low 15-bit parts are summed apart as int32, the
    low sum's carry goes to the high one, and the total is cut at bit 23 into two parts that
    float32 holds exactly, so that their one float add is the only rounding."""
    high = small_sum(values >> 15, axis)
    low = small_sum(values & 0x7FFF, axis)
    high = high + (low >> 15)  # total = high * 2**15 + (low & 0x7FFF)
    rest = ((high & 0xFF) << 15) + (low & 0x7FFF)  # below 2**23
    return (high >> 8).astype(jnp.float32) * float(1 << 23) + rest.astype(jnp.float32)


def _limbs(q: jnp.ndarray, bits: int) -> list[tuple[jnp.ndarray, float]]:
    """q as limbs of at most 8 bits and a sign, with their weights: q = sum(limb * weight). An
    8-bit q (|q| <= 127) is one int8 limb; a 16-bit q splits into float32 limbs, |limb| <= 128
    (one more than int8 holds). A product of two limbs is at most 2**14, so _DOT_CHUNK of them
    sum exactly in float32."""
    if bits <= 8:
        return [(q.astype(jnp.int8), 1.0)]
    q = materialize(q)  # read by both limbs
    low = ((q + 128) & 255) - 128
    return [(((q - low) >> 8).astype(jnp.float32), 256.0), (low.astype(jnp.float32), 1.0)]


def int8_dots() -> bool:
    """Whether 8-bit products run as int8 dots: on x86-64 CPUs, with YNNPACK's kernels
    (Learner._compiler_options), where they are the faster and were checked bit-exact at every
    ISA level. Elsewhere the float path: a GPU was measured with it, and on an emulated aarch64
    CPU YNNPACK's int8 dots gave the default another fingerprint (the float path gives this
    machine's)."""
    return jax.default_backend() == "cpu" and platform.machine().lower() in ("x86_64", "amd64")


def _exact_dot(a: jnp.ndarray, b: jnp.ndarray, dims) -> jnp.ndarray:
    """dot_general of integer-valued arrays as a float32 carrier: two int8 limbs as an int8 dot
    with int32 sums (exact up to _INT8_DOT_MAX products), anything else (limbs or a
    distribution_dot's operands) as float32 arrays whose partial sums float32 holds exactly:
    contractions longer than _DOT_CHUNK are cut into chunks whose results are summed as int32.
    Both give the same integers where int8_dots() allows the int8 dot."""
    (ca, cb), (batch_a, _) = dims
    length = int(np.prod([a.shape[i] for i in ca]))
    int8 = a.dtype == b.dtype == jnp.int8 and length <= _INT8_DOT_MAX and not batch_a and a.ndim == b.ndim == 2
    if int8 and int8_dots():
        if ca == (0,):
            # (K, M) x (K, N): XLA's CPU int8 dot is several times slower contracting the first
            # axis of its left operand; transposing that operand first costs little.
            a, dims = materialize(a.T), (((1,), cb), ((), ()))
        return lax.dot_general(a, b, dims, preferred_element_type=jnp.int32).astype(jnp.float32)
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    if length <= _DOT_CHUNK:
        return lax.dot_general(a, b, dims, precision=lax.Precision.HIGHEST)
    if len(ca) != 1:
        raise ValueError("contractions over several axes must fit one chunk")
    total = None
    for start in range(0, length, _DOT_CHUNK):
        part = lax.dot_general(
            lax.slice_in_dim(a, start, min(start + _DOT_CHUNK, length), axis=ca[0]),
            lax.slice_in_dim(b, start, min(start + _DOT_CHUNK, length), axis=cb[0]),
            dims,
            precision=lax.Precision.HIGHEST,
        ).astype(jnp.int32)
        total = part if total is None else total + part
    return total.astype(jnp.float32)


def int_dot(a: jnp.ndarray, bits_a: int, b: jnp.ndarray, bits_b: int, dims, drop_low_low: bool = True) -> jnp.ndarray:
    """dot_general of int32 arrays of at most 8 or 16 bits (qmax), as a float32 carrier.

    Each operand splits into int8 limbs; each pair of limbs is an exact dot, and the pairs are
    combined by one float add each, in a fixed order (powers-of-two weights: FMA-proof). With two
    16-bit operands the low-by-low pair (below 2**-14 of the result) is left out."""
    terms = []
    for limb_a, weight_a in _limbs(a, bits_a):
        for limb_b, weight_b in _limbs(b, bits_b):
            if drop_low_low and bits_a > 8 and bits_b > 8 and weight_a == weight_b == 1.0:
                continue
            terms.append(_exact_dot(limb_a, limb_b, dims) * (weight_a * weight_b))
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def distribution_dot(a: jnp.ndarray, total_bits: int, b: jnp.ndarray, bits_b: int, dims) -> jnp.ndarray:
    """dot_general of int32 a >= 0 whose sum along the contraction is below 2**total_bits (a
    distribution, such as attention probabilities) with int32 b of at most bits_b bits, as one
    float32 dot: every partial sum is below 2**(total_bits + bits_b - 1), which float32 holds
    exactly when that is at most 2**24. The same integers as `int_dot`, from one dot, not one
    per pair of 8-bit limbs."""
    if total_bits + bits_b - 1 > 24:
        raise ValueError(f"a total below 2**{total_bits} by {bits_b}-bit operands overflows an exact float32 dot")
    return _exact_dot(a.astype(jnp.float32), b.astype(jnp.float32), dims)


# ---------------------------------------------------------------------------------------------
# Fixed-point log2 and exp2 (LOG_FRAC fractional bits) from integer polynomials
# ---------------------------------------------------------------------------------------------

_CONTEXT = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)
_LN2 = _CONTEXT.ln(decimal.Decimal(2))
POLY_FRAC = 15  # polynomial coefficients and arguments: 15 fractional bits, so products fit int32


def exact_log2(value: decimal.Decimal | int) -> decimal.Decimal:
    """log2 of a positive rational, correctly rounded to 40 digits (decimal's ln is)."""
    return _CONTEXT.divide(_CONTEXT.ln(decimal.Decimal(value)), _LN2)


def exact_exp2(value: decimal.Decimal) -> decimal.Decimal:
    return _CONTEXT.exp(_CONTEXT.multiply(decimal.Decimal(value), _LN2))


def fixed(value: decimal.Decimal | fractions.Fraction | int, frac_bits: int) -> int:
    """round(value * 2**frac_bits), half to even."""
    return round(fractions.Fraction(value) * 2**frac_bits)


_SQRT_HALF = decimal.Decimal(2).sqrt() / 2
_LOG2_RANGE = (_SQRT_HALF - 1, 2 * _SQRT_HALF - 1)  # log2(1 + x) is fitted for 1 + x in [sqrt(1/2), sqrt(2))


@functools.cache
def _chebyshev_fit(name: str, degree: int) -> tuple[int, ...]:
    """Coefficients (POLY_FRAC bits, lowest first) of the polynomial through `degree + 1`
    Chebyshev nodes of (2**x - 1) / x on [0, 1] ("exp2") or of log2(1 + x) / x - 1 on _LOG2_RANGE
    ("log2"), solved in exact rational arithmetic: the same integers on every machine."""
    n = degree + 1
    lo, hi = (decimal.Decimal(0), decimal.Decimal(1)) if name == "exp2" else _LOG2_RANGE
    nodes = [fractions.Fraction(_CONTEXT.create_decimal(lo + (hi - lo) * (1 + _cos_node(i, n)) / 2)) for i in range(n)]

    def f(x: fractions.Fraction) -> fractions.Fraction:
        d = decimal.Decimal(x.numerator) / decimal.Decimal(x.denominator)
        value = (exact_exp2(d) - 1) / d if name == "exp2" else exact_log2(1 + d) / d - 1
        return fractions.Fraction(value)

    rows = [[x**k for k in range(n)] + [f(x)] for x in nodes]
    for col in range(n):  # Gauss-Jordan elimination, exact
        pivot = next(r for r in range(col, n) if rows[r][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                rows[r] = [a - rows[r][col] * b for a, b in zip(rows[r], rows[col], strict=True)]
    return tuple(fixed(rows[k][n], POLY_FRAC) for k in range(n))


def _cos_node(i: int, n: int) -> decimal.Decimal:
    """cos((2i + 1) pi / 2n) by its Taylor series in decimal (a Chebyshev node)."""
    pi = decimal.Decimal("3.141592653589793238462643383279502884197")
    x = _CONTEXT.divide((2 * i + 1) * pi, 2 * n)
    term, total, k = decimal.Decimal(1), decimal.Decimal(1), 0
    while abs(term) > decimal.Decimal(10) ** -38:
        k += 2
        term = _CONTEXT.divide(-term * x * x, k * (k - 1))
        total += term
    return total


def _horner(coefficients: tuple[int, ...], x: jnp.ndarray) -> jnp.ndarray:
    """sum(c_k * x**k) for |x| < 2**POLY_FRAC, all in POLY_FRAC bits (products below 2**31)."""
    acc = jnp.full(x.shape, coefficients[-1], jnp.int32)
    for c in coefficients[-2::-1]:
        acc = c + ((acc * x + (1 << (POLY_FRAC - 1))) >> POLY_FRAC)
    return acc


def log2_fixed(x: jnp.ndarray) -> jnp.ndarray:
    """log2(x) in LOG_FRAC fractional bits, for int32 x >= 1 (error below 2**-15)."""
    top = 31 - lax.clz(x)  # floor(log2 x)
    normal = x << (30 - top)  # x / 2**top in [1, 2), 30 fractional bits
    high = normal >= fixed(2 * _SQRT_HALF, 30)
    u = jnp.where(high, normal >> 1, normal) - (1 << 30)  # in [sqrt(1/2), sqrt(2)) - 1
    top = jnp.where(high, top + 1, top)
    u15 = round_shift(u, 30 - POLY_FRAC)
    correction = _horner(_chebyshev_fit("log2", 6), u15)  # log2(1 + u) / u - 1
    frac = round_shift(u, 30 - LOG_FRAC) + round_shift(u15 * correction, 2 * POLY_FRAC - LOG_FRAC)
    return (top << LOG_FRAC) + frac


def log2_of_carrier(x: jnp.ndarray) -> jnp.ndarray:
    """log2|x| in LOG_FRAC fractional bits for a nonzero carrier x, from its float fields."""
    _, biased, significand = fields(x)
    return log2_fixed(significand) + ((biased - 150) << LOG_FRAC)


def exp2_parts(t: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(significand in [2**23, 2**24), exponent) with 2**(t / 2**LOG_FRAC) = significand * 2**(exponent - 23)
    (relative error below 2**-15)."""
    whole = t >> LOG_FRAC  # floor, also for negative t
    f = t & ((1 << LOG_FRAC) - 1)
    slope = _horner(_chebyshev_fit("exp2", 5), (f + 1) >> (LOG_FRAC - POLY_FRAC))  # (2**f - 1) / f
    return (1 << 23) + ((f * slope + (1 << (LOG_FRAC + POLY_FRAC - 24))) >> (LOG_FRAC + POLY_FRAC - 23)), whole


def exp2_carrier(t: jnp.ndarray) -> jnp.ndarray:
    """2**(t / 2**LOG_FRAC) as a carrier (a multiple of 2**MIN_EXP), with a 24-bit significand."""
    significand, whole = exp2_parts(t)
    return scale(significand, whole - 23)


def exp2_int(t: jnp.ndarray, frac_bits: int) -> jnp.ndarray:
    """round(2**(t / 2**LOG_FRAC) * 2**frac_bits) as int32, for t <= 0 (frac_bits <= 23)."""
    significand, whole = exp2_parts(t)
    return round_shift(significand, 23 - frac_bits - whole)


def log2_add(a: jnp.ndarray, b: jnp.ndarray, frac_bits: int = LOG_FRAC) -> jnp.ndarray:
    """log2(2**a + 2**b) for fixed-point logarithms a and b of `frac_bits` >= LOG_FRAC fractional
    bits (the Gaussian logarithm: max(a, b) + log2(1 + 2**-|a - b|), to 2**-15)."""
    d = jnp.minimum(jnp.abs(a - b) >> (frac_bits - LOG_FRAC), (40 << LOG_FRAC))
    correction = log2_fixed((1 << 23) + exp2_int(-d, 23)) - (23 << LOG_FRAC)
    return jnp.maximum(a, b) + (correction << (frac_bits - LOG_FRAC))


def mul_q30(a: jnp.ndarray, b: int) -> jnp.ndarray:
    """round(a * b / 2**30) for 0 <= a, b < 2**30, from 15-bit halves (no product reaches 2**31)."""
    ah, al = a >> 15, a & 0x7FFF
    bh, bl = b >> 15, b & 0x7FFF
    return ah * bh + ((ah * bl + al * bh + ((al * bl) >> 15) + (1 << 14)) >> 15)

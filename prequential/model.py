"""The byte-level causal transformer and the count mixer (Flax linen), with a key/value cache.

The model is written once, against an op set (ops.py) that the config's `numerics` picks:
`exact` (integers: the same bits on every machine) or `native` (XLA's float32).

Any causal model can be used by the learner if `module.apply(params, tokens)` maps int32 tokens
of shape (batch, window), each in [0, vocab_size] (vocab_size is the start symbol), to logits of
shape (batch, window, vocab_size) where position i depends only on tokens[:, :i+1]. This model
also has `prefill` and `step` methods, which score one token per stream at a time from a cache
instead of recomputing the window. With exact numerics both give the same integers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from prequential.config import Config
from prequential.ops import OPS, fan_in_normal, normal

# A KV cache: per layer, keys and values of shape (batch, n_heads, window, head_dim), as the op
# set keeps them (`ops.cache_entry`: exact numerics keep them quantized, with their scales).
Cache = tuple[tuple[Any, Any], ...]
Initializer = Callable[..., jax.Array]


def _constant(value: float) -> Initializer:
    return lambda key, shape, dtype=jnp.float32: jnp.full(shape, value, dtype)


class Dense(nn.Module):
    features: int
    ops: Any
    use_bias: bool = True
    kernel_init: Initializer = fan_in_normal
    bias_init: Initializer = _constant(0.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        if self.has_variable("prepared", "kernel"):  # a decoder's step (Learner.prepare)
            kernel = self.get_variable("prepared", "kernel")
        if not self.use_bias:
            return self.ops.linear(x, kernel)
        return self.ops.dense(x, kernel, self.param("bias", self.bias_init, (self.features,)))


class LayerNorm(nn.Module):
    ops: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        return self.ops.layer_norm(x, self.param("scale", _constant(1.0), (d,)), self.param("bias", _constant(0.0), (d,)))


class Block(nn.Module):
    d_model: int
    n_heads: int
    d_ff: int
    window: int
    ops: Any

    def setup(self) -> None:
        self.ln_attn = LayerNorm(self.ops)
        self.qkv = Dense(3 * self.d_model, self.ops, use_bias=False)
        self.out = Dense(self.d_model, self.ops)
        self.ln_mlp = LayerNorm(self.ops)
        self.up = Dense(self.d_ff, self.ops)
        self.down = Dense(self.d_model, self.ops)

    def _heads(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        b, n, _ = x.shape
        qkv = self.qkv(self.ln_attn(x)).reshape(b, n, 3, self.n_heads, -1)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        return q, k, v

    def _finish(self, x: jax.Array, attended: jax.Array) -> jax.Array:
        b, _, n, _ = attended.shape
        x = x + self.out(attended.transpose(0, 2, 1, 3).reshape(b, n, self.d_model))
        return x + self.down(jax.nn.relu(self.up(self.ln_mlp(x))))

    def __call__(self, x: jax.Array, first: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Causal self-attention over the sequence, the outputs of positions first.. only (every
        position is a key); also returns the keys and values. Every op treats positions apart, so
        the outputs it does compute are the same as with first = 0."""
        q, k, v = self._heads(x)
        n = x.shape[1]
        causal = jnp.arange(first, n)[:, None] >= jnp.arange(n)[None, :]
        return self._finish(x[:, first:], self.ops.attention(q[:, :, first:], k, v, causal)), k, v

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The keys and values of positions x, for a cache: no outputs."""
        _, k, v = self._heads(x)
        return k, v

    def step(self, x: jax.Array, keys: jax.Array, values: jax.Array, pos: jax.Array):
        """One new position `pos` per stream; keys/values (B,H,W,D) hold positions < pos."""
        q, k, v = self._heads(x)

        def insert(cached, new):
            return jax.tree_util.tree_map(lambda old, row: jax.lax.dynamic_update_slice_in_dim(old, row, pos, axis=2), cached, new)

        keys, values = insert(keys, self.ops.cache_entry(k)), insert(values, self.ops.cache_entry(v))
        visible = (jnp.arange(self.window) <= pos)[None, :]
        return self._finish(x, self.ops.attention_cached(q, keys, values, visible)), keys, values


def _bit_length(x: jax.Array) -> jax.Array:
    """Bits of a non-negative integer: floor(log2 x) + 1 (0 for 0), exact in any numerics."""
    return 32 - jax.lax.clz(x.astype(jnp.int32))


class CountMixer(nn.Module):
    """Adds K count channels (counts.py) to the logits: channel k adds w_k * log_p_k(v) for each
    byte v, where log_p_k(v) grows with the count n_kv of v in the channel's context. The weight
    w_k is linear in the position's hidden state and in how often the context was seen. With
    `select`, it also gets a learned offset per last byte (a weight set selected by the order-1
    context, as in paq8px's mixers): the hidden state knows the last byte too, but a table of
    offsets learns in a few occurrences what a linear map of it learns in many. With
    `stream_rate`, each stream's weights also get an offset of their own, learning that many
    times faster: the streams are far-apart stretches of the input, which may be of other kinds
    (a file's header and its records, an executable's code and its data), and one shared mixing
    adapts to their blend.

    With `states`, a channel's state (how many bytes its context has seen, in 12 log2 buckets, and
    how many distinct ones, in 6) picks learned corrections: a weight offset and an offset for the
    context's most frequent byte (states 1); also the smoothing a_k of log(1 + n / a_k) and an
    offset per count level, 1..15 and whether it is the largest, in place of that one (states 2,
    slower).
    This calibrates counts into log-probabilities by gradient, with the rest of the model. Adam
    moves each parameter by about the learning rate per step, too slow for such small tables, so
    they are stored divided by `state_rate` and move that many times faster. The linear map to
    the weights is stored divided by `weight_rate` likewise: below 1, the mixing moves slower
    than the transformer learns.
    """

    channels: int
    alpha: float
    initial_weight: float
    max_count: int  # counts stay below this (counts.py halves them at a limit)
    states: int
    state_rate: float
    ops: Any
    select: int = 0
    weight_rate: float = 1.0
    streams: int = 1
    stream_rate: float = 0.0

    def _lookup(self, name: str, value: float, state: jax.Array, *shape: int, states: int = 72, rate: float | None = None) -> jax.Array:
        """Each channel's entry for its state (..., K) in a learned table (K, states, *shape) that
        starts at `value` and learns `rate` (by default state_rate) times faster."""
        rate = rate or self.state_rate
        table = self.param(name, _constant(value / rate), (self.channels * states, *shape))
        rows = state + states * jnp.arange(self.channels)
        return self.ops.times(self.ops.lookup(table, rows), rate)

    @nn.compact
    def __call__(self, logits: jax.Array, hidden: jax.Array, inputs: Any, last: jax.Array) -> jax.Array:
        """The logits with the counts mixed in: `inputs` is a CountInputs (counts.py) of counts
        (..., K, V) and their summary (..., K, 3); `last` (...) is each position's token (the
        byte before the predicted one, or the start symbol V)."""
        ops = self.ops
        counts = inputs.counts
        seen, distinct, top = (inputs.summary[..., i] for i in range(3))  # (..., K) each
        features = jnp.concatenate([hidden, ops.log_count(seen)], axis=-1)
        rate = self.weight_rate
        weights = Dense(self.channels, ops, kernel_init=_constant(0.0), bias_init=_constant(self.initial_weight / rate))(features)
        if rate != 1:
            weights = ops.times(weights, rate)
        if self.select:
            by_last = jnp.broadcast_to(last[..., None], weights.shape)
            weights = weights + self._lookup("select_weight", 0.0, by_last, states=counts.shape[-1] + 1)
        if self.stream_rate:  # positions are (streams, ...): a training step's and a decoder step's
            stream = jnp.arange(self.streams).reshape(-1, *[1] * (weights.ndim - 1))
            by_stream = jnp.broadcast_to(stream, weights.shape)
            weights = weights + self._lookup("stream_weight", 0.0, by_stream, states=self.streams, rate=self.stream_rate)
        if self.states:
            distinct = jnp.maximum(distinct, 1)
            seen_bucket = jnp.clip(_bit_length(seen + 1) - 1, 0, 11)  # floor(log2(seen + 1))
            state = seen_bucket * 6 + jnp.clip(_bit_length(distinct - 1), 0, 5)  # ceil(log2 distinct)
            weights = weights + self._lookup("state_weight", 0.0, state)
            largest = (counts == top[..., None].astype(counts.dtype)) & (counts > 0)  # none where nothing was seen
        if self.states == 2:
            log_alpha = self._lookup("state_log_alpha", ops.log_of(self.alpha), state)[..., None]
            level = jnp.minimum(counts, 15).astype(jnp.int32) + 16 * largest  # (..., K, V)
            # Unseen bytes (level 0) get no offset: one offset for all of a channel's bytes would
            # change no probability, and the log-probabilities stay 0 where nothing was seen.
            offsets = self._lookup("state_level", 0.0, state, 31)  # (..., K, 31): levels 1..31
            offsets = jnp.concatenate([jnp.zeros_like(offsets[..., :1]), offsets], axis=-1)
            log_p = ops.count_log_learned(counts, log_alpha) + ops.take_along(offsets, level)
        else:
            log_p = ops.count_log(counts, self.alpha, self.max_count)
            if self.states == 1:
                return logits + ops.mix_offsets(weights, log_p, largest, self._lookup("state_largest", 0.0, state))
        # A channel's normalizer (its log of total count plus smoothing) is the same for every
        # byte, so the softmax needs none.
        return logits + ops.mix(weights, log_p)


class Transformer(nn.Module):
    config: Config

    def setup(self) -> None:
        c = self.config
        ops = OPS[c.numerics]
        self.embedding = self.param("embedding", normal(0.02), (c.vocab_size + 1, c.d_model))
        self.position = self.param("position", normal(0.02), (c.window, c.d_model))
        self.blocks = [Block(c.d_model, c.n_heads, c.d_ff, c.window, ops) for _ in range(c.n_layers)]
        self.ln_out = LayerNorm(ops)
        self.head = Dense(c.vocab_size, ops, kernel_init=_constant(0.0))  # uniform at start
        if c.count_channels:
            max_count = c.count_limit + 1
            self.mixer = CountMixer(
                c.count_channels,
                c.count_alpha,
                c.count_weight,
                max_count,
                c.count_states,
                c.count_state_rate,
                ops,
                c.count_select,
                c.count_weight_rate,
                c.streams,
                c.count_stream_rate,
            )
        self.ops = ops

    def _output(self, x: jax.Array, counts: Any, last: jax.Array) -> jax.Array:
        """Logits at the positions x (..., d_model), whose tokens are `last` (...)."""
        hidden = self.ln_out(x)
        logits = self.head(hidden)
        return logits if counts is None else self.mixer(logits, hidden, counts, last)

    def _embed(self, tokens: jax.Array) -> jax.Array:
        return self.ops.add_broadcast(self.ops.lookup(self.embedding, tokens), self.position[: tokens.shape[1]])

    def _run(self, tokens: jax.Array, counts: Any = None) -> tuple[jax.Array, Cache]:
        x = self._embed(tokens)
        cache = []
        for i, block in enumerate(self.blocks):
            # Given count inputs (counts (B, N, K, V)) for the last N positions, only those are scored, so the
            # last block computes only their outputs (the others' keys and values still).
            last = i == len(self.blocks) - 1
            x, k, v = block(x, x.shape[1] - counts.counts.shape[1] if last and counts is not None else 0)
            cache.append((k, v))
        return self._output(x, counts, tokens[:, -x.shape[1] :]), tuple(cache)

    def __call__(self, tokens: jax.Array, counts: Any = None) -> jax.Array:
        """Logits for every position or, given counts for the last N positions, for those."""
        return self._run(tokens, counts)[0]

    @staticmethod
    def _memory_inputs(embedded: jax.Array, states: jax.Array) -> list[jax.Array]:
        """Each block's inputs at the M memory positions: the first block's are the embedded
        memory tokens, the others' the states the previous segment's training step cached."""
        return [embedded, *(states[:, i] for i in range(states.shape[1]))]

    def with_memory(self, tokens: jax.Array, counts: Any, states: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Transformer-XL's segment step: logits for the last T positions of tokens (B, M + T)
        from cached memory states (B, L - 1, M, d_model), and the states to cache for the next
        segment (the blocks' inputs at its memory positions, without gradient). Only the first
        block sees the memory tokens themselves, so no block computes outputs for the memory."""
        M = self.config.memory
        embedded = self._embed(tokens)
        memory = self._memory_inputs(embedded[:, :M], states)
        x = embedded[:, M:]
        new_states = []
        for i, (block, before) in enumerate(zip(self.blocks, memory, strict=True)):
            inputs = jnp.concatenate([before, x], axis=1)
            if i:  # the first block's memory inputs come from the tokens
                new_states.append(inputs[:, -M:])
            x, _, _ = block(inputs, M)
        return self._output(x, counts, tokens[:, -x.shape[1] :]), jax.lax.stop_gradient(jnp.stack(new_states, axis=1))

    def prefill(self, tokens: jax.Array, states: jax.Array | None = None) -> Cache:
        """Cache the keys/values of the memory tokens (B, M), padded to the full window; with
        memory states (with_memory), every block's from its memory inputs."""
        pad = [(0, 0)] * 2 + [(0, self.config.window - tokens.shape[1]), (0, 0)]
        if states is None:
            kv = self._run(tokens)[1]
        else:
            kv = [block.keys_values(x) for block, x in zip(self.blocks, self._memory_inputs(self._embed(tokens), states), strict=True)]
        entries = [(self.ops.cache_entry(k), self.ops.cache_entry(v)) for k, v in kv]
        return jax.tree_util.tree_map(lambda a: jnp.pad(a, pad), tuple(entries))

    def step(self, token: jax.Array, pos: jax.Array, cache: Cache, counts: Any = None) -> tuple[jax.Array, Cache]:
        """Logits (B, V) for window position `pos` given the token (B,) there, the cache and the
        count inputs (counts (B, K, V)) of the contexts that end there."""
        x = self.ops.add_broadcast(self.ops.lookup(self.embedding, token)[:, None], self.position[pos])
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache, strict=True):
            x, keys, values = block.step(x, keys, values, pos)
            new_cache.append((keys, values))
        return self._output(x[:, 0], counts, token), tuple(new_cache)

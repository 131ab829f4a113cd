"""The byte-level causal transformer (Flax linen), with a key/value cache for step-wise scoring.

Any causal model can be used by the learner if `module.apply(params, tokens)` maps int32 tokens
of shape (batch, window), each in [0, vocab_size] (vocab_size is the start symbol), to logits of
shape (batch, window, vocab_size) where position i depends only on tokens[:, :i+1]. This model
also has `prefill` and `step` methods, which score one token per stream at a time from a cache
instead of recomputing the window.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from prequential.config import Config

# A KV cache: per layer, keys and values of shape (batch, n_heads, window, head_dim).
Cache = tuple[tuple[jax.Array, jax.Array], ...]


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention of q (B,H,Q,D) over k, v (B,H,K,D) where mask (Q,K) is True."""
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(scores, axis=-1), v)


class Block(nn.Module):
    d_model: int
    n_heads: int
    d_ff: int

    def setup(self) -> None:
        self.ln_attn = nn.LayerNorm()
        self.qkv = nn.Dense(3 * self.d_model, use_bias=False)
        self.out = nn.Dense(self.d_model)
        self.ln_mlp = nn.LayerNorm()
        self.up = nn.Dense(self.d_ff)
        self.down = nn.Dense(self.d_model)

    def _heads(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        b, n, _ = x.shape
        qkv = self.qkv(self.ln_attn(x)).reshape(b, n, 3, self.n_heads, -1)
        q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        return q, k, v

    def _finish(self, x: jax.Array, attended: jax.Array) -> jax.Array:
        b, _, n, _ = attended.shape
        x = x + self.out(attended.transpose(0, 2, 1, 3).reshape(b, n, self.d_model))
        return x + self.down(nn.gelu(self.up(self.ln_mlp(x))))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Causal self-attention over the whole sequence; also returns its keys and values."""
        q, k, v = self._heads(x)
        n = x.shape[1]
        causal = jnp.arange(n)[:, None] >= jnp.arange(n)[None, :]
        return self._finish(x, _attend(q, k, v, causal)), k, v

    def step(self, x: jax.Array, keys: jax.Array, values: jax.Array, pos: jax.Array):
        """One new position `pos` per stream; keys/values (B,H,W,D) hold positions < pos."""
        q, k, v = self._heads(x)
        keys = jax.lax.dynamic_update_slice_in_dim(keys, k, pos, axis=2)
        values = jax.lax.dynamic_update_slice_in_dim(values, v, pos, axis=2)
        visible = (jnp.arange(keys.shape[2]) <= pos)[None, :]
        return self._finish(x, _attend(q, keys, values, visible)), keys, values


class CountMixer(nn.Module):
    """Adds K count channels (counts.py) to the logits: channel k adds w_k * log_p_k(v) for each
    byte v, where log_p_k(v) grows with the count n_kv of v in the channel's context. The weight
    w_k is linear in the position's hidden state and in how often the context was seen.

    With `states`, a channel's state (how many bytes its context has seen, in 12 log2 buckets, and
    how many distinct ones, in 6) picks learned corrections: a weight offset and an offset for the
    context's most frequent byte (states 1); also the smoothing a_k of log(n + a_k) and an offset
    per count level, 0..15 and whether it is the largest, in place of that one (states 2, slower).
    This calibrates counts into log-probabilities by gradient, with the rest of the model. Adam
    moves each parameter by about the learning rate per step, too slow for such small tables, so
    they are stored divided by `state_rate` and move that many times faster.
    """

    channels: int
    alpha: float
    initial_weight: float
    max_count: int  # counts stay below this (counts.py halves them at a limit)
    states: int
    state_rate: float

    def _lookup(self, name: str, value: float, state: jax.Array, *shape: int) -> jax.Array:
        """Each channel's entry for its state (..., K) in a learned table (K, 72, *shape) that
        starts at `value` and learns state_rate times faster. A one-hot product, not a gather:
        its gradient is a matrix product with a fixed summation order, where a gather's is a
        scatter-add (atomics on GPUs unless the deterministic flags hold)."""
        init = nn.initializers.constant(value / self.state_rate)
        table = self.state_rate * self.param(name, init, (self.channels, 72, *shape))
        rows = table.reshape(self.channels, 72, -1)
        found = jnp.einsum("...ks,ksl->...kl", jax.nn.one_hot(state, 72, dtype=table.dtype), rows)
        return found.reshape(*state.shape, *shape)

    @nn.compact
    def __call__(self, logits: jax.Array, hidden: jax.Array, counts: jax.Array) -> jax.Array:
        seen = jnp.sum(counts.astype(jnp.float32), axis=-1)  # (..., K)
        features = jnp.concatenate([hidden, jnp.log1p(seen)], axis=-1)
        initial = nn.initializers.constant(self.initial_weight)
        weights = nn.Dense(self.channels, kernel_init=nn.initializers.zeros, bias_init=initial)(features)
        if self.states:
            seen_bucket = jnp.clip(jnp.floor(jnp.log2(seen + 1.0)), 0, 11).astype(jnp.int32)
            distinct = jnp.maximum(jnp.sum(counts > 0, axis=-1), 1).astype(jnp.float32)
            state = seen_bucket * 6 + jnp.clip(jnp.ceil(jnp.log2(distinct)), 0, 5).astype(jnp.int32)  # (..., K)
            weights = weights + self._lookup("state_weight", 0.0, state)
            largest = counts == jnp.max(counts, axis=-1, keepdims=True)
        if self.states == 2:
            alpha = jnp.exp(self._lookup("state_log_alpha", math.log(self.alpha), state))[..., None]
            level = jnp.minimum(counts, 15).astype(jnp.int32) + 16 * largest  # (..., K, V)
            offsets = self._lookup("state_level", 0.0, state, 32)  # (..., K, 32)
            log_p = jnp.log(counts + alpha) + jnp.einsum("...kvl,...kl->...kv", jax.nn.one_hot(level, 32, dtype=offsets.dtype), offsets)
        else:
            # log(n + alpha) from a table: a gather instead of K * V logs a step.
            log_table = jnp.log(jnp.arange(self.max_count, dtype=jnp.float32) + self.alpha)
            log_p = log_table[counts.astype(jnp.int32)]
            if self.states == 1:
                log_p = log_p + jnp.where(largest, self._lookup("state_largest", 0.0, state)[..., None], 0.0)
        # A channel's normalizer (its log of total count plus smoothing) is the same for every
        # byte, so the softmax needs none.
        return logits + jnp.einsum("...k,...kv->...v", weights, log_p)


class Transformer(nn.Module):
    config: Config

    def setup(self) -> None:
        c = self.config
        self.embed = nn.Embed(c.vocab_size + 1, c.d_model, embedding_init=nn.initializers.normal(0.02))
        self.position = self.param("position", nn.initializers.normal(0.02), (c.window, c.d_model))
        self.blocks = [Block(c.d_model, c.n_heads, c.d_ff) for _ in range(c.n_layers)]
        self.ln_out = nn.LayerNorm()
        self.head = nn.Dense(c.vocab_size, kernel_init=nn.initializers.zeros)  # uniform at start
        if c.count_channels:
            max_count = c.count_limit + c.streams + 1
            self.mixer = CountMixer(c.count_channels, c.count_alpha, c.count_weight, max_count, c.count_states, c.count_state_rate)

    def _output(self, x: jax.Array, counts: jax.Array | None) -> jax.Array:
        hidden = self.ln_out(x)
        logits = self.head(hidden)
        return logits if counts is None else self.mixer(logits, hidden, counts)

    def _run(self, tokens: jax.Array, counts: jax.Array | None = None) -> tuple[jax.Array, Cache]:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        cache = []
        for block in self.blocks:
            x, k, v = block(x)
            cache.append((k, v))
        if counts is not None:  # counts (B, N, K, V) cover the last N positions only
            x = x[:, -counts.shape[1] :]
        return self._output(x, counts), tuple(cache)

    def __call__(self, tokens: jax.Array, counts: jax.Array | None = None) -> jax.Array:
        """Logits for every position or, given counts for the last N positions, for those."""
        return self._run(tokens, counts)[0]

    def prefill(self, tokens: jax.Array) -> Cache:
        """Cache the keys/values of the memory tokens (B, M), padded to the full window."""
        pad = [(0, 0)] * 2 + [(0, self.config.window - tokens.shape[1]), (0, 0)]
        return tuple((jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in self._run(tokens)[1])

    def step(self, token: jax.Array, pos: jax.Array, cache: Cache, counts: jax.Array | None = None) -> tuple[jax.Array, Cache]:
        """Logits (B, V) for window position `pos` given the token (B,) there, the cache and the
        counts (B, K, V) of the contexts that end there."""
        x = self.embed(token)[:, None] + self.position[pos][None, None]
        new_cache = []
        for block, (keys, values) in zip(self.blocks, cache, strict=True):
            x, keys, values = block.step(x, keys, values, pos)
            new_cache.append((keys, values))
        return self._output(x[:, 0], counts), tuple(new_cache)

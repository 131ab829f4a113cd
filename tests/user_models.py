"""Flax modules a researcher might bring: the measure and compress APIs must take any of them."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

VOCAB = 256


class Bigram(nn.Module):
    """Causal: the logits at position i depend on the token at i only."""

    vocab: int = VOCAB

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        return nn.Embed(self.vocab + 1, self.vocab, embedding_init=nn.initializers.zeros)(tokens)


class Peeking(nn.Module):
    """Not causal: position i looks at the input of position i + 1, which is the token scored
    at i. Teacher-forced, it would score almost 0 bits; honestly, it knows nothing."""

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.constant(30.0), ())
        ahead = jnp.concatenate([tokens[:, 1:], tokens[:, -1:]], axis=1)
        return scale * jax.nn.one_hot(ahead, VOCAB)


class WrongShape(nn.Module):
    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        return nn.Dense(7)(jax.nn.one_hot(tokens, 8))

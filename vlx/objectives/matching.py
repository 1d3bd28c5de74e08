"""Video(image)-text matching with hard negatives sampled from contrastive similarities."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx.objectives.contrastive import cross_entropy


def negative_weights(sim: jax.Array) -> jax.Array:
  """softmax over each row of `sim` with the diagonal excluded (self is never a negative)."""
  sim = jax.lax.stop_gradient(sim.astype(jnp.float32))
  eye = jnp.eye(sim.shape[0], sim.shape[1], dtype=bool)
  return jax.nn.softmax(jnp.where(eye, -jnp.inf, sim), axis=-1)


def sample_negatives(rng: jax.Array, sim: jax.Array) -> jax.Array:
  """One index per row ~ Categorical(negative_weights(sim)[row]) (torch.multinomial equivalent)."""
  sim = jax.lax.stop_gradient(sim.astype(jnp.float32))
  eye = jnp.eye(sim.shape[0], sim.shape[1], dtype=bool)
  return jax.random.categorical(rng, jnp.where(eye, -jnp.inf, sim), axis=-1)


def matching_loss(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Mean CE of 2-way matching logits; also the accuracy (cheap)."""
  loss = jnp.mean(cross_entropy(logits, labels))
  acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
  return dict(loss=loss, acc=acc)

"""Prompting entity modelling (ALPRO spec §5.4): soft-label CE against prompter pseudo-labels."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def pseudo_labels(sim: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(softmax(sim), ignore) with ignore = argmax(sim) == 0.

  The reference means "ignore if the top probability < 0.2" but compares the argmax *index* with
  0.2, so exactly the samples whose best entity is #0 are ignored; kept for parity.
  """
  sim = jax.lax.stop_gradient(sim.astype(jnp.float32))
  return jax.nn.softmax(sim, axis=-1), jnp.argmax(sim, axis=-1) == 0


def soft_ce(logits: jax.Array, soft_labels: jax.Array, ignore: jax.Array) -> jax.Array:
  """sum_b [~ignore_b] * CE(logits_b, soft_b) / (B - #ignored); 0 if every sample is ignored."""
  ce = -jnp.sum(soft_labels * jax.nn.log_softmax(logits.astype(jnp.float32), -1), -1)
  ce = jnp.where(ignore, 0.0, ce)
  kept = ignore.shape[0] - jnp.sum(ignore)
  return jnp.sum(ce) / jnp.maximum(kept, 1).astype(jnp.float32)

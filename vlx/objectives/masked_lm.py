"""Masked language modelling cross-entropy (labels -100 = not predicted)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx.objectives.contrastive import cross_entropy

IGNORE = -100


def masked_lm(logits: jax.Array, labels: jax.Array, ignore: int = IGNORE) -> dict[str, jax.Array]:
  """Mean CE over positions with label != ignore (0 when none, where torch would give NaN)."""
  valid = labels != ignore
  safe = jnp.where(valid, labels, 0)
  ce = cross_entropy(logits, safe)
  count = jnp.sum(valid)
  denom = jnp.maximum(count, 1).astype(jnp.float32)
  loss = jnp.sum(jnp.where(valid, ce, 0.0)) / denom
  acc = jnp.sum(jnp.where(valid, jnp.argmax(logits, -1) == safe, False)) / denom
  return dict(loss=loss, acc=acc, count=count)

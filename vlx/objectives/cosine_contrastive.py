"""Contrastive loss on cosine similarities with a fixed temperature (All-in-one `ind_itc`, §4.3).

Unlike `contrastive.vtc` (pre-normalised features, learnable temperature, mean of directions),
the reference normalises inside the similarity (eps 1e-8), divides by a constant 0.05 and sums
the two directions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx.objectives.contrastive import info_nce


def cosine_sim(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """[Na, Nb] cosine similarity; each norm is clamped below at eps."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  an = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
  bn = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), eps)
  return an @ bn.T


def symmetric_loss(sim_t2v: jax.Array, temperature: float = 0.05) -> dict[str, jax.Array]:
  """CE(sim/τ) over rows (text->video) plus over columns (video->text); row i matches column i."""
  logits = sim_t2v / temperature
  t2v, v2t = info_nce(logits), info_nce(logits.T)
  return dict(loss=t2v + v2t, loss_t2v=t2v, loss_v2t=v2t, logits_t2v=logits)

"""Contrastive (InfoNCE) losses.

Under `jit` over a globally sharded batch the feature matrices are already global, so "negatives
from the whole global batch" (Horovod all-gather in the reference) is just the full B x B matrix.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-row CE with integer targets, float32."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def info_nce(logits: jax.Array, targets: jax.Array | None = None) -> jax.Array:
  """mean_i CE(logits[i], targets[i]); targets default to the diagonal (row i matches column i)."""
  if targets is None:
    targets = jnp.arange(logits.shape[0])
  return jnp.mean(cross_entropy(logits, targets))


def vtc(video_feat: jax.Array, text_feat: jax.Array, temp: jax.Array) -> dict[str, jax.Array]:
  """Symmetric video-text contrastive loss on L2-normalised features; similarities / temp."""
  v = video_feat.astype(jnp.float32)
  t = text_feat.astype(jnp.float32)
  sim_v2t = v @ t.T / temp
  sim_t2v = t @ v.T / temp
  l_v2t, l_t2v = info_nce(sim_v2t), info_nce(sim_t2v)
  return dict(loss=(l_v2t + l_t2v) / 2, loss_v2t=l_v2t, loss_t2v=l_t2v, sim_v2t=sim_v2t,
              sim_t2v=sim_t2v)

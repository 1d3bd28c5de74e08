"""VIMPAC evaluation scorers (family contract): action-class logits of one view per row.

The classification eval (vlx.evals.classification, `average='probs'`) takes the softmax of every
view and averages the probabilities over a video's spatial x temporal views (spec §5).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

TOKENS = "vq_tokens"   # the token readers' batch key (vlx.data.modalities token_grid / frame_tokens)


def clip_codes(batch: dict) -> jax.Array:
  """The [B, L, H, W] int codes of a batch of single clips."""
  codes = batch[TOKENS]
  if codes.ndim != 4:
    raise ValueError(f"batch[{TOKENS!r}] has shape {codes.shape}; a classification row is one "
                     "clip [L, H, W] (set the reader's clips=0)")
  return codes.astype(jnp.int32)


def class_logits(model, batch: dict) -> jax.Array:
  """[B, C] float32 logits of cls_fc on the backbone's CLS output (eval mode: no dropout)."""
  if getattr(model, "cls_fc", None) is None:
    raise ValueError("the model has no classifier: set config.model.num_classes > 0")
  cls, _ = model(clip_codes(batch), deterministic=True)
  return model.classify(cls).astype(jnp.float32)

"""Multi-head attention shared by every family (self- or cross-attention).

Separate `query`/`key`/`value`/`out` projections (kernel [in, out]); the D outputs of q/k/v are
split head-major as (heads, head_dim), which is how both BERT and timm's fused qkv order them, so
converters only split/transpose. Scores and softmax run in float32 for bf16 safety.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common


def additive_mask(mask: jax.Array, neg: float = -10000.0) -> jax.Array:
  """[B, Lk] 0/1 padding mask -> additive [B, 1, 1, Lk] mask: (1 - m) * neg (BERT's convention)."""
  return ((1.0 - mask.astype(jnp.float32)) * neg)[:, None, None, :]


class Attention(nnx.Module):
  """softmax(q k^T / sqrt(d) + mask) v with learned projections; `kv` defaults to `x`."""

  def __init__(self, dim: int, num_heads: int, *, kv_dim: int | None = None,
               attn_dropout: float = 0.0, use_bias: bool = True, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
    kv_dim = kv_dim or dim
    self.num_heads = num_heads
    self.head_dim = dim // num_heads
    self.attn_dropout = attn_dropout
    kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.query = common.linear(dim, dim, ("embed", "heads"), **kw)
    self.key = common.linear(kv_dim, dim, ("embed", "heads"), **kw)
    self.value = common.linear(kv_dim, dim, ("embed", "heads"), **kw)
    self.out = common.linear(dim, dim, ("heads", "embed"), **kw)

  def _heads(self, x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[:-1] + (self.num_heads, self.head_dim))

  def __call__(self, x: jax.Array, kv: jax.Array | None = None, mask: jax.Array | None = None,
               *, deterministic: bool = True, rngs: nnx.Rngs | None = None,
               return_probs: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """x [..., Lq, D], kv [..., Lk, Dkv]; mask additive, broadcastable to [..., H, Lq, Lk].
    `return_probs`: also the attention probabilities [..., H, Lq, Lk] that weighted the values
    (after attention dropout, as Hugging Face's output_attentions), e.g. for attention-guided
    masking."""
    kv = x if kv is None else kv
    q = self._heads(self.query(x))
    k = self._heads(self.key(kv))
    v = self._heads(self.value(kv))
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32)
    scores = scores.astype(jnp.float32) * (self.head_dim ** -0.5)
    if mask is not None:
      scores = scores + mask.astype(jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1)
    dropped = common.dropout(probs, self.attn_dropout, deterministic=deterministic, rngs=rngs)
    ctx = jnp.einsum("...hqk,...khd->...qhd", dropped.astype(v.dtype), v)
    out = self.out(ctx.reshape(ctx.shape[:-2] + (-1,)))
    return (out, dropped) if return_probs else out

"""Plain ViT pieces for the families that use them (patch/tubelet embedding, pre-LN block).

ALPRO's TimeSformer keeps its own block (divided space-time attention) but the same Attention and
Mlp; these are the generic versions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import Attention
from vlx.layers.mlp import Mlp


class PatchEmbed(nnx.Module):
  """Channels-last frames [..., H, W, C] (or clips [B, T, H, W, C] with tubelet > 1) -> [..., N, D]."""

  def __init__(self, patch_size: int, in_chans: int, dim: int, *, tubelet: int = 1, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.tubelet = tubelet
    kernel = (tubelet, patch_size, patch_size) if tubelet > 1 else (patch_size, patch_size)
    names = (None,) * len(kernel) + (None, "embed")
    self.proj = nnx.Conv(in_chans, dim, kernel, strides=kernel, padding="VALID",
                         dtype=common.as_dtype(dtype), param_dtype=common.as_dtype(param_dtype),
                         kernel_init=nnx.with_partitioning(common.default_kernel_init, names),
                         rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Image [B, H, W, C] -> [B, N, D]; with tubelet > 1, video [B, T, H, W, C] -> [B, T', N, D]."""
    y = self.proj(x)
    if self.tubelet > 1:
      return y.reshape(y.shape[0], y.shape[1], -1, y.shape[-1])
    return y.reshape(y.shape[0], -1, y.shape[-1])


class ViTBlock(nnx.Module):
  """x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, ln_eps: float = 1e-6,
               drop_path: float = 0.0, attn_dropout: float = 0.0, dropout: float = 0.0,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = common.layer_norm(dim, ln_eps, **kw)
    self.attn = Attention(dim, num_heads, attn_dropout=attn_dropout, **kw)
    self.norm2 = common.layer_norm(dim, ln_eps, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, dropout=dropout, **kw)
    self.drop_path = drop_path

  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    dp = lambda y: common.drop_path(y, self.drop_path, deterministic=deterministic, rngs=rngs)
    x = x + dp(self.attn(self.norm1(x), mask=mask, deterministic=deterministic, rngs=rngs))
    return x + dp(self.mlp(self.norm2(x), deterministic=deterministic, rngs=rngs))

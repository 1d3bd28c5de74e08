"""TimeSformer with divided space-time attention (ALPRO spec §2).

Token layout (B, 1 + N*T, D): token 0 is the video CLS, token 1 + n*T + t is patch n of frame t
(space-major, time-minor), exactly the reference order, so intermediate tensors compare 1:1.
Video input is channels-last [B, T, H, W, C].
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import Attention
from vlx.layers.mlp import Mlp
from vlx.layers.vit import patch_conv

_POS_INIT = nnx.initializers.truncated_normal(stddev=0.02)


class TimeSformerBlock(nnx.Module):
  """Pre-LN block: temporal attention (+temporal_fc), spatial attention with per-frame CLS, MLP."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float, *, ln_eps: float,
               drop_path: float = 0.0, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.temporal_norm = common.layer_norm(dim, ln_eps, **kw)
    self.temporal_attn = Attention(dim, num_heads, **kw)
    self.temporal_fc = common.linear(dim, dim, ("embed", "embed"), **kw)
    self.norm1 = common.layer_norm(dim, ln_eps, **kw)
    self.attn = Attention(dim, num_heads, **kw)
    self.norm2 = common.layer_norm(dim, ln_eps, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, activation="gelu", **kw)
    self.drop_path = drop_path

  def __call__(self, x: jax.Array, num_frames: int, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    b, n_tok, d = x.shape
    t = num_frames
    n = (n_tok - 1) // t
    dp = lambda y: common.drop_path(y, self.drop_path, deterministic=deterministic, rngs=rngs)
    cls, xt = x[:, :1], x[:, 1:]
    # temporal: each patch location attends over its T frames (rows b*N + n)
    h = self.temporal_norm(xt).reshape(b * n, t, d)
    h = dp(self.temporal_attn(h)).reshape(b, n * t, d)
    xt = xt + self.temporal_fc(h)
    # spatial: per frame over [CLS ; N patches] (rows b*T + t)
    xs = xt.reshape(b, n, t, d).transpose(0, 2, 1, 3).reshape(b * t, n, d)
    cls_rep = jnp.broadcast_to(cls[:, None], (b, t, 1, d)).reshape(b * t, 1, d)
    r = dp(self.attn(self.norm1(jnp.concatenate([cls_rep, xs], axis=1))))
    r = r.reshape(b, t, 1 + n, d)
    cls_res = jnp.mean(r[:, :, :1].astype(jnp.float32), axis=1).astype(r.dtype)   # (B, 1, D)
    pat_res = r[:, :, 1:].transpose(0, 2, 1, 3).reshape(b, n * t, d)
    x = jnp.concatenate([cls + cls_res, xt + pat_res], axis=1)
    return x + dp(self.mlp(self.norm2(x)))


class TimeSformer(nnx.Module):
  """patch_embed -> [CLS; patches] + pos/time embeddings -> blocks -> norm."""

  def __init__(self, *, img_size: int, patch_size: int, num_frames: int, width: int, depth: int,
               num_heads: int, mlp_ratio: float = 4.0, ln_eps: float = 1e-6,
               drop_path_rate: float = 0.0, in_chans: int = 3, remat: bool = False, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    if img_size % patch_size:
      raise ValueError(f"img_size={img_size} is not a multiple of patch_size={patch_size}")
    pd = common.as_dtype(param_dtype)
    self.patch_size = patch_size
    self.grid = img_size // patch_size
    num_patches = self.grid ** 2
    self.patch_embed = patch_conv(patch_size, in_chans, width, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)
    self.cls_token = nnx.Param(_POS_INIT(rngs.params(), (1, 1, width), pd))
    self.pos_embed = nnx.Param(_POS_INIT(rngs.params(), (1, 1 + num_patches, width), pd))
    self.time_embed = nnx.Param(jnp.zeros((1, num_frames, width), pd))
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    self.blocks = nnx.List([
        TimeSformerBlock(width, num_heads, mlp_ratio, ln_eps=ln_eps, drop_path=r, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs) for r in rates])
    self.norm = common.layer_norm(width, ln_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.remat = remat
    self.dtype = common.as_dtype(dtype)

  def _pos_embed(self, grid_h: int, grid_w: int) -> jax.Array:
    """pos_embed, its patch part nearest-resized on the fly if the patch grid differs (spec §2.1)."""
    pos = self.pos_embed[...]
    n_old = pos.shape[1] - 1
    if n_old == grid_h * grid_w:
      return pos
    side = int(math.isqrt(n_old))
    grid = pos[:, 1:].reshape(1, side, side, -1)
    grid = common.nearest_resize_1d(common.nearest_resize_1d(grid, grid_h, 1), grid_w, 2)
    return jnp.concatenate([pos[:, :1], grid.reshape(1, grid_h * grid_w, -1)], axis=1)

  def embed(self, video: jax.Array) -> jax.Array:
    """[B, T, H, W, C] -> tokens entering block 0, (B, 1 + N*T, D) in (n, t) order."""
    if video.ndim != 5:
      raise ValueError(f"video must be [B, T, H, W, C], got shape {video.shape}")
    b, t, h, w, c = video.shape
    x = self.patch_embed(video.reshape(b * t, h, w, c))          # (B*T, h, w, D)
    gh, gw, d = x.shape[1], x.shape[2], x.shape[3]
    x = x.reshape(b, t, gh * gw, d)
    pos = self._pos_embed(gh, gw).astype(x.dtype)
    cls = (self.cls_token[...].astype(x.dtype) + pos[:, :1]).reshape(1, 1, d)
    x = x + pos[:, None, 1:]                                     # (B, T, N, D)
    time = common.nearest_resize_1d(self.time_embed[...], t, axis=1).astype(x.dtype)  # (1, T, D)
    x = x + time[:, :, None]
    x = x.transpose(0, 2, 1, 3).reshape(b, gh * gw * t, d)       # token 1 + n*T + t
    return jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)

  def run_blocks(self, x: jax.Array, num_frames: int, start: int = 0, end: int | None = None, *,
                 deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    call = lambda blk, h, r: blk(h, num_frames, deterministic=deterministic, rngs=r)
    return common.run_blocks(list(self.blocks)[start:end], x, call, remat=self.remat, rngs=rngs)

  def all_tokens(self, video: jax.Array, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
    """After the last block and the final LayerNorm, before pooling: (B, 1 + N*T, D)."""
    if self.dtype is not None:
      video = video.astype(self.dtype)
    x = self.run_blocks(self.embed(video), video.shape[1], deterministic=deterministic, rngs=rngs)
    return self.norm(x)

  def __call__(self, video: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """[B, T, H, W, C] -> [CLS, N temporally averaged patch tokens] (B, 1 + N, D)."""
    return temporal_pool(self.all_tokens(video, deterministic=deterministic, rngs=rngs),
                         video.shape[1])


def temporal_pool(tokens: jax.Array, num_frames: int) -> jax.Array:
  """(B, 1 + N*T, D) -> (B, 1 + N, D): patch tokens averaged over frames, CLS kept."""
  b, n_tok, d = tokens.shape
  pat = tokens[:, 1:].reshape(b, (n_tok - 1) // num_frames, num_frames, d)
  pat = jnp.mean(pat.astype(jnp.float32), axis=2).astype(tokens.dtype)
  return jnp.concatenate([tokens[:, :1], pat], axis=1)

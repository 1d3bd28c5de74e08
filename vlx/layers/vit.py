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


def patch_conv(patch_size: int, in_chans: int, dim: int, *, tubelet: int = 1, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs) -> nnx.Conv:
  """The patch (tubelet > 1: tubelet) embedding convolution, stride = kernel, output axis 'embed'.
  PatchEmbed wraps it; TimeSformer holds it directly (its module tree has no proj level)."""
  kernel = (tubelet, patch_size, patch_size) if tubelet > 1 else (patch_size, patch_size)
  names = (None,) * len(kernel) + (None, "embed")
  return nnx.Conv(in_chans, dim, kernel, strides=kernel, padding="VALID",
                  dtype=common.as_dtype(dtype), param_dtype=common.as_dtype(param_dtype),
                  kernel_init=nnx.with_partitioning(common.default_kernel_init, names), rngs=rngs)


class PatchEmbed(nnx.Module):
  """Channels-last frames [..., H, W, C] (or clips [B, T, H, W, C] with tubelet > 1) -> [..., N, D]."""

  def __init__(self, patch_size: int, in_chans: int, dim: int, *, tubelet: int = 1, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.tubelet = tubelet
    self.proj = patch_conv(patch_size, in_chans, dim, tubelet=tubelet, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)

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


_TOKEN_INIT = nnx.initializers.truncated_normal(stddev=0.02)


def resize_bilinear_align_corners(grid: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """[..., h, w, D] -> [..., out_h, out_w, D]: torch F.interpolate(bilinear, align_corners=True).

  Used to fit a learned spatial position table to another patch grid; identity when sizes agree.
  """
  def along(x, size, axis):
    n = x.shape[axis]
    if n == size:
      return x
    pos = jnp.arange(size, dtype=jnp.float32) * ((n - 1) / max(size - 1, 1))
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 1)
    hi = jnp.minimum(lo + 1, n - 1)
    w = (pos - lo).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w
  return along(along(grid, out_h, grid.ndim - 3), out_w, grid.ndim - 2)


def temporal_roll(x: jax.Array, num_frames: int, fold: int) -> jax.Array:
  """Cyclic token shift across frames (TSM-style, on tokens): x [B*T, l, D], rows b*T + t.

  Tokens 1..fold of frame t come from frame t-1, the last `fold` tokens from frame t+1 (both
  cyclic); token 0 (the frame's CLS) and the middle stay. fold == 0 is the identity.
  """
  if fold <= 0:
    return x
  bt, l, d = x.shape
  if bt % num_frames:
    raise ValueError(f"temporal_roll: {bt} rows is not a multiple of num_frames={num_frames}")
  if 1 + 2 * fold > l:
    raise ValueError(f"temporal_roll: fold={fold} too large for {l} tokens per frame")
  y = x.reshape(bt // num_frames, num_frames, l, d)
  parts = [y[:, :, :1], jnp.roll(y[:, :, 1:1 + fold], 1, axis=1), y[:, :, 1 + fold:l - fold],
           jnp.roll(y[:, :, l - fold:], -1, axis=1)]
  return jnp.concatenate(parts, axis=2).reshape(bt, l, d)


class VisionTransformer(nnx.Module):
  """timm-style ViT applied per frame: [CLS (, DIST) ; patches] + position (+ temporal) tokens,
  pre-LN ViTBlocks and a final LayerNorm. Frames are independent sequences (rows b*T + t); models
  that mix frames do so between blocks (e.g. `temporal_roll`).

  `distilled` adds DeiT's distillation token after CLS (2 prefix tokens). `num_frames > 0` creates a
  temporal table [1, T, D] added to the patch tokens of frame t (`embed(add_temporal=...)`).
  """

  def __init__(self, *, img_size: int, patch_size: int, width: int, depth: int, num_heads: int,
               mlp_ratio: float = 4.0, ln_eps: float = 1e-6, num_frames: int = 0,
               distilled: bool = False, dropout: float = 0.0, drop_path_rate: float = 0.0,
               in_chans: int = 3, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    if img_size % patch_size:
      raise ValueError(f"img_size={img_size} is not a multiple of patch_size={patch_size}")
    pd = common.as_dtype(param_dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.patch_size = patch_size
    self.grid = img_size // patch_size
    self.num_prefix = 2 if distilled else 1
    self.patch_embed = PatchEmbed(patch_size, in_chans, width, **kw)
    token = lambda n: nnx.Param(_TOKEN_INIT(rngs.params(), (1, n, width), pd))
    self.cls_token = token(1)
    if distilled:
      self.dist_token = token(1)
    self.pos_embed = token(self.num_prefix + self.grid ** 2)
    if num_frames > 0:
      self.temporal_embed = nnx.Param(jnp.zeros((1, num_frames, width), pd))
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]   # torch.linspace
    self.blocks = nnx.List([ViTBlock(width, num_heads, mlp_ratio, ln_eps=ln_eps, drop_path=r,
                                     dropout=dropout, **kw) for r in rates])
    self.norm = common.layer_norm(width, ln_eps, **kw)
    self.dropout = dropout
    self.dtype = common.as_dtype(dtype)

  def patch_positions(self, grid_h: int, grid_w: int) -> jax.Array:
    """Spatial position table of the patch tokens [1, grid_h * grid_w, D] (bilinear resize)."""
    pos = self.pos_embed[...][:, self.num_prefix:]
    side = self.grid
    grid = resize_bilinear_align_corners(pos.reshape(1, side, side, -1), grid_h, grid_w)
    return grid.reshape(1, grid_h * grid_w, -1)

  def embed(self, frames: jax.Array, num_frames: int, patch_perm: jax.Array | None = None, *,
            add_temporal: bool = True, deterministic: bool = True,
            rngs: nnx.Rngs | None = None) -> jax.Array:
    """frames [B*T, H, W, C] (row b*T + t) -> tokens [B*T, prefix + P, D].

    `patch_perm` [B*T, P] (optional): sequence slot prefix+j holds patch perm[j] (raster index) with
    its position (+ temporal) embedding; None keeps raster order.
    """
    if frames.ndim != 4:
      raise ValueError(f"frames must be [B*T, H, W, C], got shape {frames.shape}")
    if self.dtype is not None:
      frames = frames.astype(self.dtype)
    bt, h, w, _ = frames.shape
    gh, gw = h // self.patch_size, w // self.patch_size
    x = self.patch_embed(frames)                                        # [B*T, P, D]
    x = x + self.patch_positions(gh, gw).astype(x.dtype)
    if add_temporal and hasattr(self, "temporal_embed"):
      table = self.temporal_embed[...]
      if table.shape[1] != num_frames:
        raise ValueError(f"video has {num_frames} frames but the temporal embedding has "
                         f"{table.shape[1]} (model num_frames)")
      x = x.reshape(bt // num_frames, num_frames, gh * gw, -1) + table[:, :, None].astype(x.dtype)
      x = x.reshape(bt, gh * gw, -1)
    if patch_perm is not None:
      perm = jnp.asarray(patch_perm)
      if perm.size != bt * gh * gw:
        raise ValueError(f"patch_perm has shape {perm.shape}; expected {gh * gw} patch indices "
                         f"for each of the {bt} frames")
      perm = perm.reshape(bt, gh * gw)
      x = jnp.take_along_axis(x, perm[..., None].astype(jnp.int32), axis=1)
    pos = self.pos_embed[...].astype(x.dtype)
    prefix = [self.cls_token[...].astype(x.dtype) + pos[:, :1]]
    if self.num_prefix == 2:
      prefix.append(self.dist_token[...].astype(x.dtype) + pos[:, 1:2])
    prefix = jnp.broadcast_to(jnp.concatenate(prefix, axis=1), (bt, self.num_prefix, x.shape[-1]))
    x = jnp.concatenate([prefix, x], axis=1)
    return common.dropout(x, self.dropout, deterministic=deterministic, rngs=rngs)

"""Video Swin Transformer (3-D shifted-window attention), channels-last [B, T, H, W, C].

Follows the VIOLET backbone (spec §2.2): a (2,4,4) patch convolution with temporal stride 1 after
one appended zero frame (T frames in -> T temporal tokens), stages of pre-norm blocks with
(shifted) 3-D window attention and a relative-position bias, PatchMerging (2x2 spatial) between
stages, a final LayerNorm. Everything that depends only on shapes (effective window and shift,
the relative-position index, the shift-window region ids) is computed in numpy at trace time.

Parameter tree (mirrors the torch names so converter rules stay one-to-one):
  patch_embed/{proj, norm}, layers/i/blocks/j/{norm1, attn/{query, key, value, out,
  relative_position_bias_table}, norm2, mlp/{fc1, fc2}}, layers/i/downsample/{norm, reduction},
  norm. The torch fused qkv is split into the shared Attention's query/key/value at conversion.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import Attention
from vlx.layers.mlp import Mlp

Triple = tuple[int, int, int]
MASK_VALUE = -100.0  # the reference's shift-mask value (not -inf)
_TABLE_INIT = nnx.initializers.truncated_normal(stddev=0.02)


# ----------------------------------------------------------------------------- static geometry

def effective_window(size: Sequence[int], window: Sequence[int],
                     shift: Sequence[int]) -> tuple[Triple, Triple]:
  """Per axis: a feature size <= the window makes the window that size and the shift 0."""
  win = tuple(int(s) if s <= w else int(w) for s, w in zip(size, window))
  sh = tuple(0 if s <= w else int(k) for s, w, k in zip(size, window, shift))
  return win, sh


@functools.lru_cache(maxsize=None)
def relative_position_index(window: Triple) -> np.ndarray:
  """[N, N] int index into the [(2wd-1)(2wh-1)(2ww-1), heads] table for the CONFIGURED window;
  tokens are flattened (d, h, w) row-major. Smaller effective windows slice it to [:n, :n]."""
  coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
  rel = coords[:, :, None] - coords[:, None, :] + (np.asarray(window) - 1)[:, None, None]
  sizes = 2 * np.asarray(window) - 1
  idx = rel[0] * (sizes[1] * sizes[2]) + rel[1] * sizes[2] + rel[2]
  idx.flags.writeable = False
  return idx


def _partition(x, window: Triple):
  """[B, D, H, W, C] -> [B, nW, N, C]: windows ordered (d-block, h-block, w-block), tokens inside
  a window (d, h, w) row-major (works on numpy and jax arrays)."""
  b, d, h, w, c = x.shape
  wd, wh, ww = window
  x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, -1, wd * wh * ww, c)


def _reverse(x, window: Triple, size: Triple):
  """Inverse of `_partition`: [B, nW, N, C] -> [B, D, H, W, C]."""
  b, _, _, c = x.shape
  (wd, wh, ww), (d, h, w) = window, size
  x = x.reshape(b, d // wd, h // wh, w // ww, wd, wh, ww, c)
  x = x.transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, d, h, w, c)


@functools.lru_cache(maxsize=None)
def shift_regions(padded: Triple, window: Triple, shift: Triple) -> np.ndarray:
  """[nW, N] int32 region id of every token of every window of the rolled, padded volume. Regions
  per axis: [0:-win], [-win:-shift], [-shift:] (a zero shift makes the whole axis one region)."""
  axes = []
  for size, win, sh in zip(padded, window, shift):
    lab = np.zeros(size, np.int32)
    if sh > 0:
      lab[size - win:size - sh] = 1
      lab[size - sh:] = 2
    axes.append(lab)
  ids = axes[0][:, None, None] * 9 + axes[1][None, :, None] * 3 + axes[2][None, None, :]
  regions = _partition(ids[None, ..., None], window)[0, ..., 0]
  regions.flags.writeable = False
  return regions


def region_mask(regions):
  """[nW, N] region ids -> [nW, N, N] additive mask: 0 within a region, MASK_VALUE across (numpy
  or jax; the model builds it on device from the small id table)."""
  xp = np if isinstance(regions, np.ndarray) else jnp
  return xp.where(regions[:, :, None] != regions[:, None, :], xp.float32(MASK_VALUE),
                  xp.float32(0.0))


def shift_mask(padded: Triple, window: Triple, shift: Triple) -> np.ndarray:
  """The reference's compute_mask: [nW, N, N] float32 (0 / MASK_VALUE)."""
  return region_mask(shift_regions(padded, window, shift))


# ----------------------------------------------------------------------------- modules

class WindowAttention3D(Attention):
  """Multi-head attention inside 3-D windows plus a learned relative-position bias table.

  Reuses `Attention` (query/key/value/out, fp32 softmax); the bias for the effective window of N
  tokens is table[index[:N, :N]] with the index of the configured window (spec §0.3)."""

  def __init__(self, dim: int, num_heads: int, window_size: Sequence[int], *,
               qkv_bias: bool = True, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    super().__init__(dim, num_heads, use_bias=qkv_bias, dtype=dtype, param_dtype=param_dtype,
                     rngs=rngs)
    if not qkv_bias:  # the output projection keeps its bias
      self.out = common.linear(dim, dim, ("heads", "embed"), dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
    self.window_size = tuple(int(w) for w in window_size)
    n_rel = int(np.prod([2 * w - 1 for w in self.window_size]))
    self.relative_position_bias_table = nnx.Param(
        _TABLE_INIT(rngs.params(), (n_rel, num_heads), common.as_dtype(param_dtype)))

  def position_bias(self, n: int) -> jax.Array:
    """[heads, n, n] bias for windows of n tokens (the configured index sliced to [:n, :n])."""
    idx = relative_position_index(self.window_size)[:n, :n].reshape(-1)
    table = self.relative_position_bias_table[...].astype(jnp.float32)
    return jnp.take(table, idx, axis=0).reshape(n, n, -1).transpose(2, 0, 1)

  def __call__(self, x: jax.Array, regions: np.ndarray | None = None, *,
               deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    """x [B, nW, N, C]; regions [nW, N] (shifted windows: tokens of different regions do not
    attend to each other) or None."""
    bias = self.position_bias(x.shape[-2])[None]                         # [1, H, N, N]
    if regions is not None:
      bias = bias + region_mask(jnp.asarray(regions))[:, None]           # [nW, H, N, N]
    return super().__call__(x, mask=bias, deterministic=deterministic, rngs=rngs)


class VideoSwinBlock(nnx.Module):
  """Pre-norm block: x + DropPath(W-MSA(LN1 x)), x + DropPath(MLP(LN2 x)); `shift_size` is the
  configured shift ((0,0,0) on even blocks, window//2 on odd ones)."""

  def __init__(self, dim: int, num_heads: int, window_size: Sequence[int],
               shift_size: Sequence[int], *, mlp_ratio: float, qkv_bias: bool, ln_eps: float,
               drop_path: float = 0.0, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = common.layer_norm(dim, ln_eps, **kw)
    self.attn = WindowAttention3D(dim, num_heads, window_size, qkv_bias=qkv_bias, **kw)
    self.norm2 = common.layer_norm(dim, ln_eps, **kw)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, activation="gelu", **kw)
    self.window_size = tuple(int(w) for w in window_size)
    self.shift_size = tuple(int(s) for s in shift_size)
    self.drop_path = drop_path

  def _attend(self, x: jax.Array, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
    """LN1 -> pad (after the norm) -> roll -> windows -> attention -> back -> crop."""
    size = x.shape[1:4]
    win, shift = effective_window(size, self.window_size, self.shift_size)
    x = self.norm1(x)
    pads = [(-s) % w for s, w in zip(size, win)]
    if any(pads):
      x = jnp.pad(x, [(0, 0)] + [(0, p) for p in pads] + [(0, 0)])
    padded = tuple(s + p for s, p in zip(size, pads))
    regions = None
    if any(shift):
      x = jnp.roll(x, tuple(-s for s in shift), axis=(1, 2, 3))
      regions = shift_regions(padded, win, shift)
    y = self.attn(_partition(x, win), regions, deterministic=deterministic, rngs=rngs)
    y = _reverse(y, win, padded)
    if any(shift):
      y = jnp.roll(y, shift, axis=(1, 2, 3))
    return y[:, :size[0], :size[1], :size[2]]

  def __call__(self, x: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """x [B, D, H, W, C] -> same shape."""
    dp = lambda y: common.drop_path(y, self.drop_path, deterministic=deterministic, rngs=rngs)
    x = x + dp(self._attend(x, deterministic=deterministic, rngs=rngs))
    return x + dp(self.mlp(self.norm2(x), deterministic=deterministic, rngs=rngs))


class PatchMerging(nnx.Module):
  """2x2 spatial merge: [B, D, H, W, C] -> [B, D, ceil(H/2), ceil(W/2), 2C] (time untouched)."""

  def __init__(self, dim: int, *, ln_eps: float, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = common.layer_norm(4 * dim, ln_eps, **kw)
    self.reduction = common.linear(4 * dim, 2 * dim, ("embed", "embed"), use_bias=False, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    h, w = x.shape[2], x.shape[3]
    if h % 2 or w % 2:
      x = jnp.pad(x, [(0, 0), (0, 0), (0, h % 2), (0, w % 2), (0, 0)])
    parts = [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]
    return self.reduction(self.norm(jnp.concatenate(parts, axis=-1)))


class PatchEmbed3D(nnx.Module):
  """Pad H/W to patch multiples, append one zero frame, Conv3d (stride 1 in time), LayerNorm."""

  def __init__(self, patch_size: Sequence[int], in_chans: int, dim: int, *, ln_eps: float,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.patch_size = tuple(int(p) for p in patch_size)
    strides = (1,) + self.patch_size[1:]
    names = (None,) * 4 + ("embed",)
    self.proj = nnx.Conv(in_chans, dim, self.patch_size, strides=strides, padding="VALID",
                         dtype=common.as_dtype(dtype), param_dtype=common.as_dtype(param_dtype),
                         kernel_init=nnx.with_partitioning(common.default_kernel_init, names),
                         rngs=rngs)
    self.norm = common.layer_norm(dim, ln_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, video: jax.Array) -> jax.Array:
    """[B, T, H, W, C] (normalised) -> [B, T + 2 - pd, ceil(H/ph), ceil(W/pw), dim]."""
    _, _, h, w, _ = video.shape
    ph, pw = self.patch_size[1:]
    pad = [(0, 0), (0, 1), (0, (-h) % ph), (0, (-w) % pw), (0, 0)]
    return self.norm(self.proj(jnp.pad(video, pad)))


class VideoSwinStage(nnx.Module):
  """Blocks with alternating regular / shifted windows, then (optionally) PatchMerging."""

  def __init__(self, dim: int, depth: int, num_heads: int, window_size: Sequence[int], *,
               mlp_ratio: float, qkv_bias: bool, ln_eps: float, drop_path: Sequence[float],
               downsample: bool, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    shifted = tuple(w // 2 for w in window_size)
    self.blocks = nnx.List([
        VideoSwinBlock(dim, num_heads, window_size, shifted if i % 2 else (0, 0, 0),
                       mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, ln_eps=ln_eps,
                       drop_path=float(drop_path[i]), **kw) for i in range(depth)])
    if downsample:
      self.downsample = PatchMerging(dim, ln_eps=ln_eps, **kw)

  def __call__(self, x: jax.Array, *, remat: bool = False, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    call = lambda blk, h, r: blk(h, deterministic=deterministic, rngs=r)
    x = common.run_blocks(list(self.blocks), x, call, remat=remat, rngs=rngs)
    return self.downsample(x) if hasattr(self, "downsample") else x


class VideoSwin(nnx.Module):
  """SwinTransformer3D: normalised video [B, T, H, W, 3] -> [B, T, H/32, W/32, out_dim]."""

  def __init__(self, *, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 18, 2),
               num_heads: Sequence[int] = (3, 6, 12, 24), window_size: Sequence[int] = (8, 7, 7),
               patch_size: Sequence[int] = (2, 4, 4), in_chans: int = 3, mlp_ratio: float = 4.0,
               qkv_bias: bool = True, drop_path_rate: float = 0.2, ln_eps: float = 1e-5,
               remat: bool = False, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    depths, num_heads = tuple(int(d) for d in depths), tuple(int(h) for h in num_heads)
    if len(depths) != len(num_heads):
      raise ValueError(f"video swin: depths {depths} and num_heads {num_heads} differ in length")
    if len(window_size) != 3 or len(patch_size) != 3:
      raise ValueError(f"video swin: window_size {window_size} and patch_size {patch_size} must "
                       "have 3 entries (time, height, width)")
    for i, h in enumerate(num_heads):
      if (embed_dim * 2 ** i) % h:
        raise ValueError(f"video swin stage {i}: width {embed_dim * 2 ** i} is not divisible by "
                         f"num_heads={h}")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.patch_embed = PatchEmbed3D(patch_size, in_chans, embed_dim, ln_eps=ln_eps, **kw)
    total = sum(depths)
    rates = np.linspace(0.0, drop_path_rate, total) if total else np.zeros(0)  # torch.linspace
    starts = np.cumsum((0,) + depths)
    self.layers = nnx.List([
        VideoSwinStage(embed_dim * 2 ** i, d, num_heads[i], window_size, mlp_ratio=mlp_ratio,
                       qkv_bias=qkv_bias, ln_eps=ln_eps,
                       drop_path=rates[starts[i]:starts[i + 1]].tolist(),
                       downsample=i < len(depths) - 1, **kw)
        for i, d in enumerate(depths)])
    self.out_dim = embed_dim * 2 ** (len(depths) - 1)
    self.norm = common.layer_norm(self.out_dim, ln_eps, **kw)
    self.remat = remat
    self.dtype = common.as_dtype(dtype)

  def __call__(self, video: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None, return_stages: bool = False):
    """video [B, T, H, W, C] normalised -> [B, T, H/32, W/32, out_dim] after the final norm;
    `return_stages` also gives {'patch_embed', 'stage0', ...} (each stage after its merging, the
    last one before the final norm), channels-last."""
    if video.ndim != 5:
      raise ValueError(f"video must be [B, T, H, W, C], got shape {video.shape}")
    if self.dtype is not None:
      video = video.astype(self.dtype)
    x = self.patch_embed(video)
    stages = {"patch_embed": x}
    for i, layer in enumerate(self.layers):
      x = layer(x, remat=self.remat, deterministic=deterministic, rngs=rngs)
      stages[f"stage{i}"] = x
    out = self.norm(x)
    return (out, stages) if return_stages else out

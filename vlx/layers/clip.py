"""CLIP (Radford et al. 2021) ViT image tower and text tower built from vlx layers.

Layout of OpenAI's / open_clip's ViT CLIP: the image tower is a patch convolution without bias, a
class embedding, a learned positional table, `ln_pre`, pre-LN residual attention blocks, `ln_post`
on the CLS token and a projection matrix `proj` [width, embed]; the text tower is a token embedding
plus a learned positional table, causally masked blocks, `ln_final`, the read-out at the EOT token
(the largest id of each row, CLIP's tokenizer gives EOT the last id) and `text_projection`.
Activation: QuickGELU for OpenAI's released weights (and open_clip's `*-quickgelu` configs), exact
GELU for open_clip's other ViT configs. LayerNorm eps 1e-5, heads = width // 64 at release sizes.
Converter rules: vlx/layers/clip_rules.py.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import Attention
from vlx.layers.mlp import Mlp

LN_EPS = 1e-5
# CLIP's image normalisation (RGB in [0, 1], then (x - mean) / std), the same for every release.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
_INIT = nnx.initializers.normal(stddev=0.02)


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """Sizes of a ViT CLIP. Head counts are not in the weights: width // 64 for the releases."""
  embed_dim: int = 512
  image_size: int = 224
  patch_size: int = 32
  vision_width: int = 768
  vision_layers: int = 12
  vision_heads: int = 12
  context_length: int = 77
  vocab_size: int = 49408
  text_width: int = 512
  text_layers: int = 12
  text_heads: int = 8
  vision_mlp_dim: int = 0            # MLP hidden size; 0 = 4 * width (every OpenAI release)
  text_mlp_dim: int = 0
  activation: str = "quick_gelu"     # 'quick_gelu' (OpenAI) or 'gelu' (open_clip non-quickgelu)


def normalize_images(images: jax.Array) -> jax.Array:
  """RGB [..., 3] in [0, 1] -> CLIP-normalised input of `ClipVisionTower`."""
  mean = jnp.asarray(IMAGE_MEAN, jnp.float32)
  std = jnp.asarray(IMAGE_STD, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_aa_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of torch F.interpolate(mode='bicubic', antialias=True,
  align_corners=False) along one axis: open_clip's `resize_pos_embed` default (its antialiased
  kernel has a = -0.5, widens by the scale when shrinking and renormalises at the borders)."""
  scale = n_in / n_out
  support = 2.0 * scale if scale >= 1 else 2.0
  inv = 1.0 / scale if scale >= 1 else 1.0
  w = np.zeros((n_out, n_in), np.float64)
  for i in range(n_out):
    center = scale * (i + 0.5)
    lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
    j = np.arange(lo, hi)
    k = _cubic((j - center + 0.5) * inv)
    w[i, lo:hi] = k / k.sum()
  return w


def preprocess(frames: jax.Array, size: int) -> jax.Array:
  """uint8 RGB frames [N, H, W, 3] -> CLIP input [N, size, size, 3] float32: CLIP's
  Resize(size, bicubic) of the shorter side (the longer becomes int(size * long / short)),
  CenterCrop(size), /255, normalisation. The resize is torch's antialiased bicubic in float32
  (`bicubic_aa_matrix`); CLIP resizes with PIL on uint8, which rounds between passes, so pixels
  can differ by about one grey level from CLIP's own preprocessing."""
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [N, H, W, 3] RGB, got shape {frames.shape}")
  h, w = frames.shape[1:3]
  short, long = min(h, w), max(h, w)
  scaled = (size, int(size * long / short)) if h <= w else (int(size * long / short), size)
  if (h, w) == scaled:
    x = frames.astype(jnp.float32)
  else:
    mh = jnp.asarray(bicubic_aa_matrix(h, scaled[0]), jnp.float32)
    mw = jnp.asarray(bicubic_aa_matrix(w, scaled[1]), jnp.float32)
    x = jnp.einsum("ih,jw,nhwc->nijc", mh, mw, frames.astype(jnp.float32))
  top, left = int(round((scaled[0] - size) / 2.0)), int(round((scaled[1] - size) / 2.0))
  x = jnp.clip(x[:, top:top + size, left:left + size], 0.0, 255.0) / 255.0
  return normalize_images(x)


def resize_grid_bicubic(pos: jax.Array, grid: int) -> jax.Array:
  """Patch positional table [g*g, D] -> [grid*grid, D] as open_clip's resize_pos_embed
  (bicubic, antialias); identity when the grids agree. Works on numpy and jax arrays."""
  g = math.isqrt(pos.shape[0])
  if g * g != pos.shape[0]:
    raise ValueError(f"positional table has {pos.shape[0]} patch rows: not a square grid")
  if g == grid:
    return pos
  m = bicubic_aa_matrix(g, grid).astype(np.float32)
  x = pos.reshape(g, g, -1)
  xp = jnp if isinstance(pos, jax.Array) else np
  y = xp.einsum("ih,jw,hwd->ijd", m, m, x.astype(xp.float32))
  return y.reshape(grid * grid, -1).astype(pos.dtype)


class ResidualBlock(nnx.Module):
  """x + attn(ln_1(x), mask), then x + mlp(ln_2(x)) (CLIP's ResidualAttentionBlock)."""

  def __init__(self, width: int, heads: int, *, mlp_dim: int, activation: str, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = common.layer_norm(width, LN_EPS, **kw)
    self.attn = Attention(width, heads, **kw)
    self.norm2 = common.layer_norm(width, LN_EPS, **kw)
    self.mlp = Mlp(width, mlp_dim or 4 * width, width, activation=activation, **kw)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.norm1(x), mask=mask)
    return x + self.mlp(self.norm2(x))


def _blocks(n: int, width: int, heads: int, mlp_dim: int, cfg: ClipConfig, kw: dict) -> nnx.List:
  return nnx.List([ResidualBlock(width, heads, mlp_dim=mlp_dim, activation=cfg.activation, **kw)
                   for _ in range(n)])


def _proj(rows: int, cols: int, pd, rngs: nnx.Rngs) -> nnx.Param:
  init = nnx.with_partitioning(_INIT, ("embed", "proj"))
  return nnx.Param(init(rngs.params(), (rows, cols), pd))


class ClipVisionTower(nnx.Module):
  """Images [N, H, W, 3] (CLIP-normalised, see `normalize_images`) -> features [N, embed].

  Another image size than `image_size` resizes the positional table on the fly with
  `resize_grid_bicubic` (open_clip's bicubic, antialiased)."""

  def __init__(self, cfg: ClipConfig, *, dtype=None, param_dtype=jnp.float32, remat: bool = False,
               rngs: nnx.Rngs):
    if cfg.image_size % cfg.patch_size:
      raise ValueError(f"image_size={cfg.image_size} is not a multiple of "
                       f"patch_size={cfg.patch_size}")
    pd, w, p = common.as_dtype(param_dtype), cfg.vision_width, cfg.patch_size
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.patch_size, self.grid, self.remat = p, cfg.image_size // p, remat
    self.dtype = common.as_dtype(dtype)
    self.conv1 = nnx.Conv(3, w, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                          dtype=self.dtype, param_dtype=pd,
                          kernel_init=nnx.with_partitioning(common.default_kernel_init,
                                                            (None, None, None, "embed")),
                          rngs=rngs)
    self.class_embedding = nnx.Param(_INIT(rngs.params(), (w,), pd))
    self.positional_embedding = nnx.Param(_INIT(rngs.params(), (1 + self.grid ** 2, w), pd))
    self.ln_pre = common.layer_norm(w, LN_EPS, **kw)
    self.blocks = _blocks(cfg.vision_layers, w, cfg.vision_heads, cfg.vision_mlp_dim, cfg, kw)
    self.ln_post = common.layer_norm(w, LN_EPS, **kw)
    self.proj = _proj(w, cfg.embed_dim, pd, rngs)

  def tokens(self, images: jax.Array) -> jax.Array:
    """[N, H, W, 3] -> all tokens after the last block [N, 1 + P, width] (before ln_post)."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images must be [N, H, W, 3], got shape {images.shape}")
    x = images.astype(self.dtype) if self.dtype is not None else images
    h, w = x.shape[1] // self.patch_size, x.shape[2] // self.patch_size
    if h != w:
      raise ValueError(f"images must be square for the CLIP positional table, got {images.shape}")
    x = self.conv1(x).reshape(x.shape[0], h * w, -1)
    pos = self.positional_embedding[...]
    pos = jnp.concatenate([pos[:1], resize_grid_bicubic(pos[1:], h)], axis=0).astype(x.dtype)
    cls = jnp.broadcast_to(self.class_embedding[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    x = self.ln_pre(jnp.concatenate([cls, x], axis=1) + pos)
    return common.run_blocks(self.blocks, x, lambda b, y, _: b(y), remat=self.remat)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = self.ln_post(self.tokens(images)[:, 0])
    return x @ self.proj[...].astype(x.dtype)


def causal_mask(length: int) -> jax.Array:
  """Additive [L, L] mask: position i attends to positions <= i (CLIP's text attn_mask)."""
  return jnp.where(jnp.tril(jnp.ones((length, length), bool)), 0.0, -1e9).astype(jnp.float32)


class ClipTextTower(nnx.Module):
  """Token ids [N, L <= context_length] -> features [N, embed] read at the EOT (argmax id)."""

  def __init__(self, cfg: ClipConfig, *, dtype=None, param_dtype=jnp.float32, remat: bool = False,
               rngs: nnx.Rngs):
    pd, w = common.as_dtype(param_dtype), cfg.text_width
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.remat, self.dtype = remat, common.as_dtype(dtype)
    self.token_embedding = nnx.Embed(cfg.vocab_size, w, dtype=self.dtype, param_dtype=pd,
                                     embedding_init=nnx.with_partitioning(_INIT, ("vocab", "embed")),
                                     rngs=rngs)
    self.positional_embedding = nnx.Param(_INIT(rngs.params(), (cfg.context_length, w), pd))
    self.blocks = _blocks(cfg.text_layers, w, cfg.text_heads, cfg.text_mlp_dim, cfg, kw)
    self.ln_final = common.layer_norm(w, LN_EPS, **kw)
    self.text_projection = _proj(w, cfg.embed_dim, pd, rngs)

  def hidden(self, ids: jax.Array) -> jax.Array:
    """ids [N, L] -> ln_final of every position [N, L, width]."""
    length = ids.shape[-1]
    if length > self.positional_embedding.shape[0]:
      raise ValueError(f"text has {length} tokens; the CLIP context length is "
                       f"{self.positional_embedding.shape[0]}")
    x = self.token_embedding(ids)
    x = x + self.positional_embedding[...][:length].astype(x.dtype)
    mask = causal_mask(length)
    x = common.run_blocks(self.blocks, x, lambda b, y, _: b(y, mask), remat=self.remat)
    return self.ln_final(x)

  def token_features(self, ids: jax.Array) -> jax.Array:
    """Projected output of every position [N, L, embed] (what a frozen CLIP text tower feeds as
    per-word tokens; the causal mask makes position i depend on tokens <= i only)."""
    x = self.hidden(ids)
    return x @ self.text_projection[...].astype(x.dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    x = self.hidden(ids)
    eot = jnp.argmax(ids, axis=-1)
    x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    return x @ self.text_projection[...].astype(x.dtype)


class ClipModel(nnx.Module):
  """Both towers and the learned temperature (`logit_scale`, log of the logit multiplier)."""

  def __init__(self, cfg: ClipConfig, *, dtype=None, param_dtype=jnp.float32, remat: bool = False,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, remat=remat, rngs=rngs)
    self.config = cfg
    self.visual = ClipVisionTower(cfg, **kw)
    self.text = ClipTextTower(cfg, **kw)
    self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), common.as_dtype(param_dtype)))

  def encode_image(self, images: jax.Array) -> jax.Array:
    """[N, H, W, 3] CLIP-normalised -> [N, embed] (not L2-normalised, as CLIP's encode_image)."""
    return self.visual(images)

  def encode_text(self, ids: jax.Array) -> jax.Array:
    """[N, L] token ids -> [N, embed] (not L2-normalised)."""
    return self.text(ids)

  def __call__(self, images: jax.Array, ids: jax.Array) -> jax.Array:
    """logits_per_image [N_img, N_txt] = exp(logit_scale) * cos(image, text), in float32."""
    img = common.l2_normalize(self.encode_image(images))
    txt = common.l2_normalize(self.encode_text(ids))
    return jnp.exp(self.logit_scale[...].astype(jnp.float32)) * img @ txt.T


def build(cfg, *, rngs: nnx.Rngs, dtype=None, remat: bool = False) -> ClipModel:
  """ClipModel from a ClipConfig or a mapping of its fields (e.g. `clip_rules.infer_config`)."""
  if not isinstance(cfg, ClipConfig):
    names = {f.name for f in dataclasses.fields(ClipConfig)}
    fields = dict(cfg)
    unknown = sorted(set(fields) - names)
    if unknown:
      raise ValueError(f"CLIP config: unknown field(s) {unknown}; expected some of {sorted(names)}")
    cfg = ClipConfig(**fields)
  return ClipModel(cfg, dtype=dtype, remat=remat, rngs=rngs)


def word_features(text: ClipTextTower, ids: jax.Array, max_tokens: int
                  ) -> tuple[jax.Array, jax.Array]:
  """Per-token text features of a (frozen) CLIP text tower: `token_features` without the SOT
  position, the first `max_tokens` positions [N, max_tokens, embed] float32, and their mask
  [N, max_tokens] (1 for the tokens before EOT; EOT itself and padding 0). Rows shorter than
  max_tokens + 1 ids are zero-padded."""
  feats = text.token_features(ids).astype(jnp.float32)[:, 1:1 + max_tokens]
  if feats.shape[1] < max_tokens:
    feats = jnp.pad(feats, ((0, 0), (0, max_tokens - feats.shape[1]), (0, 0)))
  eot = jnp.argmax(ids, axis=-1)                          # position of EOT in `ids`
  mask = (jnp.arange(1, max_tokens + 1)[None, :] < eot[:, None]).astype(jnp.float32)
  return feats, mask


def image_features(model: ClipModel, frames: np.ndarray, *, batch_size: int = 64,
                   normalize: bool = True) -> np.ndarray:
  """uint8 RGB frames [N, H, W, 3] -> CLIP image features [N, embed] float32 (L2-normalised
  with `normalize`), e.g. one frame per second of a video. Frames go through `preprocess` and the
  image tower in fixed batches of `batch_size` (the last one zero-padded), so one compiled
  program serves every video of the same frame size."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be [N, H, W, 3] RGB, got shape {frames.shape}")
  size = model.visual.grid * model.visual.patch_size
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(st, batch):
    feats = nnx.merge(graphdef, st).encode_image(preprocess(batch, size)).astype(jnp.float32)
    return common.l2_normalize(feats) if normalize else feats

  out = []
  for start in range(0, len(frames), batch_size):
    batch = frames[start:start + batch_size]
    pad = batch_size - len(batch)
    if pad:
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], batch.dtype)])
    out.append(np.asarray(run(state, batch))[:batch_size - pad])
  if not out:
    return np.zeros((0, model.visual.proj.shape[1]), np.float32)
  return np.concatenate(out)

"""DALL-E dVAE encoder (OpenAI `dall_e` 0.1 `Encoder`): frames -> discrete visual tokens.

Channels-last port of the package's encoder (spec §9): a 7x7 input conv, four groups of residual
blocks (widths n_hid·{1,2,4,8}, MaxPool(2) after groups 1-3), ReLU + 1x1 conv to `vocab_size`
logits. Each block is `id_path(x) + (1 / n_layers²) · res_path(x)` with
res_path = ReLU, conv3x3 -> n_out/4, ReLU, conv3x3, ReLU, conv3x3, ReLU, conv1x1 -> n_out.
VIOLET (MVM targets), token datasets and VIMPAC use `tokens` / `frame_tokens`: argmax ids of the
logits. With `dtype=bfloat16` every conv but the output one runs in bf16 (the package runs them in
fp16 on CUDA); the output conv always runs in float32, as in the package.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common

LOGIT_LAPLACE_EPS = 0.1


def map_pixels(x: jax.Array) -> jax.Array:
  """Pixels in [0, 1] -> the encoder's input range [eps, 1 - eps] (logit-Laplace eps 0.1)."""
  return (1.0 - 2.0 * LOGIT_LAPLACE_EPS) * jnp.asarray(x, jnp.float32) + LOGIT_LAPLACE_EPS


def _conv(n_in: int, n_out: int, kw: int, *, dtype: Any, param_dtype: Any,
          rngs: nnx.Rngs) -> nnx.Conv:
  """The package's Conv2d: 'same' padding (kw-1)//2, weights N(0, 1/(n_in·kw²)), zero bias."""
  return nnx.Conv(n_in, n_out, (kw, kw), padding=(kw - 1) // 2, dtype=dtype,
                  param_dtype=param_dtype,
                  kernel_init=nnx.initializers.variance_scaling(1.0, "fan_in", "normal"),
                  bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class ResPath(nnx.Module):
  """ReLU, conv3x3 n_in->h, ReLU, conv3x3 h->h, ReLU, conv3x3 h->h, ReLU, conv1x1 h->n_out."""

  def __init__(self, n_in: int, n_out: int, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
    hid = n_out // 4
    self.conv_1 = _conv(n_in, hid, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv_2 = _conv(hid, hid, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv_3 = _conv(hid, hid, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv_4 = _conv(hid, n_out, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv in (self.conv_1, self.conv_2, self.conv_3, self.conv_4):
      x = conv(jax.nn.relu(x))
    return x


class EncoderBlock(nnx.Module):
  """id_path(x) + post_gain · res_path(x); id_path is a 1x1 conv only when the width changes."""

  def __init__(self, n_in: int, n_out: int, n_layers: int, *, dtype: Any, param_dtype: Any,
               rngs: nnx.Rngs):
    if n_out % 4:
      raise ValueError(f"dVAE block width {n_out} must be a multiple of 4")
    self.post_gain = 1.0 / n_layers ** 2
    self.id_path = (_conv(n_in, n_out, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                    if n_in != n_out else None)
    self.res_path = ResPath(n_in, n_out, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    skip = x if self.id_path is None else self.id_path(x)
    return skip + self.post_gain * self.res_path(x)


class Group(nnx.Module):
  """`n_blocks` EncoderBlocks (block_1 .. block_n), then MaxPool(2) when `pool`."""

  def __init__(self, n_in: int, n_out: int, n_blocks: int, n_layers: int, pool: bool, *,
               dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
    self.n_blocks = n_blocks
    self.pool = pool
    for i in range(1, n_blocks + 1):
      setattr(self, f"block_{i}", EncoderBlock(n_in if i == 1 else n_out, n_out, n_layers,
                                               dtype=dtype, param_dtype=param_dtype, rngs=rngs))

  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(1, self.n_blocks + 1):
      x = getattr(self, f"block_{i}")(x)
    if self.pool:
      x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    return x


class DalleEncoder(nnx.Module):
  """`dall_e.Encoder` on channels-last input. Parameter paths: input, group_G/block_K/{id_path,
  res_path/conv_1..conv_4}, output (each with kernel HWIO and bias)."""

  def __init__(self, *, n_hid: int = 256, n_blk_per_group: int = 2, input_channels: int = 3,
               vocab_size: int = 8192, group_count: int = 4, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if n_blk_per_group < 1 or group_count < 1:
      raise ValueError(f"DalleEncoder: n_blk_per_group={n_blk_per_group} and "
                       f"group_count={group_count} must be >= 1")
    dtype, param_dtype = common.as_dtype(dtype), common.as_dtype(param_dtype)
    self.group_count = group_count
    self.vocab_size = vocab_size
    self.dtype = dtype
    n_layers = group_count * n_blk_per_group
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.input = _conv(input_channels, n_hid, 7, **kw)
    width = n_hid
    for g in range(1, group_count + 1):
      out = n_hid * 2 ** (g - 1)
      setattr(self, f"group_{g}", Group(width, out, n_blk_per_group, n_layers,
                                        pool=g < group_count, **kw))
      width = out
    # The package keeps the output conv in float32 whatever the precision of the others.
    self.output = _conv(width, vocab_size, 1, dtype=jnp.float32, param_dtype=param_dtype,
                        rngs=rngs)

  @property
  def downsample(self) -> int:
    """Input pixels per token side (8 with the package's 4 groups)."""
    return 2 ** (self.group_count - 1)

  def __call__(self, x: jax.Array, *, return_activations: bool = False):
    """x [N, S, S, C] already `map_pixels`'d -> float32 logits [N, S/8, S/8, vocab] (and, with
    `return_activations`, the outputs of input / group_1.. as channels-last arrays)."""
    acts = {}
    h = self.input(x if self.dtype is None else x.astype(self.dtype))
    acts["input"] = h
    for g in range(1, self.group_count + 1):
      h = getattr(self, f"group_{g}")(h)
      acts[f"group_{g}"] = h
    logits = self.output(jax.nn.relu(h.astype(jnp.float32)))
    return (logits, acts) if return_activations else logits


def tokens(encoder: DalleEncoder, pixels01: jax.Array) -> jax.Array:
  """Pixels in [0, 1] [N, S, S, 3] -> int32 token ids [N, S/8, S/8] (map_pixels, encoder,
  argmax). Pure and traceable: call it inside jit (e.g. `nnx.jit(tokens)`) or use `tokenizer`."""
  return jnp.argmax(encoder(map_pixels(pixels01)), axis=-1).astype(jnp.int32)


def resize_frames(video01: jax.Array, size: int) -> jax.Array:
  """[..., H, W, C] -> [..., size, size, C], bilinear with antialiasing (identity when equal)."""
  if video01.shape[-3:-1] == (size, size):
    return video01
  shape = video01.shape[:-3] + (size, size, video01.shape[-1])
  return jax.image.resize(jnp.asarray(video01, jnp.float32), shape, "bilinear", antialias=True)


def frame_tokens(encoder: DalleEncoder, video01: jax.Array, grid: int) -> jax.Array:
  """Video in [0, 1] [B, T, H, W, 3] -> int32 [B, T, grid, grid]: each frame resized to
  grid·8 px then `tokens` (one token per (H/grid)-pixel patch, VIOLET's MVM targets)."""
  b, t = video01.shape[:2]
  frames = resize_frames(video01.reshape((b * t,) + video01.shape[2:]), grid * encoder.downsample)
  return tokens(encoder, frames).reshape(b, t, grid, grid)


def tokenizer(encoder: DalleEncoder, *, grid: int | None = None):
  """A jitted `pixels -> tokens` (or, with `grid`, `video -> frame_tokens`) closing over the
  encoder's weights once: no nnx graph traversal per call, for tokenising whole datasets."""
  graphdef, state = nnx.split(encoder)

  @jax.jit
  def run(state, x):
    enc = nnx.merge(graphdef, state)
    return tokens(enc, x) if grid is None else frame_tokens(enc, x, grid)

  return lambda x: run(state, x)

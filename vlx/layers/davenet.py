"""DAVEnet (ResDavenet) audio CNN: a log-mel spectrogram [B, mel, T] -> feature tokens [B, T', C].

The reference network is a 2-D CNN whose input height is the mel axis: its first convolution spans
all mel bins (kernel (mel, 1)), after which the height is 1 and every later convolution has a
(1, k) kernel. It is therefore a 1-D CNN along time, which is how it is written here: channels-last
[B, T, C] with 1-D convolutions (kernels [k, in, out]). Each stage halves the time axis (stride 2
in its first block, with a 1x1 stride-2 projection shortcut), so T' = ceil(T / 2**stages).
BatchNorm (eps 1e-5) uses running statistics unless `train=True` (batch statistics over B and T,
as torch's BatchNorm2d in train mode). The reference's extra `batchnorm1` is never applied in its
forward pass, so this layer has none (converters drop it).
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common

BN_EPS = 1e-5


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int, *, dtype, param_dtype,
          rngs: nnx.Rngs) -> nnx.Conv:
  """Bias-free 1-D convolution with 'same'-style padding (kernel // 2 on each side)."""
  pad = kernel // 2
  return nnx.Conv(in_ch, out_ch, (kernel,), strides=(stride,), padding=((pad, pad),),
                  use_bias=False, dtype=common.as_dtype(dtype),
                  param_dtype=common.as_dtype(param_dtype),
                  kernel_init=nnx.with_partitioning(common.default_kernel_init,
                                                    (None, None, "embed")), rngs=rngs)


class BatchNorm(nnx.Module):
  """torch BatchNorm over [B, T, C] (statistics over B and T), eps 1e-5, momentum 0.1: normalises
  with the biased batch variance and, in train mode, updates the running variance with the
  unbiased one (n / (n - 1)), as torch does (flax's BatchNorm keeps the biased one)."""

  def __init__(self, ch: int, *, eps: float = BN_EPS, momentum: float = 0.1,
               param_dtype=jnp.float32):
    pd = common.as_dtype(param_dtype)
    self.scale = nnx.Param(jnp.ones((ch,), pd))
    self.bias = nnx.Param(jnp.zeros((ch,), pd))
    self.mean = nnx.BatchStat(jnp.zeros((ch,), jnp.float32))
    self.var = nnx.BatchStat(jnp.ones((ch,), jnp.float32))
    self.eps, self.momentum = eps, momentum

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    xf = x.astype(jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(xf, axis=axes)
      var = jnp.mean(jnp.square(xf - mean), axis=axes)
      n = xf.size // xf.shape[-1]
      m = self.momentum
      self.mean[...] = (1 - m) * self.mean[...] + m * jax.lax.stop_gradient(mean)
      self.var[...] = (1 - m) * self.var[...] + m * jax.lax.stop_gradient(var) * n / max(n - 1, 1)
    else:
      mean, var = self.mean[...], self.var[...]
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
    return y.astype(x.dtype)


def _bn(ch: int, *, param_dtype, rngs: nnx.Rngs) -> BatchNorm:
  del rngs
  return BatchNorm(ch, param_dtype=param_dtype)


def _norm(bn: BatchNorm, x: jax.Array, train: bool) -> jax.Array:
  return bn(x, train=train)


class BasicBlock(nnx.Module):
  """conv(k, stride) -> BN -> ReLU -> conv(k) -> BN, + shortcut (1x1 stride conv + BN when the
  shape changes), ReLU."""

  def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, *, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.conv1 = _conv(in_ch, out_ch, kernel, stride, **kw)
    self.bn1 = _bn(out_ch, param_dtype=param_dtype, rngs=rngs)
    self.conv2 = _conv(out_ch, out_ch, kernel, 1, **kw)
    self.bn2 = _bn(out_ch, param_dtype=param_dtype, rngs=rngs)
    if stride != 1 or in_ch != out_ch:
      self.down_conv = _conv(in_ch, out_ch, 1, stride, **kw)
      self.down_bn = _bn(out_ch, param_dtype=param_dtype, rngs=rngs)
    else:
      self.down_conv = self.down_bn = None

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    h = jax.nn.relu(_norm(self.bn1, self.conv1(x), train))
    h = _norm(self.bn2, self.conv2(h), train)
    res = x if self.down_conv is None else _norm(self.down_bn, self.down_conv(x), train)
    return jax.nn.relu(h + res)


class DAVEnet(nnx.Module):
  """ResDavenet: `widths[0]` channels from the mel projection, then one stage per entry of
  `layers` (stage k: layers[k] blocks of width widths[k + 1], stride 2 in its first block).
  Released DAVEnet v2: mel 40, layers (2,2,1,1,1,1), widths (128,...,4096), kernel 9."""

  def __init__(self, *, feat_dim: int = 40, layers: Sequence[int] = (2, 2, 1, 1, 1, 1),
               widths: Sequence[int] = (128, 128, 256, 512, 1024, 2048, 4096),
               kernel: int = 9, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    if len(widths) != len(layers) + 1:
      raise ValueError(f"DAVEnet widths {tuple(widths)} need len(layers) + 1 = "
                       f"{len(layers) + 1} entries")
    if kernel % 2 == 0:
      raise ValueError(f"DAVEnet kernel {kernel} must be odd")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.feat_dim = feat_dim
    self.conv1 = _conv(feat_dim, widths[0], 1, 1, **kw)   # the (mel x 1) conv: over mel bins
    self.bn1 = _bn(widths[0], param_dtype=param_dtype, rngs=rngs)
    stages = []
    for k, n in enumerate(layers):
      blocks = [BasicBlock(widths[k] if i == 0 else widths[k + 1], widths[k + 1], kernel,
                           2 if i == 0 else 1, **kw) for i in range(n)]
      stages.append(nnx.List(blocks))
    self.stages = nnx.List(stages)
    self.dtype = common.as_dtype(dtype)

  @property
  def stride(self) -> int:
    return 2 ** len(self.stages)

  def __call__(self, mel: jax.Array, *, train: bool = False) -> jax.Array:
    """mel [B, feat_dim, T] (the reference layout) -> [B, ceil(T / stride), widths[-1]]."""
    if mel.ndim != 3 or mel.shape[1] != self.feat_dim:
      raise ValueError(f"DAVEnet expects a spectrogram [B, {self.feat_dim}, T], got {mel.shape}")
    x = jnp.swapaxes(mel, 1, 2)
    if self.dtype is not None:
      x = x.astype(self.dtype)
    x = jax.nn.relu(_norm(self.bn1, self.conv1(x), train))
    for stage in self.stages:
      for blk in stage:
        x = blk(x, train=train)
    return x

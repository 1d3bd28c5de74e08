"""Standard tensor hooks for converter rules (torch layout -> vlx layout).

Hooks use only array methods and indexing (`x.T`, `x.transpose`, `x.reshape`, `x[idx]`) so that the
same function runs on numpy arrays (real conversion) and on jax tracers: the engine's dry run checks
full-size checkpoints with `jax.eval_shape` without allocating a single weight.
A hook maps one array to one array, or (split hooks) to a tuple of arrays for multi-target rules.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlx.layers import common

Hook = Callable[[Any], Any]


def identity(x: Any) -> Any:
  """Same layout in both frameworks (embeddings, norms, biases, positional tables)."""
  return x


def linear(x: Any) -> Any:
  """torch Linear weight (out, in) -> vlx kernel (in, out)."""
  if x.ndim != 2:
    raise ValueError(f"linear hook expects a 2-D weight, got shape {tuple(x.shape)}")
  return x.T


def conv2d(x: Any) -> Any:
  """torch Conv2d weight OIHW -> flax HWIO."""
  if x.ndim != 4:
    raise ValueError(f"conv2d hook expects an OIHW weight, got shape {tuple(x.shape)}")
  return x.transpose(2, 3, 1, 0)


def conv3d(x: Any) -> Any:
  """torch Conv3d weight OIDHW -> flax DHWIO."""
  if x.ndim != 5:
    raise ValueError(f"conv3d hook expects an OIDHW weight, got shape {tuple(x.shape)}")
  return x.transpose(2, 3, 4, 1, 0)


def split_qkv(n: int = 3, axis: int = 0) -> Hook:
  """Splits a fused projection into `n` equal chunks along `axis` (fused qkv -> q, k, v).

  For a torch fused weight (n*D, D_in) whose rows are ordered (n, heads, head_dim), chunk i is the
  (D, D_in) weight of projection i with heads still head-major; chain with `linear` for kernels.
  """
  def hook(x: Any) -> tuple[Any, ...]:
    size = x.shape[axis]
    if size % n:
      raise ValueError(f"split_qkv({n}) along axis {axis}: size {size} is not divisible by {n}")
    step = size // n
    lead = (slice(None),) * (axis % x.ndim)
    return tuple(x[lead + (slice(i * step, (i + 1) * step),)] for i in range(n))
  return hook


def resize_nearest(length: int, axis: int = 1) -> Hook:
  """1-D nearest resize of a positional table to `length` entries along `axis`.

  Index floor(i * L_old / L_new), i.e. torch `F.interpolate(mode='nearest')`: a T=4 time embedding
  becomes [e0, e0, e1, e1, ...] for 8 frames. Identity when the lengths already agree.
  """
  return lambda x: common.nearest_resize_1d(x, length, axis)


def chain(*hooks: Hook) -> Hook:
  """Applies hooks in order; after a split, later hooks apply to each part."""
  def hook(x: Any) -> Any:
    for h in hooks:
      x = tuple(h(p) for p in x) if isinstance(x, tuple) else h(x)
    return x
  return hook

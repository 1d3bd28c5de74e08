"""Factories and small helpers shared by every vlx layer.

Every parameter carries logical axis names (README "Conventions": embed / mlp / heads / vocab /
proj); biases, norms and scalars stay unnamed so they are replicated. Compute dtype and parameter
dtype are separate so bf16 compute keeps f32 master weights.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Dtype = Any

# Kernel initialisers for fresh (not converted) weights. 'trunc_normal' = truncated normal(0.02) as
# in ViT/BERT (the reference's fresh-model init); 'lecun' = variance 1/fan_in, which trains small
# models from scratch much faster (with std 0.02 a narrow BERT's [CLS] barely mixes its tokens at
# init). The scheme is a build-time choice applying to every layer, so it is set once around model
# construction (`with kernel_init_scheme(...)`) instead of being threaded through every constructor.
KERNEL_INITS = {
    "trunc_normal": nnx.initializers.truncated_normal(stddev=0.02),
    "lecun": nnx.initializers.lecun_normal(),
}
_SCHEME = contextvars.ContextVar("vlx_kernel_init_scheme", default="trunc_normal")


@contextlib.contextmanager
def kernel_init_scheme(name: str) -> Iterator[None]:
  """Layers built inside this block use KERNEL_INITS[name] for Linear/Conv kernels."""
  if name not in KERNEL_INITS:
    raise ValueError(f"config.model.kernel_init={name!r}: expected one of {sorted(KERNEL_INITS)}")
  token = _SCHEME.set(name)
  try:
    yield
  finally:
    _SCHEME.reset(token)


def default_kernel_init(key, shape, dtype=jnp.float32):
  """The kernel initialiser of the active scheme (see kernel_init_scheme)."""
  return KERNEL_INITS[_SCHEME.get()](key, shape, dtype)


def as_dtype(name: str | Dtype | None) -> Dtype | None:
  """'bfloat16' -> jnp.bfloat16 (configs store dtype names as strings)."""
  if name is None or not isinstance(name, str):
    return name
  try:
    return jnp.dtype(name).type
  except TypeError as e:
    raise ValueError(f"unknown dtype {name!r}; expected 'float32' or 'bfloat16'") from e


def linear(in_features: int, out_features: int, names: Sequence[str | None], *,
           use_bias: bool = True, dtype: Dtype = None, param_dtype: Dtype = jnp.float32,
           kernel_init=default_kernel_init, rngs: nnx.Rngs) -> nnx.Linear:
  """nnx.Linear whose (in, out) kernel carries the logical axis names `names`."""
  return nnx.Linear(in_features, out_features, use_bias=use_bias, dtype=as_dtype(dtype),
                    param_dtype=as_dtype(param_dtype),
                    kernel_init=nnx.with_partitioning(kernel_init, tuple(names)),
                    rngs=rngs)


def layer_norm(features: int, eps: float, *, dtype: Dtype = None,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs) -> nnx.LayerNorm:
  """LayerNorm (scale, bias); statistics are reduced in float32 whatever the compute dtype."""
  return nnx.LayerNorm(features, epsilon=eps, dtype=as_dtype(dtype),
                       param_dtype=as_dtype(param_dtype), use_fast_variance=False, rngs=rngs)


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU: what torch nn.GELU() and HF BERT's 'gelu' compute."""
  return jax.nn.gelu(x, approximate=False)


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": gelu, "relu": jax.nn.relu, "gelu_tanh": lambda x: jax.nn.gelu(x, True),
               "quick_gelu": quick_gelu}


def activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def dropout(x: jax.Array, rate: float, *, deterministic: bool, rngs: nnx.Rngs | None) -> jax.Array:
  """Inverted dropout with call-time rngs (modules store no randomness)."""
  if deterministic or rate == 0.0:
    return x
  if rngs is None:
    raise ValueError("dropout needs rngs (nnx.Rngs with a 'dropout' stream) when not deterministic")
  keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def drop_path(x: jax.Array, rate: float, *, deterministic: bool,
              rngs: nnx.Rngs | None) -> jax.Array:
  """Stochastic depth: drops whole rows (leading axis) of a residual branch, rescales the rest."""
  if deterministic or rate == 0.0:
    return x
  if rngs is None:
    raise ValueError("drop_path needs rngs (nnx.Rngs with a 'dropout' stream) when training")
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def run_blocks(blocks: Sequence[Any], x: jax.Array, call: Callable[..., jax.Array], *,
               remat: bool, rngs: nnx.Rngs | None = None,
               before: Callable[[int, jax.Array], jax.Array] | None = None,
               after: Callable[[int, jax.Array], None] | None = None) -> jax.Array:
  """x through `call(block, x, rngs)` for each block in order; with `remat` each call runs under
  nnx.remat (its activations are recomputed in the backward pass instead of stored).
  before(i, x) -> x runs ahead of block i (e.g. a token shift between blocks); after(i, x) sees
  block i's output (recorded intermediates)."""
  step = nnx.remat(call) if remat else call
  for i, blk in enumerate(blocks):
    if before is not None:
      x = before(i, x)
    x = step(blk, x, rngs)
    if after is not None:
      after(i, x)
  return x


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """F.normalize: x / max(||x||, eps), in float32."""
  x = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def linear_resize_1d(x: Any, size: int, axis: int = 0) -> Any:
  """torch F.interpolate(mode='linear', align_corners=False) along one axis, no antialiasing
  when shrinking: src = max((i + 0.5) * n_old / n_new - 0.5, 0), blend of floor(src) and the
  next index (clamped). numpy stays numpy, jax stays jax (as nearest_resize_1d)."""
  n_old = x.shape[axis]
  if n_old == size:
    return x
  src = np.maximum((np.arange(size) + 0.5) * (n_old / size) - 0.5, 0.0)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, n_old - 1)
  shape = [1] * x.ndim
  shape[axis % x.ndim] = size
  lam = (src - i0).astype(np.float32).reshape(shape)
  lead = (slice(None),) * (axis % x.ndim)
  out = (1 - lam) * x[lead + (i0,)] + lam * x[lead + (i1,)]
  return out.astype(x.dtype)


def nearest_resize_1d(x: Any, size: int, axis: int) -> Any:
  """torch F.interpolate(mode='nearest') along one axis: index floor(i * n_old / n_new).

  Indexing only, so numpy arrays stay numpy (checkpoint loading, converter hooks) and jax arrays /
  tracers stay jax (on-the-fly resizing in a model)."""
  n_old = x.shape[axis]
  if n_old == size:
    return x
  idx = (np.arange(size) * n_old) // size
  return x[(slice(None),) * (axis % x.ndim) + (idx,)]

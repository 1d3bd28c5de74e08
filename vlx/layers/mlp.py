"""Two-layer MLP (fc1 -> activation -> dropout -> fc2 -> dropout), used by ViT/BERT blocks and heads."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common


def _layers(module: nnx.Module, in_features: int, hidden: int, out_features: int,
            out_axis: str | None, *, activation: str, dropout: float, ln_eps: float | None,
            kw: dict) -> None:
  """fc1 (, norm with `ln_eps`), fc2 created in this order (it fixes the fresh init draws), plus
  the activation name (validated now) and dropout rate."""
  common.activation(activation)
  module.fc1 = common.linear(in_features, hidden, ("embed", "mlp"), **kw)
  if ln_eps is not None:
    module.norm = common.layer_norm(hidden, ln_eps, **kw)
  module.fc2 = common.linear(hidden, out_features, ("mlp", out_axis), **kw)
  module.activation = activation
  module.dropout = dropout


class Mlp(nnx.Module):
  """`out_axis` names fc2's output axis: 'embed' inside blocks, None (replicated) for class heads."""

  def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None, *,
               activation: str = "gelu", dropout: float = 0.0, out_axis: str | None = "embed",
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    _layers(self, in_features, hidden_features, out_features or in_features, out_axis,
            activation=activation, dropout=dropout, ln_eps=None,
            kw=dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs))

  def __call__(self, x: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    h = common.activation(self.activation)(self.fc1(x))
    h = common.dropout(h, self.dropout, deterministic=deterministic, rngs=rngs)
    return common.dropout(self.fc2(h), self.dropout, deterministic=deterministic, rngs=rngs)


class NormMlp(nnx.Module):
  """dropout -> fc1 -> LayerNorm -> activation -> fc2: the ViLT-style classifier head
  (torch Sequential(Dropout, Linear, LayerNorm, GELU, Linear)); fc2's output is replicated."""

  def __init__(self, in_features: int, hidden_features: int, out_features: int, *,
               ln_eps: float = 1e-5, activation: str = "gelu", dropout: float = 0.0, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    _layers(self, in_features, hidden_features, out_features, None, activation=activation,
            dropout=dropout, ln_eps=ln_eps,
            kw=dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs))

  def __call__(self, x: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    x = common.dropout(x, self.dropout, deterministic=deterministic, rngs=rngs)
    h = common.activation(self.activation)(self.norm(self.fc1(x)))
    return self.fc2(h)

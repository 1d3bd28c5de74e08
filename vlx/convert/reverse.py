"""The converter rules run in reverse: gradients of a converted model in the source's layout.

A parity fixture records gradients under the reference's parameter names (torch layout). Every
rule hook is linear in its input (transposes, qkv splits, copies into several targets, nearest
resizes, zero padding), so the gradient of a source tensor is the hook's VJP applied to the
gradients of its targets: a transpose or reshape keeps the values (and the norm), a split
reassembles the fused tensor, copies and resizes sum. No name table: whatever parameter a fixture
of the format checks, the rules that loaded it map its gradient back.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlx.convert.engine import ConversionResult


def source_gradients(result: ConversionResult, source: Mapping[str, Any],
                     grads: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{source key: d loss / d source tensor} in source-key order, for every key whose rule targets
  all have a gradient in `grads` ({nnx path: array}, e.g. the model's nnx.Params); a tied key
  (one tensor stored under two names) gets the gradient of the key it aliases. Buffers, dropped
  keys and non-trainable targets are left out."""
  keys = [k for k, (names, _) in result.sources.items()
          if k in source and all(n in grads for n in names)]

  def targets(src: dict[str, jax.Array]) -> dict[str, tuple[jax.Array, ...]]:
    out = {}
    for k in keys:
      y = result.sources[k][1](src[k])
      out[k] = y if isinstance(y, tuple) else (y,)
    return out

  primals = {k: jnp.asarray(np.asarray(source[k]), jnp.float32) for k in keys}
  cotangents = {k: tuple(jnp.asarray(grads[n], jnp.float32) for n in result.sources[k][0])
                for k in keys}
  pull = jax.jit(lambda p, c: jax.vjp(targets, p)[1](c)[0])
  back = {k: np.asarray(v) for k, v in pull(primals, cotangents).items()}
  out = {}
  for k in source:
    if k in back:
      out[k] = back[k]
    elif result.ties.get(k) in back:
      out[k] = back[result.ties[k]]
  return out


def norm(x: Any) -> np.float32:
  """L2 norm over every element (float64 accumulation), as float32."""
  return np.float32(np.linalg.norm(np.asarray(x, np.float64).ravel()))


def covered_targets(result: ConversionResult, names) -> set[str]:
  """The nnx paths filled from the source keys `names` (checks that gradient outputs cover every
  parameter of a model)."""
  out: set[str] = set()
  for k in names:
    k = result.ties.get(k, k)
    out.update(result.sources.get(k, ((), None))[0])
  return out

"""Converter rule records and the helpers every rule builder shares.

A `Rule` maps source keys (a regex, fullmatched) to nnx paths; a `Tied` key is an alias of another
source key. `linear` / `norm` are the two building blocks of every torch module (Linear, LayerNorm);
the per-layer builders next to the layers (vlx/layers/*_rules.py) and the families' converters
compose them. Source prefixes passed to builders must not contain regex groups: builders number
their own groups (\\1, \\2, ...).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from vlx.convert import hooks as hk

WEIGHT, BIAS = r"\.weight", r"\.bias"
# Original Google-converted BERT files name LayerNorm parameters gamma / beta.
LEGACY_WEIGHT, LEGACY_BIAS = r"\.(?:weight|gamma)", r"\.(?:bias|beta)"


@dataclasses.dataclass(frozen=True)
class Rule:
  """`pattern` fullmatches a source key; `target` is an nnx path template ('/'-joined, \\1 groups)
  or a tuple of them (one source -> several targets; then `hook` returns a tuple)."""
  pattern: str
  target: str | tuple[str, ...]
  hook: hk.Hook | None = None


@dataclasses.dataclass(frozen=True)
class Tied:
  """A source key that stores the same tensor as `same_as` (template with \\1 groups): not a
  parameter of its own in vlx. The engine checks both exist and, with arrays, are equal."""
  pattern: str
  same_as: str
  reason: str


def copies(hook: hk.Hook, n: int) -> hk.Hook:
  """The hook's result(s) repeated `n` times: one source filling several targets."""
  def out(x: Any) -> tuple[Any, ...]:
    y = hook(x)
    return (y if isinstance(y, tuple) else (y,)) * n
  return out


def _pair(src: str, dst: str | tuple[str, ...], names: tuple[str, str],
          hooks: tuple[hk.Hook | None, hk.Hook | None], suffixes: tuple[str, str]) -> list[Rule]:
  """Two rules (weight-like, bias-like) for one module; a tuple `dst` fills every copy."""
  out = []
  for name, hook, suffix in zip(names, hooks, suffixes):
    if isinstance(dst, tuple):
      out.append(Rule(src + suffix, tuple(f"{d}/{name}" for d in dst),
                      copies(hook or hk.identity, len(dst))))
    else:
      out.append(Rule(src + suffix, f"{dst}/{name}", hook))
  return out


def linear(src: str, dst: str | tuple[str, ...], hook: hk.Hook = hk.linear) -> list[Rule]:
  """torch Linear `src`.weight/.bias -> nnx Linear `dst`/kernel (transposed by `hook`) and /bias."""
  return _pair(src, dst, ("kernel", "bias"), (hook, None), (WEIGHT, BIAS))


def norm(src: str, dst: str | tuple[str, ...], *, legacy: bool = False) -> list[Rule]:
  """torch LayerNorm `src`.weight/.bias -> nnx LayerNorm `dst`/scale and /bias (`legacy`: also
  the gamma/beta names)."""
  suffixes = (LEGACY_WEIGHT, LEGACY_BIAS) if legacy else (WEIGHT, BIAS)
  return _pair(src, dst, ("scale", "bias"), (None, None), suffixes)

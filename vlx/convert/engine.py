"""Generic checkpoint converter: family rules turn a flat torch state dict into a filled nnx model.

A family's converter module (`Family.converter`, e.g. vlx/models/<family>/convert.py) provides
  detect_variant(keys) -> str                     # raises WrongFamilyError if nothing fits
  detect_variant_from_shapes(source) -> str       # optional, used instead when present
  infer_model_config(source, variant) -> ConfigDict  # sizes read from shapes
  rules(variant, model_config) -> list[Rule]      # source regex -> nnx path(s), hook
  unused(variant) -> dict[regex, reason]          # source keys dropped on purpose
  tied(variant) -> list[Tied]                     # optional: keys that alias another source key
and the model is the converter's `build` or else `Family.build(model_config, rngs=...)`.
The engine never allocates the randomly initialised model: targets come from `nnx.eval_shape`.
With `dry_run=True` the source may hold shapes only (`jax.ShapeDtypeStruct`): hooks are traced
with `jax.eval_shape`, so a full-size mapping is checked in seconds.
"""
from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlx import registry
from vlx.convert import hooks as hk
from vlx.convert.errors import ConversionError, ShapeMismatchError, WrongFamilyError
from vlx.convert.rules import Rule, Tied  # noqa: F401 (re-exported: vlx.convert.engine.Rule)


@dataclasses.dataclass
class ConversionResult:
  model: nnx.Module | None  # None after a dry run or when targets are missing
  model_config: ml_collections.ConfigDict
  variant: str
  report: dict[str, Any]
  # how the model was filled, for running the rules in reverse (vlx.convert.reverse):
  # source key -> (target nnx paths, hook); tied source key -> the key it aliases
  sources: dict[str, tuple[tuple[str, ...], hk.Hook]] = dataclasses.field(default_factory=dict)
  ties: dict[str, str] = dataclasses.field(default_factory=dict)


def _family_modules(family: str) -> tuple[ModuleType, Callable]:
  """(converter module, build) of a registered family (`Family.converter`, `Family.build`)."""
  try:
    fam = registry.get(family)
    converter = fam.converter_module()
  except ValueError as e:
    raise ConversionError(f"no converter for family {family!r}: {e}") from None
  return converter, getattr(converter, "build", fam.build)


def abstract_model(build: Callable, cfg: ml_collections.ConfigDict) -> nnx.Module:
  """The model with ShapeDtypeStruct leaves: no parameter is allocated or initialised.

  Speed: every RNG draw updates a traced counter, and on jax 0.10 / flax 0.12 each update of a
  traced counter scans the whole trace built so far (quadratic: ~13 s for the 465M-parameter
  ALPRO pre-training model). A host-side (numpy) counter keeps the draws identical in structure
  and makes it ~0.6 s. Keys only feed initialisers whose values are discarded here.
  """
  def make():
    rngs = nnx.Rngs(0)
    try:
      for _, node in nnx.iter_graph(rngs):
        if isinstance(node, nnx.RngStream):
          node.count = nnx.RngCount(np.zeros(node.count.shape, np.uint32), tag=node.tag)
    except (AttributeError, TypeError):  # other flax internals: stay correct, just slower
      rngs = nnx.Rngs(0)
    return build(cfg, rngs=rngs)
  # Outside any mesh context: under the training mesh, eval_shape would read the variables'
  # logical axis names (metadata only here) as mesh axes.
  with jax.set_mesh(None):
    return nnx.eval_shape(make)


def _apply_overrides(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any], where=""):
  """Recursively sets fields of `cfg` from a (partial) nested dict; unknown fields are errors."""
  if isinstance(overrides, ml_collections.ConfigDict):
    overrides = overrides.to_dict()
  for key, value in overrides.items():
    name = f"{where}{key}"
    if key not in cfg:
      raise ConversionError(f"model_config override {name!r}: no such field in the "
                            f"{cfg.get('family', '')} model config")
    if isinstance(value, Mapping) and isinstance(cfg[key], ml_collections.ConfigDict):
      _apply_overrides(cfg[key], value, f"{name}.")
    else:
      with cfg.unlocked():
        cfg[key] = value


def _shape(x: Any) -> tuple[int, ...]:
  return tuple(int(d) for d in x.shape)


def _run_hook(hook: hk.Hook | None, value: Any, dry_run: bool) -> Any:
  hook = hook or hk.identity
  if not dry_run:
    return hook(value)
  spec = jax.ShapeDtypeStruct(_shape(value), np.dtype(value.dtype))
  return jax.eval_shape(hook, spec)


def _suggest_family(keys: list[str], family: str) -> str:
  """Names another family whose converter recognises these keys, if any."""
  for other in registry.available():
    if other == family:
      continue
    try:
      conv = registry.get(other).converter_module()
      return f"; it looks like a {other!r} ({conv.detect_variant(keys)}) checkpoint"
    except Exception:  # noqa: BLE001 - any failure means "not this family either"
      continue
  return ""


@dataclasses.dataclass
class _Mapped:
  """What the rules made of the source keys."""
  filled: dict[str, Any] = dataclasses.field(default_factory=dict)  # target path -> array
  unused: dict[str, str] = dataclasses.field(default_factory=dict)  # source key -> reason
  unmapped: list[str] = dataclasses.field(default_factory=list)
  mismatches: list[str] = dataclasses.field(default_factory=list)
  bad_targets: list[str] = dataclasses.field(default_factory=list)
  mapped: int = 0
  sources: dict[str, tuple[tuple[str, ...], hk.Hook]] = dataclasses.field(default_factory=dict)
  ties: dict[str, str] = dataclasses.field(default_factory=dict)  # tied key -> the key it aliases

  def check(self, where: str, bad_targets: str) -> None:
    """Raises for rule targets the model lacks (`bad_targets`: what that means here), then for
    shape mismatches (ShapeMismatchError naming the first ten)."""
    if self.bad_targets:
      raise ConversionError(f"{where}{bad_targets}: {self.bad_targets[:10]}")
    if self.mismatches:
      raise ShapeMismatchError(f"{where}shape mismatch for {len(self.mismatches)} key(s): "
                               + "; ".join(self.mismatches[:10])
                               + (" ..." if len(self.mismatches) > 10 else ""))


def _map_keys(source: Mapping[str, Any], converter: Any, variant: str,
              cfg: ml_collections.ConfigDict, targets: dict[str, Any], family: str,
              dry_run: bool) -> _Mapped:
  """Applies rules (first match wins), then tied keys, then declared-unused keys to each key."""
  rules = [(re.compile(r.pattern), r) for r in converter.rules(variant, cfg)]
  ties = [(re.compile(t.pattern), t) for t in getattr(converter, "tied", lambda v: [])(variant)]
  drops = [(re.compile(p), reason) for p, reason in converter.unused(variant).items()]

  m = _Mapped()
  filled, unused, unmapped, mismatches = m.filled, m.unused, m.unmapped, m.mismatches
  filled_from: dict[str, str] = {}
  for key in source:
    rule, match = next(((r, mt) for rx, r in rules if (mt := rx.fullmatch(key))), (None, None))
    if rule is not None:
      m.mapped += 1
      names = (rule.target,) if isinstance(rule.target, str) else tuple(rule.target)
      names = tuple(match.expand(n) for n in names)
      m.sources[key] = (names, rule.hook or hk.identity)
      try:
        out = _run_hook(rule.hook, source[key], dry_run)
      except (ValueError, TypeError, IndexError) as e:
        mismatches.append(f"{key} -> {'|'.join(names)}: hook failed on shape "
                          f"{_shape(source[key])}: {e}")
        continue
      outs = out if isinstance(out, tuple) else (out,)
      if len(outs) != len(names):
        raise ConversionError(f"rule {rule.pattern!r}: hook gave {len(outs)} arrays for "
                              f"{len(names)} targets {names}")
      for name, value in zip(names, outs):
        if name not in targets:
          m.bad_targets.append(f"{key} -> {name}")
        elif _shape(value) != _shape(targets[name]):
          mismatches.append(f"{key} -> {name}: expected {_shape(targets[name])}, "
                            f"got {_shape(value)}")
        elif name in filled:
          raise ConversionError(f"target {name} is filled twice: from {filled_from[name]} "
                                f"and {key}; the {family} rules overlap")
        else:
          filled[name] = value
          filled_from[name] = key
      continue
    tie, match = next(((t, mt) for rx, t in ties if (mt := rx.fullmatch(key))), (None, None))
    if tie is not None:
      other = match.expand(tie.same_as)
      if other not in source:
        unmapped.append(key)
        continue
      if (_shape(source[other]) != _shape(source[key]) or not dry_run
          and not np.array_equal(source[other], source[key])):
        raise ConversionError(f"{key} should be the same tensor as {other} ({tie.reason}) "
                              "but differs; the vlx model stores it only once")
      unused[key] = f"{tie.reason} (tied to {other})"
      m.ties[key] = other
      continue
    reason = next((r for rx, r in drops if rx.fullmatch(key)), None)
    if reason is not None:
      unused[key] = reason
    else:
      unmapped.append(key)

  return m


def map_keys(source: Mapping[str, Any], rules: list[Rule], targets: Mapping[str, Any], *,
             unused: Mapping[str, str] | None = None, tied: list[Tied] | None = None,
             what: str = "source", dry_run: bool = False) -> _Mapped:
  """The rule matching of `convert_with` for callers that fill only part of a model (backbone
  initialisation): returns filled targets, unused/unmapped source keys, shape mismatches and rule
  targets absent from `targets` ({nnx path: array or ShapeDtypeStruct}); raises nothing else."""
  converter = types.SimpleNamespace(rules=lambda v, c: rules, unused=lambda v: dict(unused or {}),
                                    tied=lambda v: list(tied or []))
  return _map_keys(source, converter, "", None, dict(targets), what, dry_run)


def convert_state_dict(family: str, source: Mapping[str, Any], *, variant: str | None = None,
                       model_config: Mapping[str, Any] | None = None,
                       dry_run: bool = False) -> ConversionResult:
  """Maps `source` {torch key: array} onto `vlx.models.<family>`; see module docstring."""
  converter, build = _family_modules(family)
  return convert_with(converter, build, family, source, variant=variant,
                      model_config=model_config, dry_run=dry_run)


def convert_with(converter: Any, build: Callable, family: str, source: Mapping[str, Any], *,
                 variant: str | None = None, model_config: Mapping[str, Any] | None = None,
                 dry_run: bool = False) -> ConversionResult:
  """`convert_state_dict` for an explicit converter object and build function (tests, tools)."""
  keys = list(source)
  try:
    # optional `detect_variant_from_shapes(source)`: for variants only the shapes tell apart
    by_shapes = getattr(converter, "detect_variant_from_shapes", None)
    detected = by_shapes(source) if by_shapes else converter.detect_variant(keys)
  except WrongFamilyError as e:
    raise WrongFamilyError(f"{e}{_suggest_family(keys, family)}") from None
  variant = variant or detected
  cfg = converter.infer_model_config(source, variant)
  if model_config:
    _apply_overrides(cfg, model_config)

  try:
    abstract = abstract_model(build, cfg)
  except (ValueError, TypeError) as e:
    raise ConversionError(f"cannot build the {family} model for variant {variant!r} from the "
                          f"inferred/overridden model config: {e} (sizes the shapes do not "
                          "determine, e.g. head counts, are the released defaults: override "
                          "them with model_config / --set FIELD=VALUE)") from None
  graphdef, state = nnx.split(abstract)
  flat = list(nnx.to_flat_state(state))  # every Variable is a target (models store no RNGs)
  targets = {"/".join(str(k) for k in p): v.get_value() for p, v in flat}

  m = _map_keys(source, converter, variant, cfg, targets, family, dry_run)
  if keys and len(m.unmapped) > len(keys) // 2:
    raise WrongFamilyError(
        f"{len(m.unmapped)} of {len(keys)} checkpoint keys match no {family} ({variant}) rule: "
        f"this does not look like a {family} {variant} checkpoint (e.g. {m.unmapped[:5]})"
        + _suggest_family(keys, family))
  m.check("", f"{family} rules name targets the model does not have (rules and model tree "
             "disagree)")

  missing = sorted(set(targets) - set(m.filled))
  report = {"family": family, "variant": variant, "mapped": m.mapped, "unused": m.unused,
            "unmapped": m.unmapped, "missing": missing}
  model = None
  if not dry_run and not missing:
    new_flat = []
    for path, var in flat:
      spec = var.get_value()
      name = "/".join(str(k) for k in path)
      new_flat.append((path, var.replace(jnp.asarray(np.asarray(m.filled[name], spec.dtype)))))
    model = nnx.merge(graphdef, nnx.from_flat_state(new_flat))
  return ConversionResult(model=model, model_config=cfg, variant=variant, report=report,
                          sources=m.sources, ties=m.ties)


def require_complete(result: ConversionResult, what: str) -> ConversionResult:
  """`result`, or a ValueError naming its unmapped source keys and unfilled model variables
  (strict loading, e.g. of a parity fixture)."""
  r = result.report
  if r["unmapped"] or r["missing"]:
    raise ValueError(f"{what}: unmapped source keys {r['unmapped']}; unfilled model variables "
                     f"{r['missing']}")
  return result

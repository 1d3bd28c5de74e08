"""The family contract (`Family`) and family lookup by module path (`vlx.models.<family>`).

Generic code (loop, steps, data, evals, checkpoint, convert engine) reaches a model family only
through the `Family` record its package exports as `FAMILY`; it never names a family. A field left
at its default (None / empty) means "not supported" (an eval scorer) or "nothing to do" (a hook).
`tests/test_family_contract.py` checks every registered family against this contract.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from types import ModuleType
from typing import Any, Callable, Mapping

import vlx.models

# objectives(model, batch, *, active, rng, train) -> ({objective: scalar loss}, {metric: scalar}).
# `active`: frozenset of the config.objectives names with a non-zero weight. The step (vlx.steps)
# weights and sums the losses in the returned order and names them `<objective>_loss`.
Objectives = Callable[..., tuple[dict[str, Any], dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Family:
  """Everything the generic code may ask of a model family.

  Model and training:
    build(model_config, *, rngs) -> nnx.Module.
    objectives / objective_names: see `Objectives`; names config.objectives may use.
    frozen_params: regexes (re.search on 'a/b/c' parameter paths) of parameters that never train:
      they get no gradient, no update and no optimizer state (e.g. a frozen teacher). They stay
      in TrainState['params'] (saved, loaded); vlx.steps splits them off before differentiation.
    validate_config(config): family checks, raising ValueError naming the field.
    prepare_fresh_state(model, config): fills model state after a fresh init (not on restore).
  Evaluation (None = this eval type is not supported):
    encode_videos(model, batch) -> features; encode_texts(model, batch) -> features;
    retrieval_scores(model, texts, videos, *, mode) -> [Nt, Nv]; retrieval_modes: the modes it
    scores; pair_scores(model, texts, videos) -> [N] match probability of aligned rows (rerank);
    qa_logits(model, batch) -> [B, A]; mc_scores(model, batch) -> [B, K];
    class_logits(model, batch) -> [B, C].
  Weights:
    converter: import path of the module with the converter rules (vlx.convert.engine reads it;
      imported on use), None = no converter. Optionally the module's `read_checkpoint(path) ->
      (state dict, variant or None, {model config overrides})` replaces the generic reader for
      containers whose other entries (read as data) name the variant or sizes.
    fixture_outputs(fixture_dir) -> {name: array}: the parity runner of the reference fixtures.
    parity_tolerances: ((key regex, atol, rtol), ...) for `python -m vlx.convert.parity
      --compare`, first fullmatch wins, atol = rtol = 0 means exact; keys no regex matches use
      vlx.convert.parity.DEFAULT_TOLERANCES (gradients rtol 1e-3, everything else 1e-4).
    resizable_params: {regex: axis or (axis, 'nearest' | 'linear')} of parameters resized along
      `axis` (nearest by default) when a loaded checkpoint's shape differs there (e.g. a temporal
      position table).
    backbone_layout: a vlx.convert.backbones.Layout: where public backbones (BERT, ViT) sit in the
      module tree (init.bert_dir / init.vit_file); None = not supported.
  Data:
    data_hooks(config) -> sequence of vlx.data.hooks.RowHook: per-row / per-batch producers (and
      zipped draw streams) that add the batch keys only this family needs; None = none.
  """
  name: str
  build: Callable[..., Any]
  objectives: Objectives
  objective_names: tuple[str, ...]
  frozen_params: tuple[str, ...] = ()
  validate_config: Callable[[Any], None] | None = None
  prepare_fresh_state: Callable[[Any, Any], None] | None = None
  encode_videos: Callable[..., Any] | None = None
  encode_texts: Callable[..., Any] | None = None
  retrieval_scores: Callable[..., Any] | None = None
  retrieval_modes: tuple[str, ...] = ()
  pair_scores: Callable[..., Any] | None = None
  qa_logits: Callable[..., Any] | None = None
  mc_scores: Callable[..., Any] | None = None
  class_logits: Callable[..., Any] | None = None
  converter: str | None = None
  fixture_outputs: Callable[[Any], Mapping[str, Any]] | None = None
  parity_tolerances: tuple[tuple[str, float, float], ...] = ()
  resizable_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  backbone_layout: Any = None
  data_hooks: Callable[[Any], Any] | None = None

  def converter_module(self) -> ModuleType:
    """The converter module (imported now: it is not needed to train)."""
    if self.converter is None:
      raise ValueError(f"family {self.name!r} has no converter")
    return importlib.import_module(self.converter)

  def supports(self, fn_name: str) -> bool:
    """Whether the optional contract function `fn_name` is provided."""
    return getattr(self, fn_name, None) is not None

  def require(self, fn_name: str, what: str) -> Callable[..., Any]:
    """The contract function `fn_name`, or a ValueError saying `what` needs it."""
    fn = getattr(self, fn_name, None)
    if fn is None:
      raise ValueError(f"{what} needs the model family to provide {fn_name}; family "
                       f"{self.name!r} does not")
    return fn


def on_first_call(package: str, module: str, attr: str) -> Callable[..., Any]:
  """`<package>.<module>.<attr>` as a hook that imports its module when first called, so importing
  a family stays cheap (no TensorFlow, torch or model code until a hook runs)."""
  def call(*args, **kwargs):
    return getattr(importlib.import_module(f"{package}.{module}"), attr)(*args, **kwargs)
  call.__name__ = attr
  call.__doc__ = f"{package}.{module}.{attr}"
  return call


def available() -> list[str]:
  """Names of the families that ship with vlx."""
  return sorted(m.name for m in pkgutil.iter_modules(vlx.models.__path__) if m.ispkg)


def family_of(module: ModuleType) -> Family:
  """The `FAMILY` record a family package exports (checked)."""
  fam = getattr(module, "FAMILY", None)
  if not isinstance(fam, Family):
    raise TypeError(f"{module.__name__} does not export FAMILY = vlx.registry.Family(...) "
                    "(see README 'Design')")
  return fam


def get(family: str) -> Family:
  """Imports `vlx.models.<family>` and returns its checked `Family` record."""
  if family not in available():
    raise ValueError(f"config.model.family={family!r} is not a vlx model family; "
                     f"available: {available()}")
  return family_of(importlib.import_module(f"vlx.models.{family}"))

"""Model-family lookup by module path: `vlx.models.<family>` (no central import table)."""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import vlx.models

_REQUIRED = ("build", "loss_fn")


def available() -> list[str]:
  """Names of the families that ship with vlx."""
  return sorted(m.name for m in pkgutil.iter_modules(vlx.models.__path__) if m.ispkg)


def get(family: str) -> ModuleType:
  """Imports `vlx.models.<family>` and checks it exports the family contract."""
  if family not in available():
    raise ValueError(f"config.model.family={family!r} is not a vlx model family; "
                     f"available: {available()}")
  module = importlib.import_module(f"vlx.models.{family}")
  missing = [name for name in _REQUIRED if not hasattr(module, name)]
  if missing:
    raise TypeError(f"vlx.models.{family} does not export {missing} (see README 'Design')")
  return module

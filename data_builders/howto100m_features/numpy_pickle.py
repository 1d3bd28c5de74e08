"""LOCAL STAND-IN (helper F): a minimal reader of pickles that hold only containers and numpy arrays,
used for HowTo100M's `caption.pickle` until the project's shared numpy-safe unpickler (issue 15,
part C) lands; switch `load` to it then.

Nothing named by the file is executed: every global the pickle references must be on ALLOWED
(numpy's array / dtype / scalar rebuilders and the latin-1 bytes helper numpy uses at protocol 2);
any other (a class of another library, `os.system`, `builtins.eval`, ...) raises UnsafePickleError
naming the file and the global before anything is called.
"""
from __future__ import annotations

import pickle
from typing import Any

ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
}


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global that is not a numpy array / container rebuilder."""


class _Unpickler(pickle.Unpickler):
  def __init__(self, f, path: str):
    super().__init__(f, encoding="latin1")
    self._path = path

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in ALLOWED:
      raise UnsafePickleError(
          f"{self._path}: refuses to load {module}.{name} (only containers and numpy arrays are "
          "read; nothing in the file is executed)")
    return super().find_class(module, name)


def load(path: str) -> Any:
  """The object in the pickle at `path` (dicts, lists, strings, numbers, numpy arrays)."""
  with open(path, "rb") as f:
    return _Unpickler(f, str(path)).load()

"""Reading pickles of numpy arrays, strings and builtin containers without running pickled code.

Feature releases (e.g. the EAO authors' `msrvtt_train.pkl`, `youcook_val.pkl`: lists of dicts
holding numpy arrays and captions) are plain `pickle.dump`s. `pickle.load` would call whatever
callable the file names (`os.system`, `builtins.eval`, ...), so these files go through an
Unpickler whose `find_class` admits only what rebuilding numpy arrays and scalars needs
(`ALLOWED`: numpy's `_reconstruct` / `scalar` / `_frombuffer` under both the numpy 1.x `numpy.core`
and the 2.x `numpy._core` names, `ndarray`, `dtype`, protocol 2's bytes codec restricted to
latin-1) and a few inert builtin containers. Any other global is refused before anything is
called: `UnsafePickleError`, one line naming the file and the global. Persistent ids (torch
storages) are refused too. Python 2 pickles load with encoding='latin1' (numpy's advice).
"""
from __future__ import annotations

import _codecs
import collections
import gzip
import importlib
import io
import os
import pickle
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle names a global outside the allow-list (it may contain code); nothing was run."""


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
  """Protocol 2 stores bytes as _codecs.encode(str, 'latin1'): only that codec is admitted."""
  if not isinstance(text, str) or encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
    raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r}) refused: only "
                            "the latin-1 bytes encoding of protocol 2 is allowed")
  return _codecs.encode(text, "latin1", errors)


def _numpy_attr(attr: str) -> Any:
  """numpy's `<module>.<name>` under numpy 2.x (`numpy._core`) or 1.x (`numpy.core`) naming."""
  module, name = attr.rsplit(".", 1)
  for package in ("numpy._core", "numpy.core"):
    try:
      return getattr(importlib.import_module(f"{package}.{module}"), name)
    except (ImportError, AttributeError):
      continue
  raise UnsafePickleError(f"numpy.{attr} is not available in numpy {np.__version__}")


_NUMPY = ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
ALLOWED: dict[str, Any] = {
    **{f"numpy.core.{n}": n for n in _NUMPY},
    **{f"numpy._core.{n}": n for n in _NUMPY},
    "numpy.ndarray": np.ndarray,
    "numpy.dtype": np.dtype,
    "_codecs.encode": _latin1_encode,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.list": list,
    "builtins.dict": dict, "builtins.tuple": tuple, "builtins.bytearray": bytearray,
    "builtins.complex": complex, "builtins.slice": slice, "builtins.bytes": bytes,
    "builtins.str": str, "builtins.int": int, "builtins.float": float, "builtins.bool": bool,
    "collections.OrderedDict": collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
  def __init__(self, f, where: str):
    super().__init__(f, encoding="latin1")
    self.where = where

  def find_class(self, module: str, name: str) -> Any:
    if module == "__builtin__":   # protocol <= 2 names builtins as Python 2 did (fix_imports)
      module = "builtins"
    key = f"{module}.{name}"
    if key not in ALLOWED:
      raise UnsafePickleError(
          f"{self.where}: refused to unpickle {key}: only numpy arrays, numpy scalars, strings and "
          "builtin containers are allowed (the file may contain code; nothing was run)")
    value = ALLOWED[key]
    return _numpy_attr(value) if isinstance(value, str) else value

  def persistent_load(self, pid: Any) -> Any:
    raise UnsafePickleError(f"{self.where}: refused a persistent id ({type(pid).__name__}): not a "
                            "plain pickle of numpy arrays")


def loads(data: bytes, where: str = "<bytes>") -> Any:
  """The object pickled in `data` (allow-listed globals only, see the module docstring)."""
  return _Unpickler(io.BytesIO(data), where).load()


def load(path: str | os.PathLike) -> Any:
  """The object pickled in the file at `path` (plain or gzip); UnsafePickleError on a global
  outside the allow-list, pickle.UnpicklingError / EOFError on a damaged file."""
  path = os.fspath(path)
  with open(path, "rb") as raw:
    gz = raw.read(2) == b"\x1f\x8b"
  with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
    return _Unpickler(f, path).load()


__all__ = ["ALLOWED", "UnsafePickleError", "load", "loads"]

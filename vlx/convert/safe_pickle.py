"""Reading a whole pickled torch module (OpenAI's DALL-E `encoder.pkl`) without running its code.

OpenAI released the dVAE encoder as `torch.save(<dall_e.encoder.Encoder instance>)`: the module
object itself is pickled, so `torch.load(weights_only=True)` refuses it and the package's own loader
(`weights_only=False` + `import dall_e`) would execute whatever the file names. Here the file goes
through torch's weights-only unpickler (its own restricted unpickler: every GLOBAL must be on an
allow-list, REDUCE / NEWOBJ / BUILD apply only to allow-listed callables and classes; tensors and
storages are rebuilt by torch's `_rebuild_tensor_v2` / `_rebuild_parameter` / persistent-load
machinery, zip and legacy formats alike). We add to that allow-list exactly the module classes the
pickled graph names (`MODULE_CLASSES`), each bound to an inert stand-in class that only collects
the pickled attribute dict: no dall_e / torch.nn code (constructor, `__setstate__`, attrs
validator) ever runs, and dall_e need not be installed. (torch's unpickler rather than a
`pickle.Unpickler` subclass with a restricted `find_class`: the same allow-list idea, plus checks
on what REDUCE / NEWOBJ / BUILD may touch, and torch's own storage loading for both formats.) Any other global (`os.system`,
`builtins.eval`, an unknown class next to the dall_e ones, ...) is refused before anything is
called: `UnsafeCheckpointError` naming the file and the refused global.
The stand-in tree is then walked (`_parameters`, persistent `_buffers`, `_modules`) into the exact
key set of `module.state_dict()` (blocks.input.w, blocks.group_1.block_1.res_path.conv_1.w, ...).
"""
from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from vlx.convert import torch_io
from vlx.convert.errors import ConversionError, UnsafeCheckpointError


class StandInModule:
  """Inert stand-in for one pickled module class: unpickling creates it with `object.__new__` and
  fills its `__dict__` with the pickled state; it has no behaviour. `source_class` is the dotted
  name of the class it stands for."""
  source_class = ""

  def __init__(self, *args: Any) -> None:
    if args:  # a module pickles as NEWOBJ + BUILD, never as a constructor call with arguments
      raise pickle.UnpicklingError(f"{self.source_class} may only be restored from its state, "
                                   "not constructed with arguments")

  def __setstate__(self, state: Any) -> None:
    """BUILD: the pickled attribute dict, stored as is (nothing else is accepted)."""
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
      raise pickle.UnpicklingError(f"{self.source_class}: expected an attribute dict as pickled "
                                   f"state, got {type(state).__name__}")
    self.__dict__.update(state)

  def __repr__(self) -> str:
    return f"<stand-in for {self.source_class}>"


# The classes a pickled dall_e Encoder graph references (pickletools.dis of the package's
# encoder.pkl): the three attrs-based dall_e classes and the torch.nn modules they hold.
# Everything else the file needs (OrderedDict, set, torch.device, tensor/parameter rebuilding,
# storages) is already on torch's weights-only allow-list.
MODULE_CLASSES = (
    "dall_e.encoder.Encoder",
    "dall_e.encoder.EncoderBlock",
    "dall_e.utils.Conv2d",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d",
)

STAND_INS: dict[str, type] = {
    name: type(name.rsplit(".", 1)[1], (StandInModule,), {"source_class": name,
                                                          "__module__": __name__})
    for name in MODULE_CLASSES}


def safe_globals() -> list[tuple[type, str]]:
  """(stand-in, dotted name) pairs for torch's weights-only allow-list."""
  return [(cls, name) for name, cls in STAND_INS.items()]


def _is_tensor(v: Any) -> bool:
  return type(v).__module__.startswith("torch") and hasattr(v, "numpy")


def _state(module: StandInModule, attr: str, path: str, where: str) -> Mapping[str, Any]:
  value = vars(module).get(attr, {})
  if not isinstance(value, Mapping):
    raise ConversionError(f"{path}: pickled module {where or '<root>'} "
                          f"({module.source_class}) has a malformed {attr}")
  return value


def state_dict(module: StandInModule, path: str = "<pickle>") -> dict[str, np.ndarray]:
  """The `state_dict()` of a stand-in module tree: parameters, then persistent buffers, of each
  module, children recursively in their registration order, keys '.'-joined."""
  out: dict[str, np.ndarray] = {}

  def walk(mod: Any, prefix: str) -> None:
    where = prefix[:-1]
    if not isinstance(mod, StandInModule):
      raise ConversionError(f"{path}: {where or '<root>'} is a {type(mod).__name__}, not a "
                            "pickled module")
    skip = vars(mod).get("_non_persistent_buffers_set") or set()
    entries = list(_state(mod, "_parameters", path, where).items())
    entries += [(k, v) for k, v in _state(mod, "_buffers", path, where).items() if k not in skip]
    for name, value in entries:
      if value is None:
        continue
      if not _is_tensor(value):
        raise ConversionError(f"{path}: {prefix}{name} is a {type(value).__name__}, not a tensor")
      out[prefix + str(name)] = torch_io.to_numpy(value)
    for name, child in _state(mod, "_modules", path, where).items():
      if child is not None:
        walk(child, f"{prefix}{name}.")

  walk(module, "")
  return out


def globals_in(path: str | os.PathLike) -> set[str]:
  """Dotted names of the GLOBALs of a torch file's main pickle (zip: data.pkl; legacy: the pickles
  before the raw storages), read statically with pickletools: nothing is unpickled or run.
  A STACK_GLOBAL (not written by torch.save) shows as '<STACK_GLOBAL>'."""
  names: set[str] = set()

  def scan(f) -> None:
    for op, arg, _ in pickletools.genops(f):
      if op.name in ("GLOBAL", "INST"):
        names.add(str(arg).replace(" ", "."))
      elif op.name == "STACK_GLOBAL":
        names.add("<STACK_GLOBAL>")

  path = os.fspath(path)
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as z:
        record = next((n for n in z.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"), None)
        if record is not None:
          with z.open(record) as f:
            scan(f)
    else:  # legacy format: magic number, protocol, sys_info, then the object itself
      with open(path, "rb") as f:
        for _ in range(4):
          scan(f)
  except (ValueError, EOFError, OSError, zipfile.BadZipFile):
    pass  # not (entirely) a pickle: whatever was read so far
  return names


def is_module_pickle(path: str | os.PathLike) -> bool:
  """Whether the file claims to hold a pickled dall_e module (names a dall_e class): such files
  go through `load_module_state_dict`, which refuses anything beyond `MODULE_CLASSES`."""
  return any(n.startswith("dall_e.") for n in globals_in(path))


def load_module(path: str | os.PathLike) -> StandInModule:
  """The root stand-in module of a pickled module file (torch zip or legacy format)."""
  path = os.fspath(path)
  root = torch_io.load_raw(path, extra_safe_globals=safe_globals())
  if not isinstance(root, StandInModule):
    raise ConversionError(f"{path}: expected a pickled module ({', '.join(MODULE_CLASSES[:3])}),"
                          f" got {type(root).__name__}")
  return root


def load_module_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """`torch.load(path).state_dict()` of a pickled dall_e Encoder, as numpy, nothing executed."""
  path = os.fspath(path)
  return state_dict(load_module(path), path)


__all__ = ["MODULE_CLASSES", "StandInModule", "UnsafeCheckpointError", "globals_in",
           "is_module_pickle", "load_module",
           "load_module_state_dict", "safe_globals", "state_dict"]

"""Reading the tensors of a TorchScript archive (e.g. OpenAI's released CLIP `ViT-B-32.pt`) as data.

A TorchScript archive is a zip: `<name>/code/` (TorchScript source), `<name>/data.pkl` (the module
objects: GLOBAL '__torch__.<module path> <Class>', NEWOBJ, BUILD with a dict of attributes whose
tensors are `torch._utils._rebuild_tensor_v2` of persistent storages `<name>/data/<key>`).
`torch.load(weights_only=True)` refuses such archives and `torch.jit.load` would compile and run
their code. Here data.pkl goes through a restricted unpickler written with numpy only: the
`__torch__.*` classes become inert stand-ins that only collect their attribute dicts, storages are
read as raw little-endian bytes, `_rebuild_tensor_v2` is re-implemented with strides; every other
global is refused (UnsafeCheckpointError naming it) before anything is called. No code from the
archive (code/ is never read) and no torch is needed.

The state dict is every tensor attribute of the module tree ('.'-joined names, attribute order),
which is what `torch.jit.load(p).state_dict()` returns (parameters and buffers; TorchScript also
keeps tensor constants assigned as plain attributes, e.g. CLIP's `attn_mask`, which the caller's
rules may declare unused). float16 / bfloat16 tensors become float32, as `torch_io.to_numpy`.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any

import numpy as np

from vlx.convert.errors import ConversionError, UnsafeCheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class ScriptObject:
  """Inert stand-in for one `__torch__.*` class: unpickling fills its __dict__, nothing runs."""
  qualified_name = ""


class _Storage:
  """A storage *type* named by the pickle (torch.FloatStorage, ...): a dtype and nothing else."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


class _Tensor:
  """A rebuilt tensor: numpy data plus the storage type (bfloat16 is stored as its bits)."""

  def __init__(self, array: np.ndarray, storage: str):
    self.array, self.storage = array, storage

  def numpy(self) -> np.ndarray:
    a = self.array
    if self.storage == "BFloat16Storage":
      return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _rebuild_tensor(storage: tuple[np.ndarray, str], offset: int, size: tuple, stride: tuple,
                    *_: Any) -> _Tensor:
  """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])
  on a numpy storage, bounds-checked so a malformed file cannot read past its storage."""
  data, name = storage
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
    raise ConversionError(f"malformed tensor record: size {size}, stride {stride}")
  last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
  if last >= data.size:
    raise ConversionError(f"tensor of size {size} overruns its storage of {data.size} elements")
  view = np.lib.stride_tricks.as_strided(data[offset:], size,
                                         tuple(s * data.itemsize for s in stride))
  return _Tensor(np.array(view), name)


class _Unpickler(pickle.Unpickler):
  """Allow-list unpickler of a TorchScript data.pkl (see the module docstring)."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
    super().__init__(file)
    self.archive, self.prefix, self.path = archive, prefix, path
    self.classes: dict[str, type] = {}

  def find_class(self, module: str, name: str) -> Any:
    if module.startswith("__torch__.") or module == "__torch__":
      qual = f"{module}.{name}"
      if qual not in self.classes:
        self.classes[qual] = type(name, (ScriptObject,), {"qualified_name": qual})
      return self.classes[qual]
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return _Storage(name)
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    raise UnsafeCheckpointError(f"{self.path}: refused to read the TorchScript archive: its "
                                f"data.pkl names {module}.{name}, which is not module data")

  def persistent_load(self, pid: Any) -> tuple[np.ndarray, str]:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
            and isinstance(pid[1], _Storage)):
      raise ConversionError(f"{self.path}: unexpected persistent record {pid!r:.80}")
    storage, key = pid[1], str(pid[2])
    if "/" in key or ".." in key:
      raise ConversionError(f"{self.path}: malformed storage key {key!r}")
    try:
      raw = self.archive.read(f"{self.prefix}data/{key}")
    except KeyError:
      raise ConversionError(f"{self.path}: storage data/{key} missing from the archive") from None
    dtype = np.dtype(storage.dtype).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype, count=len(raw) // dtype.itemsize), storage.name


def is_torchscript(path: str | os.PathLike) -> bool:
  """A zip holding `<name>/code/` next to `<name>/data.pkl` (what torch.jit.save writes)."""
  path = os.fspath(path)
  if not zipfile.is_zipfile(path):
    return False
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
  return any(n.endswith("/data.pkl") for n in names) and any("/code/" in n for n in names)


def load_module(path: str | os.PathLike) -> ScriptObject:
  """The root stand-in of a TorchScript archive's module tree (tensors as `_Tensor`)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConversionError(f"checkpoint file not found: {path}")
  with zipfile.ZipFile(path) as z:
    record = next((n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") == 1), None)
    if record is None:
      raise ConversionError(f"{path}: not a TorchScript archive (no <name>/data.pkl)")
    prefix = record[:-len("data.pkl")]
    order = z.read(prefix + "byteorder").decode().strip() if prefix + "byteorder" in \
        z.namelist() else "little"
    if order != "little":
      raise ConversionError(f"{path}: {order}-endian TorchScript archives are not supported")
    with z.open(record) as f:
      try:
        root = _Unpickler(f, z, prefix, path).load()
      except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, ValueError) as e:
        raise ConversionError(f"{path}: malformed TorchScript data.pkl ({e})") from None
  if not isinstance(root, ScriptObject):
    raise ConversionError(f"{path}: data.pkl holds a {type(root).__name__}, not a module")
  return root


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """`torch.jit.load(path).state_dict()` as {key: numpy}, without torch and without running code."""
  out: dict[str, np.ndarray] = {}

  def walk(obj: ScriptObject, prefix: str, depth: int) -> None:
    if depth > 64:
      raise ConversionError(f"{path}: module tree deeper than 64 levels")
    for name, value in vars(obj).items():
      if isinstance(value, _Tensor):
        out[prefix + str(name)] = value.numpy()
      elif isinstance(value, ScriptObject):
        walk(value, f"{prefix}{name}.", depth + 1)

  walk(load_module(path), "", 0)
  return out

"""Safe reading of PyTorch checkpoints into flat `{key: np.ndarray}` dicts.

A `.pt`/`.ckpt` file is a pickle: loading it with `weights_only=False` runs whatever code its author
put in it. vlx only ever calls `torch.load(..., weights_only=True)`, whose restricted unpickler
accepts tensors and plain containers, plus the short, documented allow-list in `SAFE_GLOBALS`.
Anything else is refused with `UnsafeCheckpointError` naming the file and the refused globals.

Lightning `.ckpt` containers ({'state_dict': sd, 'epoch', 'optimizer_states', 'callbacks',
'hyper_parameters', ...}) load the same way: only `state_dict` is returned (`load_state_dict`);
the other entries are unpickled by the same restricted unpickler and discarded. The one non-plain
item of a Lightning 1.x file, the callback class used as a key of `callbacks`, is bound to an inert
stand-in (`LightningCallbackKey`); pytorch_lightning is never imported.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vlx.convert.errors import (CheckpointNotFoundError, ConversionError, MissingTorchError,
                                UnsafeCheckpointError)

# Wrapper keys under which trainers nest the state dict ({'model': sd}, Lightning's
# {'state_dict': sd, 'epoch': ..}, DeepSpeed's {'module': sd}, {'model_state_dict': sd}).
WRAPPER_KEYS = ("state_dict", "model", "module", "model_state_dict")


class LightningCallbackKey:
  """Stand-in for a PyTorch-Lightning callback *class* used as a dict key.

  Lightning 1.x saves `checkpoint['callbacks'] = {type(callback): callback_state}`: the class object
  itself (e.g. `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`) is pickled by name,
  which `weights_only=True` refuses. We allow exactly those names and bind them to this empty class,
  so the key loads as an inert object; nothing of Lightning is imported or run. Instantiating it
  (what a pickle would do to build an object of that class) is refused.
  """

  def __new__(cls, *args, **kwargs):
    import pickle  # pylint: disable=import-outside-toplevel
    raise pickle.UnpicklingError(
        "a Lightning callback class may appear only as a dict key (checkpoint['callbacks']), "
        "not be instantiated")


# Lightning callback classes whose *class object* Lightning 1.x uses as a key of
# checkpoint['callbacks'] (the callbacks that save state). Newer Lightning keys by strings.
LIGHTNING_CALLBACK_KEYS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
)


def _safe_globals() -> list[Callable | tuple[Callable, str]]:
  """Globals added to torch's weights-only allow-list, each harmless by construction.

  * numpy `scalar(dtype, bytes)`: rebuilds one number from raw bytes (e.g. a metric stored next to
    the weights as np.float64); `dtype(spec, align, copy)`: a dtype description.
  * numpy `_reconstruct(ndarray, shape, dtype)` + `ndarray`: an empty array whose buffer is then set
    from raw bytes; object arrays hold only items that went through the same restricted unpickler.
  Both numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) module names are registered.
  * `LIGHTNING_CALLBACK_KEYS` bound to `LightningCallbackKey` (see there): the class-object keys of
    a Lightning 1.x `checkpoint['callbacks']`.
  Deliberately NOT added: `argparse.Namespace`, Lightning's `AttributeDict` and other config
  objects: harmless in themselves but they open the door to arbitrary nested content and are not weights.
  """
  try:
    multiarray = np._core.multiarray  # numpy >= 2
  except AttributeError:  # pragma: no cover - numpy 1.x
    multiarray = np.core.multiarray
  out: list[Callable | tuple[Callable, str]] = [np.dtype, np.ndarray]
  # numpy>=1.25 pickles a dtype as an instance of its class in numpy.dtypes (Float64DType, ...).
  dtypes = getattr(np, "dtypes", None)
  out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")] if dtypes else []
  for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    out.append((multiarray.scalar, f"{mod}.scalar"))
    out.append((multiarray._reconstruct, f"{mod}._reconstruct"))
  out += [(LightningCallbackKey, name) for name in LIGHTNING_CALLBACK_KEYS]
  return out


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise MissingTorchError(
        "reading PyTorch checkpoints needs torch: pip install -e .[convert]") from e
  return torch


def _global_name(g: Callable | tuple[Callable, str]) -> str:
  return g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"


def _refused_globals(torch, path: str, message: str, allow: list) -> list[str]:
  """Names of the globals torch would refuse (read without executing anything)."""
  names: list[str] = []
  try:
    names = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
  except Exception:  # noqa: BLE001 - old torch or a legacy-format file: fall back to the message
    pass
  allowed = {_global_name(g) for g in allow}
  names = [n for n in names if n not in allowed]
  if not names:
    names = (re.findall(r"GLOBAL ([\w.]+)", message)
             or re.findall(r"got <class '([\w.]+)'>", message) or ["<unknown>"])
  return names


def load_raw(path: str | os.PathLike, *, extra_safe_globals: list | None = None) -> Any:
  """`torch.load(path, map_location='cpu', weights_only=True)` with the vlx allow-list.

  `extra_safe_globals`: more globals a family has checked and documented (same format as
  `torch.serialization.safe_globals`). Raises CheckpointNotFoundError / UnsafeCheckpointError.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointNotFoundError(f"checkpoint file not found: {path}")
  torch = _import_torch()
  allow = _safe_globals() + list(extra_safe_globals or [])
  import pickle  # pylint: disable=import-outside-toplevel
  try:
    with torch.serialization.safe_globals(allow):
      return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
  except pickle.UnpicklingError as e:
    if not _is_zip(path) and re.search(r"Unsupported operand|invalid load key", str(e)):
      raise ConversionError(f"{path}: not a PyTorch checkpoint (neither a torch.save zip nor a "
                            "pickle; expected a released .pt/.pth/.ckpt file)") from None
    refused = _refused_globals(torch, path, str(e), allow)
    raise UnsafeCheckpointError(
        f"{path}: refused to load: the file contains pickled objects that would need code "
        f"execution to load (refused globals: {', '.join(refused)}). vlx loads only with "
        "torch.load(weights_only=True); re-save the checkpoint as a plain {name: tensor} dict "
        "from a trusted environment.") from None
  except (RuntimeError, EOFError, ValueError) as e:
    raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({e})") from None


def _is_zip(path: str) -> bool:
  """mmap (no copy of a multi-GB file into memory) works only for the zip format of torch>=1.6."""
  with open(path, "rb") as f:
    return f.read(4) == b"PK\x03\x04"


def _unwrap(obj: Any, path: str) -> Mapping[str, Any]:
  """Finds the {key: tensor} mapping inside common trainer wrappers (possibly nested)."""
  seen = 0
  while isinstance(obj, Mapping) and seen < 4:
    if obj and all(_is_array(v) for v in obj.values()):
      return obj
    inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
    if inner is None:
      break
    obj, seen = inner, seen + 1
  if isinstance(obj, Mapping) and obj:
    bad = [k for k, v in obj.items() if not _is_array(v)][:5]
    raise ConversionError(
        f"{path}: expected a state dict {{name: tensor}} (or one wrapped under "
        f"{'/'.join(WRAPPER_KEYS)}); entries that are not tensors: {bad}")
  raise ConversionError(f"{path}: expected a state dict {{name: tensor}}, got {type(obj).__name__}"
                        + (" (empty)" if isinstance(obj, Mapping) else ""))


def _is_array(v: Any) -> bool:
  return isinstance(v, np.ndarray) or type(v).__module__.startswith("torch") and hasattr(v, "numpy")


def to_numpy(t: Any) -> np.ndarray:
  """Tensor -> numpy on CPU; bfloat16/float16 become float32 (vlx parameters are float32)."""
  if isinstance(t, np.ndarray):
    return t.astype(np.float32) if t.dtype == np.float16 else t
  torch = _import_torch()
  t = t.detach().cpu()
  if t.dtype in (torch.bfloat16, torch.float16):
    t = t.float()
  return t.numpy()


def load_state_dict(path: str | os.PathLike, *,
                    extra_safe_globals: list | None = None) -> dict[str, np.ndarray]:
  """Reads a checkpoint file into a flat {key: np.ndarray}, wrappers and `module.` removed."""
  path = os.fspath(path)
  try:
    raw = load_raw(path, extra_safe_globals=extra_safe_globals)
  except UnsafeCheckpointError:
    # A whole pickled dall_e module (OpenAI's DALL-E encoder.pkl): the same restricted unpickler
    # with its module classes bound to inert stand-ins; it still refuses every other global.
    from vlx.convert import safe_pickle  # pylint: disable=import-outside-toplevel
    if not safe_pickle.is_module_pickle(path):
      raise
    return safe_pickle.load_module_state_dict(path)
  sd = _unwrap(raw, path)
  keys = [str(k) for k in sd]
  strip = bool(keys) and all(k.startswith("module.") for k in keys)  # DataParallel / DDP
  return {(k[len("module."):] if strip else k): to_numpy(v) for k, v in zip(keys, sd.values())}

load = load_state_dict  # the name DESIGN.md uses

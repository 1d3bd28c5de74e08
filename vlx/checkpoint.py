"""Orbax checkpoints of the TrainState: periodic + preemption saves, resume, params-only init.

Layout: `<workdir>/checkpoints/<step>/` (Orbax writes to a temporary folder and renames: atomic).
SIGTERM: in a single-process run a Python handler sets a flag the loop checks after every step
(JAX's preemption sync point only exists under `jax.distributed`); multi-process runs rely on
Orbax's `PreemptionCheckpointingPolicy`.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import signal
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from orbax.checkpoint import checkpoint_managers as cm

from vlx.optim import path_str


def checkpoint_dir(workdir: str | os.PathLike) -> pathlib.Path:
  return pathlib.Path(workdir).absolute() / "checkpoints"


def make_manager(workdir: str | os.PathLike, *, ckpt_every: int, keep: int,
                 read_only: bool = False) -> ocp.CheckpointManager:
  """Saves every `ckpt_every` steps (0 = only forced saves) and on preemption; keeps `keep`."""
  policies: list[Any] = [cm.PreemptionCheckpointingPolicy()]
  if ckpt_every > 0:
    policies.insert(0, cm.FixedIntervalPolicy(ckpt_every))
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=cm.AnySavePolicy(policies),
      preservation_policy=cm.LatestN(keep) if keep > 0 else None,
      create=not read_only, read_only=read_only, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore(manager: ocp.CheckpointManager, abstract_with_shardings: Any,
            step: int | None = None) -> tuple[Any, int] | None:
  """(state, step) from the latest (or given) step, placed in the target shardings; None if none."""
  step = manager.latest_step() if step is None else step
  if step is None:
    return None
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract_with_shardings))
  return state, int(step)


class SigtermFlag:
  """Installs a SIGTERM handler that only records the signal (the loop saves and exits cleanly)."""

  def __init__(self):
    self.received = False
    self._previous = None
    if jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread (e.g. some test runners): no handler
        self._previous = None

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


# ----------------------------------------------------------------------------- partial loads


def _flat(tree: Any) -> dict[str, Any]:
  """{'a/b/kernel': leaf}; a trailing 'value' level (how Orbax stores nnx Variables) is dropped."""
  out = {}
  for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = path_str(p)
    out[key[:-len("/value")] if key.endswith("/value") else key] = v
  return out


def _restore_params_numpy(step_dir: pathlib.Path) -> Any:
  """Only the 'params' entry of a TrainState checkpoint, as host numpy (any saved topology)."""
  item = step_dir / "default" if (step_dir / "default").is_dir() else step_dir
  tree = ocp.StandardCheckpointer().metadata(item).item_metadata.tree
  if "params" not in tree:
    raise ValueError(f"{step_dir} is not a vlx TrainState checkpoint (no 'params' entry)")
  is_leaf = lambda x: hasattr(x, "shape") and hasattr(x, "dtype")
  params = tree["params"]
  target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), params, is_leaf=is_leaf)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), params, is_leaf=is_leaf)
  out = ocp.PyTreeCheckpointer().restore(item, args=ocp.args.PyTreeRestore(
      item={"params": target}, restore_args={"params": args}, partial_restore=True))
  return out["params"]


def _resolve_checkpoint(path: str) -> pathlib.Path:
  """A vlx workdir (latest step), its checkpoints/ folder, or one step folder."""
  p = pathlib.Path(path).absolute()
  for root in (p / "checkpoints", p):
    if root.is_dir():
      steps = sorted(int(d.name) for d in root.iterdir() if d.is_dir() and d.name.isdigit())
      if steps:
        return root / str(steps[-1])
  if p.is_dir() and p.name.isdigit():
    return p
  raise FileNotFoundError(f"config.init.from_checkpoint={path!r}: no checkpoint step folder found "
                          "(expected a vlx workdir, its checkpoints/ folder or checkpoints/<step>)")


def _load_into(target: Any, source: dict[str, Any], what: str) -> tuple[Any, list[str]]:
  """Copies source leaves into target (an nnx.State of arrays) where path and shape match."""
  loaded, skipped = [], []
  flat_paths = jax.tree_util.tree_flatten_with_path(target)[0]
  leaves = []
  for p, leaf in flat_paths:
    key = path_str(p)
    src = source.get(key)
    if src is not None and tuple(np.shape(src)) == tuple(leaf.shape):
      leaves.append(jax.device_put(np.asarray(src, dtype=leaf.dtype), leaf.sharding))
      loaded.append(key)
    else:
      if src is not None:
        skipped.append(f"{key} (shape {np.shape(src)} != {leaf.shape})")
      leaves.append(leaf)
  treedef = jax.tree_util.tree_structure(target)
  missing = [path_str(p) for p, _ in flat_paths if path_str(p) not in set(loaded)]
  unused = sorted(set(source) - set(loaded))
  logging.info("%s: loaded %d arrays; kept init for %d (%s); unused in source %d (%s); "
               "shape mismatches: %s", what, len(loaded), len(missing), missing[:20], len(unused),
               unused[:20], skipped)
  return jax.tree_util.tree_unflatten(treedef, leaves), loaded


def _load_converted_fn():
  """`load_converted(dir) -> (model_config, nnx.State)` of the converter (imported lazily)."""
  for name in ("vlx.convert.engine", "vlx.convert.store", "vlx.convert"):
    try:
      module = importlib.import_module(name)
    except ImportError:
      continue
    if hasattr(module, "load_converted"):
      return module.load_converted
  raise ImportError("config.init.from_converted needs vlx.convert's load_converted(dir), which is "
                    "not available in this installation")


def init_from(state: dict[str, Any], init_cfg) -> dict[str, Any]:
  """Applies config.init: params (and model variables) from another vlx run or a converted dir."""
  if init_cfg.get("from_checkpoint"):
    path = _resolve_checkpoint(init_cfg.from_checkpoint)
    state = dict(state)
    state["params"], loaded = _load_into(state["params"], _flat(_restore_params_numpy(path)),
                                         f"init from {path}")
    if not loaded:
      raise ValueError(f"config.init.from_checkpoint={path}: no parameter matched the model")
  if init_cfg.get("from_converted"):
    _, converted = _load_converted_fn()(init_cfg.from_converted)
    source = _flat(nnx.to_pure_dict(converted) if isinstance(converted, nnx.State) else converted)
    state = dict(state)
    what = f"init from converted {init_cfg.from_converted}"
    state["params"], loaded = _load_into(state["params"], source, what)
    state["other"], _ = _load_into(state["other"], source, what + " (non-Param variables)")
    if not loaded:
      raise ValueError(f"config.init.from_converted={init_cfg.from_converted}: no parameter "
                       "matched the model (wrong family or head?)")
  return state

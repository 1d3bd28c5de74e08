"""Orbax checkpoints of the TrainState: periodic + preemption saves, resume, params-only init.

Layout: `<workdir>/checkpoints/<step>/` (Orbax writes to a temporary folder and renames: atomic).
SIGTERM: in a single-process run a Python handler sets a flag the loop checks after every step
(JAX's preemption sync point only exists under `jax.distributed`); multi-process runs rely on
Orbax's `PreemptionCheckpointingPolicy` / `reached_preemption(step)`: JAX's coordination service
catches the SIGTERM on any host and every process agrees on the same step to save and stop at.
Workdirs may be local or gs:// (etils.epath); every process must see the same workdir.
"""
from __future__ import annotations

import importlib
import os
import pathlib
import re
import signal
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from flax import nnx
from orbax.checkpoint import checkpoint_managers as cm

from vlx.layers import common
from vlx.optim import path_str


def checkpoint_dir(workdir: str | os.PathLike) -> pathlib.Path | epath.Path:
  """`<workdir>/checkpoints`: a local path (made absolute) or a cloud URL such as gs://b/run
  (Orbax writes either collectively: every process saves its own shards, process 0 the metadata)."""
  if "://" in str(workdir):
    return epath.Path(str(workdir)) / "checkpoints"
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


def _adapt(key: str, src: Any, shape: tuple[int, ...], keep_init: tuple[str, ...],
           what: str, resizable: Mapping[str, int]) -> np.ndarray | None:
  """The source value fitted to `shape`; None = keep the fresh init (declared in keep_init).
  `resizable` ({key regex: axis or (axis, 'nearest' | 'linear')}, the family's
  resizable_params): resized along axis (torch F.interpolate's formulas, vlx.layers.common)."""
  src = np.asarray(src)
  if tuple(src.shape) == tuple(shape):
    return src
  for rx, how in resizable.items():
    axis, mode = (how, "nearest") if isinstance(how, int) else tuple(how)
    same_elsewhere = src.ndim == len(shape) and all(
        a == b for i, (a, b) in enumerate(zip(src.shape, shape)) if i != axis)
    if re.search(rx, key) and same_elsewhere:
      logging.info("%s: %s resized %s -> %s (%s)", what, key, src.shape, shape, mode)
      resize = common.linear_resize_1d if mode == "linear" else common.nearest_resize_1d
      return resize(src, shape[axis], axis)
  if any(re.search(rx, key) for rx in keep_init):
    logging.info("%s: %s keeps its fresh init (source shape %s != model shape %s; declared in "
                 "config.init.keep_init)", what, key, src.shape, shape)
    return None
  raise ValueError(f"{what}: {key} has shape {tuple(src.shape)} in the source but "
                   f"{tuple(shape)} in the model (add a regex matching it to "
                   "config.init.keep_init to keep its fresh init instead)")


def _load_into(target: Any, source: dict[str, Any], what: str,
               keep_init: tuple[str, ...] = (), reinit: tuple[str, ...] = (),
               resizable: Mapping[str, int] | None = None) -> tuple[Any, list[str]]:
  """Copies source leaves into target (an nnx.State of arrays) by path.

  Same shape: copied; `resizable` keys: resized; other shape changes: an error unless a regex of
  `keep_init` matches the key. Model keys absent in the source (e.g. a new QA classifier) or
  matched by a regex of `reinit` keep their fresh init and are logged by name."""
  loaded = []
  flat_paths = jax.tree_util.tree_flatten_with_path(target)[0]
  leaves = []
  for p, leaf in flat_paths:
    key = path_str(p)
    src = source.get(key)
    if src is not None and any(re.search(rx, key) for rx in reinit):
      logging.info("%s: %s re-initialised (config.init.reinit)", what, key)
      src = None
    value = None if src is None else _adapt(key, src, tuple(leaf.shape), keep_init, what,
                                                  resizable or {})
    if value is None:
      leaves.append(leaf)
      continue
    leaves.append(jax.device_put(np.asarray(value, dtype=leaf.dtype), leaf.sharding))
    loaded.append(key)
  treedef = jax.tree_util.tree_structure(target)
  done = set(loaded)
  missing = [path_str(p) for p, _ in flat_paths if path_str(p) not in done]
  unused = sorted(set(source) - done)
  logging.info("%s: loaded %d arrays", what, len(loaded))
  if missing:
    logging.info("%s: %d model arrays keep their fresh init: %s", what, len(missing), missing)
  if unused:
    logging.info("%s: %d source arrays unused: %s", what, len(unused), unused)
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


def init_from(state: dict[str, Any], init_cfg, *, training: bool = True,
              family: Any | None = None) -> dict[str, Any]:
  """Applies config.init: public backbones (bert_dir / vit_file), then params (and model
  variables) from another vlx run (from_checkpoint) or a converted dir (from_converted).

  `family` (the vlx.registry.Family of config.model.family) supplies the backbone layout
  (bert_dir / vit_file need it) and `resizable_params`. Shape changes: see `_load_into` (the
  family's resizable parameters, e.g. ALPRO's time_embed, are resized; others are an error
  unless declared in init_cfg.keep_init, a tuple of key regexes). init_cfg.reinit (key regexes):
  arrays that keep their fresh init when a training run starts from those weights (All-in-one
  re-creates its ITM head before multiple-choice fine-tuning); `training=False` (`--mode eval`,
  e.g. zero-shot evaluation) loads them like every other array."""
  keep_init = tuple(init_cfg.get("keep_init", ()) or ())
  reinit = tuple(init_cfg.get("reinit", ()) or ()) if training else ()
  resizable = dict(getattr(family, "resizable_params", None) or {})
  if init_cfg.get("bert_dir") or init_cfg.get("vit_file"):
    from vlx.convert.backbones import init_from_backbones, summary  # lazy: reads torch files
    state = dict(state)
    state["params"], report = init_from_backbones(
        state["params"], layout=getattr(family, "backbone_layout", None),
        bert_dir=init_cfg.get("bert_dir"), vit_file=init_cfg.get("vit_file"))
    logging.info("init from backbones:\n%s", summary(report))
  if init_cfg.get("from_checkpoint"):
    path = _resolve_checkpoint(init_cfg.from_checkpoint)
    state = dict(state)
    state["params"], loaded = _load_into(state["params"], _flat(_restore_params_numpy(path)),
                                         f"init from {path}", keep_init, reinit, resizable)
    if not loaded:
      raise ValueError(f"config.init.from_checkpoint={path}: no parameter matched the model")
  if init_cfg.get("from_converted"):
    _, converted = _load_converted_fn()(init_cfg.from_converted)
    source = _flat(nnx.to_pure_dict(converted) if isinstance(converted, nnx.State) else converted)
    state = dict(state)
    what = f"init from converted {init_cfg.from_converted}"
    state["params"], loaded = _load_into(state["params"], source, what, keep_init, reinit,
                                         resizable)
    state["other"], _ = _load_into(state["other"], source, what + " (non-Param variables)",
                                   keep_init, reinit, resizable)
    if not loaded:
      raise ValueError(f"config.init.from_converted={init_cfg.from_converted}: no parameter "
                       "matched the model (wrong family or head?)")
  return state


def load_params_flat(path: str, what: str = "config.init") -> dict[str, np.ndarray]:
  """{'a/b/kernel': host array} of a vlx run (a workdir, its checkpoints/ or one step folder:
  the saved params) or of a converted dir (`python -m vlx.convert`: params and other variables).

  For partial loads that a family places itself (e.g. ALPRO's prompter subtree)."""
  p = pathlib.Path(path).absolute()
  if (p / "model_config.json").is_file():
    _, converted = _load_converted_fn()(str(p))
    return _flat(nnx.to_pure_dict(converted) if isinstance(converted, nnx.State) else converted)
  try:
    step_dir = _resolve_checkpoint(str(p))
  except FileNotFoundError:
    raise FileNotFoundError(f"{what}={path!r}: neither a vlx workdir/checkpoint (checkpoints/"
                            "<step>) nor a converted dir (model_config.json)") from None
  return {k: np.asarray(v) for k, v in _flat(_restore_params_numpy(step_dir)).items()}


def fill_module(module: Any, source: dict[str, Any], what: str, hint: str) -> int:
  """Copies `source` ({'a/b/kernel': array}, paths relative to `module`) into every nnx.Param of
  `module`, in place, on each parameter's sharding. Every parameter must be there with its shape:
  otherwise one ValueError naming `what`, the missing / mismatched paths and `hint`. Returns the
  number of arrays loaded (a frozen sub-model loaded from another run or a converted dir)."""
  state = nnx.state(module, nnx.Param)
  missing, bad = [], []

  def one(p, leaf):
    key = path_str(p)
    src = source.get(key)
    if src is None:
      missing.append(key)
      return leaf
    if tuple(src.shape) != tuple(leaf.shape):
      bad.append(f"{key} {tuple(src.shape)} != {tuple(leaf.shape)}")
      return leaf
    return jax.device_put(np.asarray(src, leaf.dtype), getattr(leaf, "sharding", None))

  pure = jax.tree_util.tree_map_with_path(one, nnx.to_pure_dict(state))
  if missing or bad:
    raise ValueError(f"{what}: {len(missing)} parameters missing {missing[:8]}, shape "
                     f"mismatches {bad[:8]} ({hint})")
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(module, state)
  return len(jax.tree.leaves(pure))

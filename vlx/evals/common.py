"""What every eval type shares: host rows <-> global arrays, and one cache of jitted family calls.

Multi-host evaluation: each process reads its own share of the split (`make_eval_batches` yields
the same number of batches on every host). `place` pads each host's rows to a multiple of the
batch shards that host holds (padding rows: valid=False, index keys -1) and assembles the global
batch as the training batches are (`jax.make_array_from_process_local_data`), so any eval-set size
and batch size runs on any number of processes and devices. `collect` brings the outputs and the
host columns (labels, indices, valid) back to every host in the same global row order and drops
the padding, so the metrics do not depend on how many processes or devices ran them.

`jitted` is the one compiled-function cache: keyed by (family name, graphdef, function names, the
functions themselves, static keyword arguments), so a second eval of the same model structure
(periodic evals during training) reuses the compiled code instead of tracing again.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vlx import sharding as shd
from vlx.padding import INDEX_KEYS, pad_rows
from vlx.registry import Family

# Row indices a family may key per-row randomness on; -1 on padding rows.
# Host columns never passed to the model.
HOST_ONLY_KEYS = ("label", "qtype", "valid")
_CACHE_SIZE = 32
_JITTED: collections.OrderedDict = collections.OrderedDict()


def percent(x: float) -> float:
  """A fraction as a percentage rounded to 2 decimals (how the references report accuracy)."""
  return round(float(x) * 100, 2)


def gather(x: np.ndarray) -> np.ndarray:
  """Host-local numpy rows from every process (the same shape on each), concatenated in process
  order, on every host (one process: x)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def to_host(x: jax.Array) -> np.ndarray:
  """A global (possibly sharded, possibly not fully addressable) array -> the whole value as numpy
  on every host, rows in global order."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_shards(mesh: jax.sharding.Mesh, rules) -> int:
  """How many distinct batch shards this process's devices hold (all of them on one process)."""
  ways = shd.batch_parallelism(mesh, rules)
  index = shd.batch_sharding(mesh, rules).addressable_devices_indices_map((ways,))
  return len({s[0].start or 0 for s in index.values()})


def place(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh, rules) -> dict[str, jax.Array]:
  """Host-local rows -> global arrays sharded over the batch axes, every host's rows padded
  (`pad_rows`) to a multiple of its share of the batch shards; the result carries 'valid'.

  When the batch axes do not split evenly over the processes (a host holds no disjoint share),
  every host's rows are gathered and the padded global batch is placed from that."""
  sharding = shd.batch_sharding(mesh, rules)
  ways = shd.batch_parallelism(mesh, rules)
  procs = jax.process_count()
  local = host_shards(mesh, rules)
  rows = len(next(iter(batch.values())))
  most = int(gather(np.asarray([rows], np.int32)).max()) if procs > 1 else rows
  if local * procs == ways:
    batch = pad_rows(batch, local, at_least=most)       # the same row count on every host
    rows = len(batch["valid"]) * procs
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v),
                                                      (rows,) + np.shape(v)[1:])
            for k, v in batch.items()}
  full = pad_rows({k: gather(v) for k, v in pad_rows(batch, 1, at_least=most).items()}, ways)
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
          for k, v in full.items()}


def replicate(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """Host numpy values that are equal on every host -> arrays replicated over the mesh (no mesh,
  or an empty one: arrays on the default device, one process only)."""
  if mesh is None or mesh.empty:
    return jax.tree.map(jnp.asarray, tree)
  sharding = shd.replicated(mesh)

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])
  return jax.tree.map(one, tree)


def jitted(family: Family, graphdef: nnx.GraphDef, fn_names: str | Sequence[str],
           **static) -> Callable[..., Any]:
  """The cached `jax.jit` of `(state, *args) -> family.<fn>(model, *args, **static)` (a tuple of
  outputs for several names, each called with the same args): one per (family, model structure,
  functions, static arguments), so repeated evals do not trace again."""
  names = (fn_names,) if isinstance(fn_names, str) else tuple(fn_names)
  fns = tuple(family.require(n, f"this eval ({n})") for n in names)
  key = (family.name, graphdef, names, fns, tuple(sorted(static.items())))
  if key in _JITTED:
    _JITTED.move_to_end(key)
    return _JITTED[key]

  @jax.jit
  def run(state, *args):
    model = nnx.merge(graphdef, state)
    outs = tuple(fn(model, *args, **static) for fn in fns)
    return outs[0] if isinstance(fn_names, str) else outs

  _JITTED[key] = run
  while len(_JITTED) > _CACHE_SIZE:
    _JITTED.popitem(last=False)
  return run


def collect(model: nnx.Module, family: Family, fn_names: str | Sequence[str],
            eval_cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
            mesh: jax.sharding.Mesh, make_eval_batches=None,
            prepare: Callable[[dict], dict] | None = None,
            static: dict | None = None) -> tuple[Any, dict[str, np.ndarray]]:
  """Runs `jitted(family, graphdef, fn_names)` over every batch of the eval block's split.

  Returns (outputs, columns) on every host, valid rows only, in split order: outputs as numpy
  (the functions' output tree), columns = the batches' HOST_ONLY_KEYS (never given to the model)
  and INDEX_KEYS (also given to the model: a family may key per-row randomness on them).
  `prepare(batch)` may add model keys to each host batch first; `static`: keyword arguments
  (hashable) of every function."""
  if make_eval_batches is None:
    from vlx.data.eval_stream import make_eval_batches  # the real pipeline (lazy: TF import)
  rules = tuple(config.mesh.rules)
  graphdef, state = nnx.split(model)
  run = jitted(family, graphdef, fn_names, **(static or {}))
  outs: list[Any] = []
  cols: list[dict[str, np.ndarray]] = []
  with jax.set_mesh(mesh), shd.use_rules(rules):
    for batch in make_eval_batches(eval_cfg, config, batch_size=int(eval_cfg.batch_size)):
      batch = {k: v for k, v in batch.items() if np.asarray(v).dtype != object}
      if prepare is not None:
        batch = prepare(batch)
      placed = place(batch, mesh, rules)
      host = [k for k in placed if k in HOST_ONLY_KEYS or k in INDEX_KEYS]
      cols.append({k: to_host(placed[k]) for k in host})
      outs.append(jax.tree.map(to_host, run(state, {k: v for k, v in placed.items()
                                                     if k not in HOST_ONLY_KEYS})))
  if not outs:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}/{eval_cfg.get('split')!r}: no batches")
  keep = np.concatenate([c["valid"] for c in cols]).astype(bool)
  out = jax.tree.map(lambda *xs: np.concatenate(xs)[keep], *outs)
  columns = {k: np.concatenate([c[k] for c in cols])[keep] for k in cols[0] if k != "valid"}
  return out, columns


def labelled_outputs(model: nnx.Module, family: Family, fn_name: str, eval_type: str,
                     eval_cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     mesh: jax.sharding.Mesh, make_eval_batches=None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """`collect` of `family.<fn_name>` for an eval type whose batches must carry 'label'
  (multiple choice, classification); clear errors when the family or the labels are missing."""
  family.require(fn_name, f"eval type {eval_type!r}")
  out, cols = collect(model, family, fn_name, eval_cfg, config, mesh, make_eval_batches)
  if "label" not in cols:
    raise ValueError(f"{eval_type} eval batches have no 'label'")
  return out, cols


def check_unique(ids: np.ndarray | None, what: str) -> None:
  """A split read twice (every host, every batch) shows up as a repeated example_index."""
  if ids is not None and ids.size and len(np.unique(ids)) != len(ids):
    raise ValueError(f"{what} eval batches repeat an example_index: the split was read twice")


__all__ = ["HOST_ONLY_KEYS", "INDEX_KEYS", "check_unique", "collect", "gather", "host_shards",
           "jitted", "labelled_outputs", "pad_rows", "percent", "place", "replicate", "to_host"]

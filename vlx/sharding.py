"""Mesh from `config.mesh`, logical-axis rules, state and batch shardings, activation constraints.

Variables carry logical axis names (metadata only, see vlx/__init__.py); one rules table maps each
name to mesh axes. A name without a rule, or mesh axes whose size does not divide the dimension,
leave that dimension replicated, so every config runs on any device count.

`config.mesh.strategy` picks a named layout (`STRATEGIES`): 'dp' (parameters replicated, batch
over every device), 'fsdp' (parameters and optimizer state sharded over every device, ZeRO-3
style), 'dp_fsdp' (sharded within groups of `mesh.fsdp_size` devices, replicated across groups),
or 'custom' (`mesh.axes` and `mesh.rules` as written). `resolve_strategy` fills axes and rules.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

Rules = Sequence[tuple[str, Any]]
_ACTIVE_RULES: list[Rules] = []

# Logical names that parameters carry (README "Conventions"); activations use 'batch' too.
PARAM_NAMES = ("embed", "mlp", "heads", "vocab", "proj")
# Named rule tables. Under FSDP every parameter name maps to 'fsdp': `logical_to_spec` gives the
# axis to the first dimension it divides (and never twice), so each matrix is split once.
RULE_TABLES: dict[str, tuple[tuple[str, Any], ...]] = {
    "dp": (("batch", ("data", "fsdp")),) + tuple((n, None) for n in PARAM_NAMES),
    "fsdp": (("batch", ("data", "fsdp")),) + tuple((n, "fsdp") for n in PARAM_NAMES),
}
RULE_TABLES["dp_fsdp"] = RULE_TABLES["fsdp"]
STRATEGIES = ("custom", "dp", "fsdp", "dp_fsdp")


def strategy_axes(strategy: str, fsdp_size: int = 0,
                  local_device_count: int | None = None) -> tuple[tuple[str, int], ...]:
  """Mesh axes of a named strategy; dp_fsdp's group is `fsdp_size` devices (0 = one process's
  devices: parameters are gathered over the fast links inside a host, gradients all-reduced
  across hosts)."""
  if strategy == "dp":
    return (("data", -1), ("fsdp", 1), ("model", 1))
  if strategy == "fsdp":
    return (("data", 1), ("fsdp", -1), ("model", 1))
  if strategy == "dp_fsdp":
    size = int(fsdp_size) or int(local_device_count or jax.local_device_count())
    if size < 1:
      raise ValueError(f"config.mesh.fsdp_size={fsdp_size}: expected >= 1 (0 = devices per "
                       "process)")
    return (("data", -1), ("fsdp", size), ("model", 1))
  raise ValueError(f"config.mesh.strategy={strategy!r}: expected one of {STRATEGIES}")


def resolve_strategy(config):
  """A copy of `config` whose mesh.axes / mesh.rules come from mesh.strategy ('custom' or no
  strategy field: unchanged). Everything downstream (validation, shardings, input, evals) reads
  the resolved fields."""
  strategy = str(config.mesh.get("strategy", "custom") or "custom")
  if strategy == "custom":
    return config
  axes = strategy_axes(strategy, int(config.mesh.get("fsdp_size", 0) or 0))
  out = config.copy_and_resolve_references()
  with out.unlocked():
    out.mesh.axes = axes
    out.mesh.rules = RULE_TABLES[strategy]
  return out


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """`jax.make_mesh` with Auto axes; one size may be -1 (= the remaining devices)."""
  devices = list(devices if devices is not None else jax.devices())
  names = tuple(str(a[0]) for a in mesh_cfg.axes)
  sizes = [int(a[1]) for a in mesh_cfg.axes]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh.axes={mesh_cfg.axes}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if known <= 0 or len(devices) % known:
    raise ValueError(f"config.mesh.axes={mesh_cfg.axes}: fixed sizes (product {known}) do not "
                     f"divide the {len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(f"config.mesh.axes={mesh_cfg.axes} -> {sizes} uses {math.prod(sizes)} "
                     f"devices but {len(devices)} are available")
  return jax.make_mesh(tuple(sizes), names, axis_types=(jax.sharding.AxisType.Auto,) * len(names),
                       devices=devices)


def _rule_table(rules: Rules) -> dict[str, tuple[str, ...]]:
  table = {}
  for logical, axes in rules:
    if axes is None:
      table[logical] = ()
    elif isinstance(axes, str):
      table[logical] = (axes,)
    else:
      table[logical] = tuple(axes)
  return table


def logical_to_spec(names: Sequence[str | None] | None, rules: Rules,
                    shape: Sequence[int] | None = None,
                    mesh: jax.sharding.Mesh | None = None) -> P:
  """PartitionSpec for logical dimension names. With `shape` and `mesh`, mesh axes that do not
  divide their dimension (or are already used by an earlier dimension) are dropped."""
  if not names:
    return P()
  table = _rule_table(rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(names):
    axes = tuple(a for a in table.get(name, ()) if a not in used) if name else ()
    if mesh is not None:
      axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1)
      if shape is not None:
        # Keep the longest prefix of axes whose product divides the dimension.
        kept = []
        for a in axes:
          if shape[i] % (math.prod(mesh.shape[k] for k in kept) * mesh.shape[a]) == 0:
            kept.append(a)
          else:
            break
        axes = tuple(kept)
    used.update(axes)
    out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  while out and out[-1] is None:
    out.pop()
  return P(*out)


def state_shardings(abstract: Any, mesh: jax.sharding.Mesh, rules: Rules) -> Any:
  """NamedShardings for an nnx.State (or any pytree of nnx Variables / shape structs)."""
  specs = nnx.get_partition_spec(abstract)

  def one(spec, leaf):
    shape = getattr(leaf, "shape", ())
    names = tuple(spec) if isinstance(spec, P) else None
    return NamedSharding(mesh, logical_to_spec(names, rules, shape, mesh))
  return jax.tree.map(one, specs, abstract, is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_spec(rules: Rules, mesh: jax.sharding.Mesh | None = None) -> P:
  """Leading (batch) dimension over the mesh axes of the 'batch' rule."""
  axes = _rule_table(rules).get("batch", ())
  if mesh is not None:
    axes = tuple(a for a in axes if a in mesh.shape)
  return P(axes if axes else None)


def batch_sharding(mesh: jax.sharding.Mesh, rules: Rules) -> NamedSharding:
  return NamedSharding(mesh, batch_spec(rules, mesh))


def batch_parallelism(mesh: jax.sharding.Mesh, rules: Rules) -> int:
  """How many ways the batch dimension is split (global batch must be a multiple)."""
  axes = _rule_table(rules).get("batch", ())
  return math.prod(mesh.shape[a] for a in axes if a in mesh.shape)


@contextlib.contextmanager
def use_rules(rules: Rules) -> Iterator[None]:
  """Makes `rules` the table `constrain` uses (inside jitted model code)."""
  _ACTIVE_RULES.append(tuple(rules))
  try:
    yield
  finally:
    _ACTIVE_RULES.pop()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding constraint for an activation by logical names; a no-op without a mesh or rules."""
  mesh = jax.sharding.get_abstract_mesh()
  if not _ACTIVE_RULES or mesh is None or mesh.empty:
    return x
  spec = logical_to_spec(names, _ACTIVE_RULES[-1], x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)


def put_global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """Host-local numpy rows -> global arrays sharded over the batch axes."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}

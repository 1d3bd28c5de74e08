"""Pure train step and sharded state creation (functional: the state is a pytree, not a module).

TrainState = {'params': nnx.State of nnx.Param, 'other': the rest of the model state (e.g. prompt
features, not trained; BatchNorm running statistics, nnx.BatchStat, which the training forward
updates and the step writes back), 'opt_state': optax state of the trainable parameters only,
'step': int32 count of applied updates}.
The module is rebuilt with `nnx.merge(graphdef, ...)` inside the jitted function, so the step is a
plain function of arrays that Orbax can save and jit can donate.

Frozen parameters (`Family.frozen_params` regexes) stay in 'params' (saved, restored, loaded like
the others) but are split off before `jax.value_and_grad` (`optim.split_frozen`): the step computes
no gradient for them, the optimizer holds no state for them (`opt_state` is `tx.init` of the
trainable part) and they leave the step bit-identical.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from vlx import optim
from vlx import sharding as shd
from vlx.registry import Family

TrainState = dict[str, Any]


def build_model(family: Family, config: ml_collections.ConfigDict) -> nnx.Module:
  return family.build(config.model, rngs=nnx.Rngs(params=int(config.seed)))


def weighted_loss(family: Family, model: nnx.Module, batch: dict, *, weights: dict[str, float],
                  rng: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(total loss, metrics): the family's objectives weighted by config.objectives and summed in
  the order the family returns them; each loss also logged as `<objective>_loss`, the total as
  `loss`. The one place objective weights and metric names are applied."""
  unknown = sorted(set(weights) - set(family.objective_names))
  if unknown:
    raise ValueError(f"config.objectives has unknown names {unknown}; family {family.name!r} "
                     f"knows {list(family.objective_names)}")
  active = frozenset(k for k, w in weights.items() if w)
  losses, metrics = family.objectives(model, batch, active=active, rng=rng, train=train)
  metrics = dict(metrics)
  total = jnp.zeros((), jnp.float32)
  for name, value in losses.items():
    total = total + weights[name] * value
    metrics[f"{name}_loss"] = value
  metrics["loss"] = total
  return total, metrics


def abstract_state(family: Family, config: ml_collections.ConfigDict,
                   tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  """(graphdef, TrainState of ShapeDtypeStructs) without allocating anything."""
  model = nnx.eval_shape(lambda: build_model(family, config))
  graphdef, params, other = nnx.split(model, nnx.Param, ...)
  opt_state = jax.eval_shape(tx.init, optim.split_frozen(params, family.frozen_params)[0])
  return graphdef, dict(params=params, other=other, opt_state=opt_state,
                        step=jax.ShapeDtypeStruct((), jnp.int32))


def state_shardings(abstract: TrainState, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh, rules, frozen: Sequence[str] = ()) -> TrainState:
  """Params/other by logical names; optimizer moments like their params; scalars replicated.
  `frozen`: the family's `frozen_params` (the optimizer state has no entries for them)."""
  rep = shd.replicated(mesh)
  params_sh = shd.state_shardings(abstract["params"], mesh, rules)
  other_sh = shd.state_shardings(abstract["other"], mesh, rules)
  opt_sh = optax.tree_map_params(
      tx, lambda _, s: s, abstract["opt_state"], optim.split_frozen(params_sh, frozen)[0],
      transform_non_params=lambda _: rep,
      is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return dict(params=params_sh, other=other_sh, opt_state=opt_sh, step=rep)


def with_shardings(abstract: TrainState, shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs carrying their target shardings (Orbax restore / AOT lowering)."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def make_init(family: Family, config: ml_collections.ConfigDict,
              tx: optax.GradientTransformation, shardings: TrainState,
              compiler_options: dict | None = None) -> Callable[[], TrainState]:
  """Jitted state constructor with `out_shardings`, so parameters are born sharded."""

  def init() -> TrainState:
    model = build_model(family, config)
    _, params, other = nnx.split(model, nnx.Param, ...)
    return dict(params=params, other=other,
                opt_state=tx.init(optim.split_frozen(params, family.frozen_params)[0]),
                step=jnp.zeros((), jnp.int32))
  return jax.jit(init, out_shardings=shardings, compiler_options=compiler_options)


def create_state(family: Family, config: ml_collections.ConfigDict,
                 tx: optax.GradientTransformation, shardings: TrainState) -> TrainState:
  return make_init(family, config, tx, shardings)()


def _split_micro(batch: dict[str, jax.Array], accum: int) -> dict[str, jax.Array]:
  """[B, ...] -> [accum, B/accum, ...] taking every accum-th row, so each micro-batch keeps the
  batch sharding of the global batch."""

  def one(x):
    x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree.map(one, batch)


def make_train_step(family: Family, config: ml_collections.ConfigDict,
                    graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    schedule: optax.Schedule
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The un-jitted step: loss/grads (with optional accumulation), update, scalar metrics."""
  weights = {k: float(v) for k, v in config.objectives.items()}
  accum = int(config.train.grad_accum)
  base_key = jax.random.key(int(config.seed))

  def loss_on(params, frozen, other, batch, rng):
    # copy: fresh Variables of this trace, so the forward may update BatchStats in place
    model = nnx.merge(graphdef, params, frozen, other, copy=True)
    loss, metrics = weighted_loss(family, model, batch, weights=weights, rng=rng, train=True)
    # BatchNorm running statistics the forward pass updated (nnx.BatchStat; empty for models
    # without them): model state like any other, carried out of the step.
    return loss, (metrics, nnx.state(model, nnx.BatchStat))

  # Differentiates the trainable parameters (argument 0) only: frozen ones are step constants.
  grad_fn = jax.value_and_grad(loss_on, has_aux=True)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(base_key, state["step"])
    params, frozen = optim.split_frozen(state["params"], family.frozen_params)
    other = state["other"]
    if accum == 1:
      (loss, (metrics, stats)), grads = grad_fn(params, frozen, other, batch, rng)
      other = nnx.merge_state(other, stats)
    else:
      micro = _split_micro(batch, accum)

      def body(carry, xs):
        acc, oth = carry
        i, mb = xs
        mb = {k: shd.constrain(v, ("batch",)) for k, v in mb.items()}
        (l, (m, st)), g = grad_fn(params, frozen, oth, mb, jax.random.fold_in(rng, i))
        acc = jax.tree.map(jnp.add, acc, (l, m, g))
        return (acc, nnx.merge_state(oth, st)), None   # running stats: micro-batch by micro-batch

      first = jax.tree.map(lambda x: x[0], micro)
      zeros = jax.eval_shape(lambda: grad_fn(params, frozen, other, first, rng))
      init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zeros)
      init = (init[0][0], init[0][1][0], init[1])
      ((loss, metrics, grads), other), _ = jax.lax.scan(body, (init, other),
                                                        (jnp.arange(accum), micro))
      loss, metrics, grads = jax.tree.map(lambda x: x / accum, (loss, metrics, grads))
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    params = nnx.merge_state(optax.apply_updates(params, updates), frozen)
    del loss  # == metrics['loss'] (weighted_loss names the losses)
    out = {"grad_norm": optax.global_norm(grads),
           "lr": jnp.asarray(schedule(state["step"]), jnp.float32)}
    out.update({k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()})
    new_state = dict(params=params, other=other, opt_state=opt_state, step=state["step"] + 1)
    return new_state, out

  return train_step


def jit_train_step(step_fn: Callable, shardings: TrainState, mesh: jax.sharding.Mesh,
                   compiler_options: dict | None = None) -> Callable:
  """`jax.jit` with the state donated and kept in its shardings; metrics replicated. Inputs keep
  the shardings they arrive with (state: as created/restored; batch: over the batch axes).
  `compiler_options`: XLA options for this program (e.g. fast, unoptimised CPU builds in tests)."""
  return jax.jit(step_fn, donate_argnums=(0,), out_shardings=(shardings, shd.replicated(mesh)),
                 compiler_options=compiler_options)


@dataclasses.dataclass(frozen=True)
class Program:
  """Everything compiled for one (family, config, mesh): reused by repeated runs in a process
  (resume tests, notebooks, sweeps) so jit's cache hits instead of recompiling."""
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  graphdef: nnx.GraphDef
  abstract: TrainState
  shardings: TrainState
  init: Callable[[], TrainState]
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 4


def program(family: Family, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
            compiler_options: dict | None = None) -> Program:
  """Optimizer, abstract state, shardings and the jitted init/step for this config and mesh."""
  key = (family.name, config.to_json_best_effort(sort_keys=True), mesh,
         tuple(sorted((compiler_options or {}).items())))
  if key in _PROGRAMS:
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]
  tx, schedule = optim.make_optimizer(config)
  graphdef, abstract = abstract_state(family, config, tx)
  shardings = state_shardings(abstract, tx, mesh, tuple(config.mesh.rules),
                              family.frozen_params)
  prog = Program(tx=tx, schedule=schedule, graphdef=graphdef, abstract=abstract,
                 shardings=shardings,
                 init=make_init(family, config, tx, shardings, compiler_options),
                 train_step=jit_train_step(make_train_step(family, config, graphdef, tx, schedule),
                                           shardings, mesh, compiler_options))
  _PROGRAMS[key] = prog
  while len(_PROGRAMS) > _MAX_PROGRAMS:
    _PROGRAMS.popitem(last=False)
  return prog

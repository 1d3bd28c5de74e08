"""Optax chain from `config.optim`: schedule, global-norm clipping, AdamW + decay mask, lr groups;
the split of parameters into trainable and frozen ones.

Parameter paths are the nnx state paths joined with '/' (e.g. 'text/layers/0/attn/query/kernel');
`wd_exclude`, `lr_mult` and a family's `frozen_params` are regexes searched (`re.search`) in those
paths. Frozen parameters are split off before differentiation (vlx.steps), so the optimizer only
ever sees the trainable ones: no gradient, no update and no optimizer state for the frozen.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

SCHEDULES = ("linear", "cosine", "constant", "exponential")
OPTIMIZERS = ("adamw", "sgd")


def path_str(path: tuple) -> str:
  """'a/0/b' from a jax key path; the `.value` attribute of nnx Variables is dropped."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      if k.name != "value":
        parts.append(k.name)
    else:
      parts.append(str(k))
  return "/".join(parts)


def frozen_filter(patterns: Sequence[str]) -> Callable[[tuple, Any], bool]:
  """nnx filter (path, value) -> bool: True for a parameter whose 'a/b/c' path a regex matches."""
  regexes = [re.compile(p) for p in patterns]

  def frozen(path: tuple, _value: Any) -> bool:
    name = "/".join(str(k) for k in path)
    return any(r.search(name) for r in regexes)
  return frozen


def split_frozen(params: nnx.State, patterns: Sequence[str]) -> tuple[nnx.State, nnx.State]:
  """(trainable, frozen) parts of an nnx.State of parameters (or of their shapes / shardings);
  `nnx.merge_state(trainable, frozen)` gives back a state with the structure of `params`."""
  if not patterns:
    return params, nnx.State({})
  frozen, trainable = nnx.split_state(params, frozen_filter(patterns), ...)
  return trainable, frozen


def warmup_steps(schedule_cfg: ml_collections.ConfigDict, num_steps: int) -> int:
  """`warmup_steps`, or int(warmup_ratio * num_steps) when a ratio is set (ALPRO's convention)."""
  ratio = float(schedule_cfg.get("warmup_ratio", 0.0) or 0.0)
  if ratio > 0:
    return int(ratio * num_steps)
  return int(schedule_cfg.get("warmup_steps", 0))


def make_schedule(optim_cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to lr, then linear/cosine decay to end_value at num_steps."""
  sched = optim_cfg.schedule
  lr, end = float(optim_cfg.lr), float(sched.get("end_value", 0.0))
  warm = min(warmup_steps(sched, num_steps), num_steps)
  kind = sched.type
  if kind not in SCHEDULES:
    raise ValueError(f"config.optim.schedule.type={kind!r}: expected one of {SCHEDULES}")
  decay = max(num_steps - warm, 1)
  if kind == "constant":
    main = optax.constant_schedule(lr)
  elif kind == "linear":
    main = optax.linear_schedule(lr, end, decay)
  elif kind == "exponential":   # lr * decay_rate ** floor(step / transition_steps) (per epoch)
    main = optax.exponential_decay(lr, max(int(sched.get("transition_steps", 1)), 1),
                                   float(sched.get("decay_rate", 1.0)), staircase=True)
  else:
    main = optax.cosine_decay_schedule(lr, decay, alpha=end / lr if lr else 0.0)
  if warm == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def _mask_fn(patterns: tuple[str, ...]) -> Callable[[Any], Any]:
  """Weight-decay mask: True (decay) unless a `wd_exclude` regex matches the parameter path."""
  regexes = [re.compile(p) for p in patterns]

  def mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(r.search(path_str(path)) for r in regexes), params)
  return mask


def lr_multipliers(params: Any, lr_mult: dict[str, float]) -> Any:
  """Per-leaf multiplier: the first `lr_mult` regex that matches the path wins, else 1."""
  rules = [(re.compile(k), float(v)) for k, v in lr_mult.items()]

  def mult(path, _):
    name = path_str(path)
    for r, m in rules:
      if r.search(name):
        return m
    return 1.0
  return jax.tree_util.tree_map_with_path(mult, params)


def scale_by_lr_mult(lr_mult: dict[str, float]) -> optax.GradientTransformation:
  """Multiplies each update by its group's lr multiplier (a per-group learning rate)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    mults = lr_multipliers(updates, lr_mult)
    return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, mults), state
  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(tx, schedule) for `config.optim` over `config.train.num_steps` optimizer steps."""
  o = config.optim
  schedule = make_schedule(o, int(config.train.num_steps))
  parts = []
  if float(o.grad_clip) > 0:
    parts.append(optax.clip_by_global_norm(float(o.grad_clip)))
  if o.name == "adamw":
    parts.append(optax.adamw(schedule, b1=float(o.b1), b2=float(o.b2), eps=float(o.eps),
                             weight_decay=float(o.weight_decay),
                             mask=_mask_fn(tuple(o.wd_exclude))))
  elif o.name == "sgd":
    parts.append(optax.sgd(schedule, momentum=float(o.b1) or None))
  else:
    raise ValueError(f"config.optim.name={o.name!r}: expected one of {OPTIMIZERS}")
  lr_mult = dict(o.get("lr_mult", {}) or {})
  if lr_mult:
    parts.append(scale_by_lr_mult(lr_mult))
  return optax.chain(*parts), schedule

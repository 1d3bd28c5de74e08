"""`validate(config)`: reject impossible configs early, with a message that names the field."""
from __future__ import annotations

import math

import ml_collections

from vlx import evals, optim, registry
from vlx.cli import UserError
from vlx.data import mixture

DTYPES = ("float32", "bfloat16")


class ConfigError(UserError, ValueError):
  """A config value that cannot work; the message names the field."""


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first problem. `num_devices` defaults to jax.device_count()."""
  t = config.train
  for field in ("num_steps", "log_every", "eval_every", "ckpt_every", "keep"):
    _check(int(t[field]) >= 0, f"config.train.{field}={t[field]} must be >= 0")
  _check(int(t.grad_accum) >= 1, f"config.train.grad_accum={t.grad_accum} must be >= 1")

  family = config.model.family
  try:
    module = registry.get(family)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  for field in ("dtype", "param_dtype"):
    _check(config.model.get(field, "float32") in DTYPES,
           f"config.model.{field}={config.model.get(field)!r}: expected one of {DTYPES}")

  o = config.optim
  _check(o.name in optim.OPTIMIZERS,
         f"config.optim.name={o.name!r}: expected one of {optim.OPTIMIZERS}")
  _check(o.schedule.type in optim.SCHEDULES,
         f"config.optim.schedule.type={o.schedule.type!r}: expected one of {optim.SCHEDULES}")
  _check(float(o.lr) >= 0, f"config.optim.lr={o.lr} must be >= 0")
  _check(float(o.grad_clip) >= 0, f"config.optim.grad_clip={o.grad_clip} must be >= 0")
  _check(int(o.schedule.get("warmup_steps", 0)) >= 0,
         f"config.optim.schedule.warmup_steps={o.schedule.get('warmup_steps')} must be >= 0")
  ratio = float(o.schedule.get("warmup_ratio", 0.0) or 0.0)
  _check(0.0 <= ratio < 1.0, f"config.optim.schedule.warmup_ratio={ratio} must be in [0, 1)")

  _check(len(config.objectives) > 0, "config.objectives is empty: name at least one loss")
  known = tuple(module.objective_names)
  for name, w in config.objectives.items():
    _check(name in known,
           f"config.objectives.{name}: unknown objective for family {family!r}; known: {known}")
    _check(float(w) >= 0, f"config.objectives.{name}={w} must be >= 0")

  if module.validate_config is not None:  # optional family hook: family-specific fields
    try:
      module.validate_config(config)
    except ValueError as e:
      raise ConfigError(str(e)) from None

  gbs = int(config.data.global_batch_size)
  _check(gbs > 0, f"config.data.global_batch_size={gbs} must be > 0")
  dp = _data_parallel(config, num_devices)
  accum = int(t.grad_accum)
  _check(gbs % (dp * accum) == 0,
         f"config.data.global_batch_size={gbs} must be divisible by data-parallel devices ({dp}) x "
         f"config.train.grad_accum ({accum}) = {dp * accum}")

  _validate_train_data(config.data.train)
  masking = config.data.get("mlm_masking", "token") or "token"
  _check(masking in MLM_MASKINGS,
         f"config.data.mlm_masking={masking!r}: expected one of {MLM_MASKINGS}")

  for name, ev in config.evals.items():
    _check(ev.get("type") in evals.EVALUATORS,
           f"config.evals.{name}.type={ev.get('type')!r}: expected one of "
           f"{sorted(evals.EVALUATORS)}")
    _check(int(ev.get("batch_size", 1)) > 0, f"config.evals.{name}.batch_size must be > 0")
    _check(int(ev.get("every", 0)) >= 0, f"config.evals.{name}.every must be >= 0")
    try:  # protocol and retrieval mode (vlx.evals.check_block)
      evals.check_block(name, ev, module)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    views = int(ev.get("num_views", 1) or 1)
    _check(views >= 1, f"config.evals.{name}.num_views={views} must be >= 1")
    _check(ev.get("type") != "retrieval" or views == 1
           or ev.get("sampling") in ("rand", "segment_rand"),
           f"config.evals.{name}.num_views={views} averages random frame samplings, but "
           f"sampling={ev.get('sampling')!r} gives the same frames every view: use 'rand' or "
           "'segment_rand', or num_views=1")
    if ev.get("type") == "classification":
      average = ev.get("average", "logits") or "logits"
      _check(average in ("logits", "probs"),
             f"config.evals.{name}.average={average!r}: expected 'logits' or 'probs'")


def _validate_train_data(train: ml_collections.ConfigDict) -> None:
  """config.data.train.mixture syntax and the augment names (vlx.data.mixture, no TensorFlow)."""
  try:
    entries = mixture.parse(train)
    for field in ("augment", "image_augment"):
      mixture.check_augment(train.get(field, "") or "", f"config.data.train.{field}")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  task = train.get("task", "retrieval") or "retrieval"
  _check(len(entries) == 1 or task == "retrieval",
         f"config.data.train.mixture={tuple(train.mixture)!r} needs task 'retrieval' (got "
         f"{task!r}): a mixture's datasets must give batches of one structure")
  if train.get("inputs", None):  # modality readers (vlx.data.modalities; imported only if used)
    from vlx.data import modalities  # pylint: disable=import-outside-toplevel
    for prefix, entry in train.inputs.items():
      kind = entry.get("reader", "") if hasattr(entry, "get") else None
      _check(kind in modalities.READERS,
             f"config.data.train.inputs.{prefix}.reader={kind!r}: expected one of "
             f"{tuple(sorted(modalities.READERS))}")


MLM_MASKINGS = ("token", "whole_word")


def _data_parallel(config: ml_collections.ConfigDict, num_devices: int | None) -> int:
  """Size of the mesh axes the 'batch' rule names, resolving -1 with the device count."""
  if num_devices is None:
    import jax
    num_devices = jax.device_count()
  sizes = {str(a): int(s) for a, s in config.mesh.axes}
  known = math.prod(s for s in sizes.values() if s != -1)
  _check(known > 0 and num_devices % known == 0,
         f"config.mesh.axes={config.mesh.axes}: fixed sizes do not divide {num_devices} devices")
  sizes = {a: (num_devices // known if s == -1 else s) for a, s in sizes.items()}
  batch_axes = dict(config.mesh.rules).get("batch", ())
  if isinstance(batch_axes, str):
    batch_axes = (batch_axes,)
  return math.prod(sizes.get(a, 1) for a in (batch_axes or ()))

"""THE training loop (big_vision style: one readable function, config-driven, family-agnostic).

Sections: mesh -> model/state (created sharded) -> checkpoint restore / init -> input -> jitted step
-> loop (metrics, NaN guard, checkpoints, preemption, periodic eval) -> final eval.
Determinism: the step rng is fold_in(key(seed), step) and the input iterator restarts at the
restored step, so a resumed run reproduces the uninterrupted one.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import ml_collections
from absl import logging
from flax import nnx

from vlx import checkpoint as ckpt
from vlx import config_validation, evals, registry
from vlx import sharding as shd
from vlx import steps
from vlx.logging_utils import MetricsLog, Progress, log_parameter_table, read_metrics

MODES = ("train", "eval", "train_eval")


class NonFiniteError(FloatingPointError):
  """Loss or gradient norm became NaN/Inf; the message names the step and the metric."""


def _check_finite(step: int, host: dict[str, Any], last_ckpt: int | None) -> None:
  for name in ("loss", "grad_norm"):
    value = float(host[name])
    if not math.isfinite(value):
      raise NonFiniteError(
          f"train/{name} is {value} at step {step}; stopping. The last checkpoint "
          f"(step {last_ckpt}) is kept; lower config.optim.lr or set config.optim.grad_clip.")


def _eval_every(config: ml_collections.ConfigDict, name: str) -> int:
  """config.evals.<name>.every, else config.train.eval_every; 0 = only the final eval."""
  return int(config.evals[name].get("every", 0) or 0) or int(config.train.eval_every)


def run_evals(config: ml_collections.ConfigDict, family, graphdef: nnx.GraphDef,
              state: steps.TrainState, mesh: jax.sharding.Mesh, names: list[str],
              make_eval_batches: Callable | None = None) -> dict[str, float]:
  """Runs the named evals on the current weights; returns {'eval/<name>/<metric>': value}."""
  model = nnx.merge(graphdef, state["params"], state["other"])
  out: dict[str, float] = {}
  for name in names:
    ev = config.evals[name]
    t0 = time.time()
    kwargs = {} if make_eval_batches is None else {"make_eval_batches": make_eval_batches}
    metrics = evals.EVALUATORS[ev.type](model, family, ev, config, mesh, **kwargs)
    logging.info("eval %s (%.1fs): %s", name, time.time() - t0, metrics)
    out.update({f"eval/{name}/{k}": v for k, v in metrics.items()})
  return out


def prepare_fresh_state(family, config: ml_collections.ConfigDict, prog: steps.Program,
                        state: steps.TrainState) -> steps.TrainState:
  """The family's optional `prepare_fresh_state(model, config)` hook (e.g. ALPRO's prompt
  features), after a fresh init only: what it sets is model state, saved in checkpoints."""
  hook = family.prepare_fresh_state
  if hook is None:
    return state
  model = nnx.merge(prog.graphdef, state["params"], state["other"])
  hook(model, config)
  _, params, other = nnx.split(model, nnx.Param, ...)
  place = lambda x, s: jax.device_put(x, s)
  return dict(state, params=jax.tree.map(place, params, prog.shardings["params"]),
              other=jax.tree.map(place, other, prog.shardings["other"]))


def finished_message(workdir: str, step: int, num_steps: int) -> str:
  return (f"workdir {workdir} is finished: its latest checkpoint is step {step} and "
          f"config.train.num_steps={num_steps}; nothing to train. Re-evaluate it with --mode eval, "
          "or raise --config.train.num_steps to train on")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, mode: str = "train_eval",
                       make_train_iterator: Callable | None = None,
                       make_eval_batches: Callable | None = None,
                       compiler_options: dict | None = None) -> dict[str, float]:
  """Trains `config.train.num_steps` steps (resuming from workdir) and/or evaluates.

  `make_train_iterator` / `make_eval_batches` default to vlx.data.pipeline (tests inject fakes);
  `compiler_options` go to XLA for the init and train-step programs.
  Returns the last logged scalars (final eval metrics when evals ran). A workdir already trained
  to num_steps (mode train / train_eval) is left as it is: a warning, and the scalars logged at
  that step (metrics.jsonl) are returned."""
  if mode not in MODES:
    raise ValueError(f"--mode={mode!r}: expected one of {MODES}")
  try:  # mesh.strategy -> mesh.axes / mesh.rules (a copy; 'custom' keeps the config as is)
    config = shd.resolve_strategy(config)
  except ValueError as e:
    raise config_validation.ConfigError(str(e)) from None
  config_validation.validate(config)
  family = registry.get(config.model.family)
  rules = tuple(config.mesh.rules)

  # --- Mesh.
  mesh = shd.make_mesh(config.mesh)
  logging.info("mesh %s (strategy %s) on %d devices (%s), %d processes", dict(mesh.shape),
               config.mesh.get("strategy", "custom"), mesh.size, jax.devices()[0].platform,
               jax.process_count())

  # --- Model and state, created sharded.
  prog = steps.program(family, config, mesh, compiler_options)
  graphdef, abstract, shardings = prog.graphdef, prog.abstract, prog.shardings
  manager = ckpt.make_manager(workdir, ckpt_every=int(config.train.ckpt_every),
                              keep=int(config.train.keep))
  log = MetricsLog(workdir)
  sigterm = ckpt.SigtermFlag()
  last: dict[str, float] = {}
  try:
    with jax.set_mesh(mesh), shd.use_rules(rules):
      # --- Input (before building the model: a missing dataset fails fast).
      num_steps = int(config.train.num_steps)
      start = int(manager.latest_step() or 0)
      if mode != "eval" and 0 < num_steps <= start:  # nothing to train: no duplicate eval rows
        logging.warning(finished_message(workdir, start, num_steps))
        return read_metrics(workdir).get(start, {})
      if make_train_iterator is None or make_eval_batches is None:  # the datasets it will read
        from vlx.data import pipeline  # lazy: imports TF
        pipeline.check_datasets(config, train=make_train_iterator is None and mode != "eval",
                                evals=make_eval_batches is None and mode != "train")
      train_iter = None
      if mode != "eval" and start < num_steps:
        if make_train_iterator is None:
          from vlx.data.train_stream import make_train_iterator  # lazy: imports TF
        train_iter = make_train_iterator(config, mesh, start_step=start)

      # --- Restore the latest checkpoint, or initialise (+ config.init partial loads).
      restored = ckpt.restore(manager, steps.with_shardings(abstract, shardings))
      if restored is not None:
        state, restored_step = restored
        assert restored_step == start, (restored_step, start)
        logging.info("restored checkpoint at step %d from %s", start, ckpt.checkpoint_dir(workdir))
      else:
        state = prog.init()
        state = ckpt.init_from(state, config.init, training=mode != "eval", family=family)
        state = prepare_fresh_state(family, config, prog, state)
      log_parameter_table(state["params"], workdir)
      eval_names = list(config.evals.keys()) if mode != "train" else []

      if mode == "eval":
        last = run_evals(config, family, graphdef, state, mesh, eval_names, make_eval_batches)
        log.write(start, last)
        return last

      # --- Step.
      train_step = prog.train_step

      # --- Loop.
      report = Progress(num_steps, every=max(int(config.train.log_every), 1))
      log_every, ckpt_every = int(config.train.log_every), int(config.train.ckpt_every)
      pending: tuple[int, dict] | None = None
      t_last, step_last = time.time(), start

      def handle(step: int, metrics: dict) -> None:
        nonlocal t_last, step_last, last
        host = jax.device_get(metrics)
        _check_finite(step, host, manager.latest_step())
        if log_every and (step % log_every == 0 or step == num_steps):
          now = time.time()
          scalars = {f"train/{k}": v for k, v in host.items()}
          scalars["train/steps_per_sec"] = (step - step_last) / max(now - t_last, 1e-9)
          t_last, step_last = now, step
          log.write(step, scalars)
          last = scalars

      for step in range(start + 1, num_steps + 1):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = next(train_iter)
          state, metrics = train_step(state, batch)
        if pending is not None:
          handle(*pending)          # the previous step's metrics: keeps one step in flight
        pending = (step, metrics)
        report(step)
        preempted = sigterm.received or manager.reached_preemption(step)
        due_eval = [n for n in eval_names if step != num_steps
                    and _eval_every(config, n) and step % _eval_every(config, n) == 0]
        due_ckpt = preempted or step == num_steps or (ckpt_every > 0 and step % ckpt_every == 0)
        if due_ckpt or due_eval:
          handle(*pending)          # never save or evaluate weights that went non-finite
          pending = None
        if due_ckpt:
          ckpt.save(manager, step, state, force=True)
        if preempted:
          manager.wait_until_finished()
          logging.warning("preemption/SIGTERM: saved checkpoint at step %d; exiting", step)
          return last
        if due_eval:
          out = run_evals(config, family, graphdef, state, mesh, due_eval, make_eval_batches)
          log.write(step, out)
          last = {**last, **out}

      if pending is not None:
        handle(*pending)
      manager.wait_until_finished()

      # --- Final eval.
      if eval_names:
        out = run_evals(config, family, graphdef, state, mesh, eval_names, make_eval_batches)
        log.write(max(num_steps, start), out)
        last = {**last, **out}
      return last
  finally:
    manager.wait_until_finished()
    manager.close()
    log.flush()
    log.close()
    sigterm.restore()

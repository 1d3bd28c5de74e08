"""Entry point: `python -m vlx.main --config configs/<file>.py[:preset] --workdir W [--mode ...]`.

Overrides: `--config.train.num_steps=N` etc. (the config is locked: unknown keys are errors).
Multi-process: the same command on every host, plus `--coordinator_address HOST:PORT
--num_processes N --process_id I` (or SLURM / Cloud TPU auto-detection; see vlx/distributed.py).
Exit codes: 0 success (also after a SIGTERM checkpoint), 1 non-finite loss, 2 bad config or flags,
or data not built (message only, no traceback). A process whose peers never connect is aborted by
JAX (DEADLINE_EXCEEDED) after --distributed_timeout seconds instead of hanging.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vlx import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with get_config(arg), e.g. configs/alpro_pretrain.py:demo.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics.jsonl and TensorBoard logs.")
_MODE = flags.DEFINE_enum("mode", "train_eval", ["train", "eval", "train_eval"],
                          "train: no evals; eval: evaluate the latest checkpoint; train_eval: both")
# Multi-process (vlx/distributed.py): explicit flags, else SLURM / Cloud TPU auto-detection.
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None, "true: jax.distributed.initialize() with cluster auto-detection; "
    "false: one process even under SLURM / on a TPU VM; unset: auto-detect (env VLX_DISTRIBUTED)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0 (env VLX_COORDINATOR_ADDRESS)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "Number of processes (env VLX_NUM_PROCESSES)")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "This process, 0 .. num_processes-1 (env VLX_PROCESS_ID)")
_LOCAL_DEVICE_IDS = flags.DEFINE_list("local_device_ids", None,
                                      "Devices this process uses, e.g. 0,1 (multi-process only)")
_INIT_TIMEOUT = flags.DEFINE_integer("distributed_timeout", 300,
                                     "Seconds to wait for every process to join, then fail")
flags.mark_flags_as_required(["config", "workdir"])


_fail = cli.fail


def _quiet_orbax(record) -> bool:
  """Orbax logs every save phase at INFO; keep its warnings and errors only."""
  return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]} (overrides look like --config.train.num_steps=10)", 2)
  logging.get_absl_handler().addFilter(_quiet_orbax)
  from vlx import cli, distributed  # no JAX call before jax.distributed.initialize
  try:
    plan = distributed.resolve(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               _LOCAL_DEVICE_IDS.value, _DISTRIBUTED.value)
  except distributed.DistributedConfigError as e:
    _fail(str(e), 2)
  try:
    distributed.initialize(plan, timeout_s=_INIT_TIMEOUT.value)
  except distributed.DistributedStartError as e:
    _fail(str(e), 2)
  import jax
  if jax.process_index() > 0:  # one log for the job: the other processes report problems only
    logging.set_verbosity(logging.WARNING)
  # Imports after jax.distributed so every module sees the full process topology.
  from etils import epath
  from vlx import config_validation, train
  try:
    from vlx.data.pipeline import DatasetNotBuiltError
  except ImportError:  # the pipeline is optional for eval-only tooling
    DatasetNotBuiltError = type("DatasetNotBuiltError", (Exception,), {})  # noqa: N806
  logging.info("process %d/%d (%s), %d devices (%d local)", jax.process_index(),
               jax.process_count(), plan.source, jax.device_count(), jax.local_device_count())
  config = _CONFIG.value
  workdir = epath.Path(_WORKDIR.value)  # local path or gs://bucket/...
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  try:
    train.train_and_evaluate(config, _WORKDIR.value, mode=_MODE.value)
  except DatasetNotBuiltError as e:
    _fail(str(e), 2)
  except config_validation.ConfigError as e:
    _fail(f"invalid config: {e}", 2)
  except train.NonFiniteError as e:
    _fail(str(e), 1)


parse_flags = cli.parse_flags


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

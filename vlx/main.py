"""Entry point: `python -m vlx.main --config configs/<file>.py[:preset] --workdir W [--mode ...]`.

Overrides: `--config.train.num_steps=N` etc. (the config is locked: unknown keys are errors).
An eval block whose name starts with a dataset's name follows its builder when that is overridden:
`--config.evals.moving_shapes_test.builder=video_text` logs `eval/video_text_test/...` (names
without a dataset, e.g. `test`, stay as they are).
Multi-process: the same command on every host, plus `--coordinator_address HOST:PORT
--num_processes N --process_id I` (or SLURM / Cloud TPU auto-detection; see vlx/distributed.py).
Exit codes: 0 success (also after a SIGTERM checkpoint, for --help, and for a workdir already
trained to config.train.num_steps: re-evaluate it with --mode eval), 1 non-finite loss, 2 user
errors: bad flag, config field or value, file, workdir or dataset (one line
`python -m vlx.main: error: ...` naming it, no traceback; vlx/cli.py). A process whose peers
never connect is aborted by JAX (DEADLINE_EXCEEDED) after --distributed_timeout seconds instead of
hanging.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vlx import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file with get_config(arg): configs/<family>_<task>.py[:preset] (presets: "
    "'' = the paper's setting, demo, tiny; modifier own = your videos, e.g. :demo,own).",
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
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "Persistent compilation cache folder, or off (default: env "
    "VLX_COMPILATION_CACHE, else ~/.cache/vlx/jax_compilation_cache; vlx/compile_cache.py)")
flags.mark_flags_as_required(["config", "workdir"])


PROG = "python -m vlx.main"


def _quiet_orbax(record) -> bool:
  """Orbax logs every save phase at INFO; keep its warnings and errors only."""
  return record.levelno >= 30 or "/orbax/" not in record.pathname


def _make_workdir(workdir: str) -> None:
  """Creates the workdir (process 0) and writes config.json; a path that cannot be a folder is a
  user error naming --workdir."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  path = epath.Path(workdir)  # local path or gs://bucket/...
  try:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(_CONFIG.value.to_json_best_effort(indent=2))
  except (FileExistsError, NotADirectoryError, PermissionError, IsADirectoryError) as e:
    files = [p for p in [path, *path.parents] if p.exists() and not p.is_dir()]
    why = (f"{files[0]} is a file" if files else
           f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e))
    raise cli.PathError(f"--workdir={workdir}: cannot be used as a folder ({why})") from None


@cli.entry_point(PROG)
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]} (overrides look like "
                         "--config.train.num_steps=10)")
  logging.get_absl_handler().addFilter(_quiet_orbax)
  from vlx import distributed  # no JAX call before jax.distributed.initialize
  plan = distributed.resolve(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                             _LOCAL_DEVICE_IDS.value, _DISTRIBUTED.value)
  distributed.initialize(plan, timeout_s=_INIT_TIMEOUT.value)
  import jax
  if jax.process_index() > 0:  # one log for the job: the other processes report problems only
    logging.set_verbosity(logging.WARNING)
  from vlx import compile_cache
  compile_cache.enable(_COMPILATION_CACHE.value)  # every process: JAX writes from process 0 only
  # Imports after jax.distributed so every module sees the full process topology.
  from vlx import train
  logging.info("process %d/%d (%s), %d devices (%d local)", jax.process_index(),
               jax.process_count(), plan.source, jax.device_count(), jax.local_device_count())
  config = _CONFIG.value
  for old, new in cli.eval_names_follow_builders(config, cli.builder_names()).items():
    logging.info("config.evals.%s reads builder %r: its metrics are logged as eval/%s/...", old,
                 config.evals[new].builder, new)
  if jax.process_index() == 0:
    _make_workdir(_WORKDIR.value)
  try:
    train.train_and_evaluate(config, _WORKDIR.value, mode=_MODE.value)
  except train.NonFiniteError as e:
    cli.fail(str(e), 1, PROG)


parse_flags = cli.flags_parser(PROG)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)

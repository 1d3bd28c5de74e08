"""Multi-process start-up: decides whether and how to call `jax.distributed.initialize`.

Must run before any other JAX call (it fixes the process topology). Sources, first match wins:
  1. explicit: --coordinator_address HOST:PORT --num_processes N --process_id I (or the env vars
     VLX_COORDINATOR_ADDRESS / VLX_NUM_PROCESSES / VLX_PROCESS_ID; flags win over env);
  2. --distributed=false (or VLX_DISTRIBUTED=0): one process, whatever the environment says;
  3. --distributed=true: `jax.distributed.initialize()` with JAX's cluster auto-detection;
  4. auto: a SLURM step with more than one task (srun), or a Cloud TPU VM -> auto-detection;
  5. otherwise one process (no coordinator started).
Only `resolve` looks at the environment, so it is testable without starting anything.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re
from typing import Mapping, Sequence

from vlx.cli import UserError

ENV_PREFIX = "VLX_"
# The variables JAX's SLURM detection reads (srun sets the *STEP* ones).
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


class DistributedConfigError(UserError, ValueError):
  """Inconsistent multi-process flags; the message names the flag and what was expected."""


class DistributedStartError(UserError, RuntimeError):
  """jax.distributed could not start (peers missing, coordinator unreachable)."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `initialize` will do. mode: 'single' | 'explicit' | 'auto'; source: why (for the log)."""
  mode: str
  source: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None

  def kwargs(self) -> dict:
    """Arguments for jax.distributed.initialize (empty = auto-detect)."""
    out = {}
    if self.mode == "explicit":
      out = dict(coordinator_address=self.coordinator_address, num_processes=self.num_processes,
                 process_id=self.process_id)
    if self.local_device_ids is not None:
      out["local_device_ids"] = list(self.local_device_ids)
    return out


def _int(name: str, value, minimum: int) -> int:
  try:
    out = int(value)
  except (TypeError, ValueError):
    raise DistributedConfigError(f"--{name}={value!r}: expected an integer") from None
  if out < minimum:
    raise DistributedConfigError(f"--{name}={out}: expected >= {minimum}")
  return out


def _device_ids(value) -> tuple[int, ...] | None:
  if value is None or value == "" or value == []:
    return None
  items = value.split(",") if isinstance(value, str) else list(value)
  ids = tuple(_int("local_device_ids", v, 0) for v in items if str(v).strip() != "")
  if len(set(ids)) != len(ids):
    raise DistributedConfigError(f"--local_device_ids={value!r}: ids repeat")
  return ids or None


def on_cloud_tpu_vm() -> bool:
  """A Cloud TPU VM: libtpu installed and TPU chips visible (no network query)."""
  chips = glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
  return bool(chips) and importlib.util.find_spec("libtpu") is not None


def _slurm_multi_task(env: Mapping[str, str]) -> bool:
  if not all(v in env for v in SLURM_VARS):
    return False
  try:
    return int(env["SLURM_NTASKS"]) > 1
  except ValueError:
    return False


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, local_device_ids: str | Sequence[int] | None = None,
            distributed: bool | None = None, *, env: Mapping[str, str] | None = None,
            tpu_vm: bool | None = None) -> Plan:
  """The start-up plan from flags (None = not given), `env` (default os.environ) and the host."""
  env = os.environ if env is None else env
  pick = lambda flag, name: flag if flag not in (None, "") else env.get(ENV_PREFIX + name) or None
  address = pick(coordinator_address, "COORDINATOR_ADDRESS")
  count = pick(num_processes, "NUM_PROCESSES")
  index = pick(process_id, "PROCESS_ID")
  ids = _device_ids(pick(local_device_ids, "LOCAL_DEVICE_IDS"))
  if distributed is None and env.get(ENV_PREFIX + "DISTRIBUTED", "") != "":
    distributed = env[ENV_PREFIX + "DISTRIBUTED"].lower() in ("1", "true", "yes")

  given = {"coordinator_address": address, "num_processes": count, "process_id": index}
  if any(v is not None for v in given.values()):
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise DistributedConfigError(
          f"multi-process flags are incomplete: {', '.join('--' + k for k in missing)} missing "
          f"(given: {', '.join(f'--{k}={v}' for k, v in given.items() if v is not None)}); pass "
          "all three (or the VLX_* env vars), or none to auto-detect SLURM / Cloud TPU")
    if distributed is False:
      raise DistributedConfigError("--nodistributed contradicts --coordinator_address/"
                                   "--num_processes/--process_id")
    match = _ADDRESS.match(str(address))
    if not match or not 0 < int(match.group(2)) < 65536:
      raise DistributedConfigError(f"--coordinator_address={address!r}: expected HOST:PORT "
                                   "(process 0's address, e.g. 10.0.0.1:8476)")
    count = _int("num_processes", count, 1)
    index = _int("process_id", index, 0)
    if index >= count:
      raise DistributedConfigError(f"--process_id={index} must be < --num_processes={count} "
                                   "(ids are 0 .. num_processes-1)")
    return Plan("explicit", "flags", str(address), count, index, ids)
  if distributed:
    return Plan("auto", "--distributed", local_device_ids=ids)
  if distributed is None and _slurm_multi_task(env):
    return Plan("auto", f"SLURM ({env['SLURM_NTASKS']} tasks)", local_device_ids=ids)
  if distributed is None and (tpu_vm if tpu_vm is not None else on_cloud_tpu_vm()):
    return Plan("auto", "Cloud TPU VM", local_device_ids=ids)
  if ids is not None:
    raise DistributedConfigError(
        f"--local_device_ids={local_device_ids!r} only applies to multi-process runs; restrict a "
        "single process with CUDA_VISIBLE_DEVICES / TPU_VISIBLE_CHIPS instead")
  return Plan("single", "--nodistributed" if distributed is False else
              "no multi-process environment")


def initialize(plan: Plan, *, timeout_s: int = 300) -> None:
  """Starts jax.distributed per `plan` ('single': nothing to do).

  `timeout_s` bounds the wait for the other processes: a missing peer fails instead of hanging."""
  if plan.mode == "single":
    return
  import jax  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel
  # A peer that never connects makes JAX's client abort this process (DEADLINE_EXCEEDED) after
  # timeout_s: say beforehand what we waited for.
  logging.info("jax.distributed (%s): %s; waiting up to %ds for all processes to connect",
               plan.source, plan.kwargs() or "auto-detect", int(timeout_s))
  try:
    jax.distributed.initialize(**plan.kwargs(), initialization_timeout=int(timeout_s))
  except Exception as e:  # XlaRuntimeError / RuntimeError / ValueError from the cluster detection
    first = " ".join(str(e).split())[:400]
    raise DistributedStartError(
        f"jax.distributed.initialize({plan.kwargs() or 'auto-detect: ' + plan.source}) failed "
        f"within {timeout_s}s: {first} -- check that all processes were started with the same "
        "coordinator address and process count and that the port is reachable (launch/README.md, "
        "'Troubleshooting multi-host hangs')") from e

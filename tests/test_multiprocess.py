"""Multi-process training: 2 processes x 4 CPU devices == 1 process x 8 devices; a SIGTERM to one
process stops both at the same checkpointed step; that checkpoint restores in 1 process.

The 2-process job is the real CLI (`python -m vlx.main ... --coordinator_address ...`, gloo CPU
collectives) with FSDP; the 1-process reference runs in this process on the 8 test devices with
pure data parallelism, fed the same global batches: each host's share of the input, concatenated
in process order (what `jax.make_array_from_process_local_data` assembles across hosts).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import alpro_pretrain
from conftest import FAST_COMPILE
from vlx import distributed, train
from vlx import sharding as shd
from vlx.data import train_stream

NUM_STEPS = 1000  # the lr schedule's length; the runs stop earlier (SIGTERM)
TIMEOUT_S = 420  # a hung collective fails the test instead of blocking CI
LOSSES = ("train/loss", "train/vtc_loss", "train/vtm_loss", "train/mlm_loss", "train/grad_norm")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _rows(workdir) -> list[dict]:
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if l.strip()]


@pytest.fixture(scope="module")
def two_process_run(tiny_data_dir, repo_root, tmp_path_factory):
  """ALPRO tiny with FSDP over 2 processes x 4 devices, checkpoints every 2 steps; once step 3 is
  logged, process 1 alone gets SIGTERM (a preemption notice): both processes must agree on one
  step K, save it and exit 0. Returns (workdir, K, seconds)."""
  work = tmp_path_factory.mktemp("mp") / "w"
  port = _free_port()
  fast = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items())
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {fast}")
  procs = []
  t0 = time.time()
  for i in range(2):
    cmd = [sys.executable, "-m", "vlx.main", "--config", "configs/alpro_pretrain.py:tiny",
           "--workdir", str(work), "--mode", "train", f"--config.train.num_steps={NUM_STEPS}",
           "--config.train.ckpt_every=2", "--config.train.keep=0", "--config.mesh.strategy=fsdp",
           f"--config.data.data_dir={tiny_data_dir}", "--coordinator_address",
           f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i),
           "--distributed_timeout", "120"]
    procs.append(subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True))
  metrics = work / "metrics.jsonl"
  try:
    while time.time() - t0 < TIMEOUT_S and all(p.poll() is None for p in procs):
      if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
        procs[1].send_signal(signal.SIGTERM)
        break
      time.sleep(0.2)
    errs = [p.communicate(timeout=max(TIMEOUT_S - (time.time() - t0), 1))[1] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"2-process run did not finish in {TIMEOUT_S}s (hung collective?)")
  for i, (p, err) in enumerate(zip(procs, errs)):
    assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{err[-3000:]}"
  saved = sorted(int(d) for d in os.listdir(work / "checkpoints") if d.isdigit())
  assert saved[0] == 2 and saved[-1] >= 4, saved
  return work, saved[-1], time.time() - t0


def _two_host_batches(stop_at: int):
  """make_train_iterator for one process: the global batches of a 2-process job (each host's
  share of the input, host 0's rows first), ending in a SIGTERM to this process when the batch of
  step `stop_at` is taken: the loop saves step `stop_at` and returns, as the 2-process job did."""

  def make(config, mesh, *, start_step=0):
    host_data = train_stream._train_dataset  # pylint: disable=protected-access
    hosts = [host_data(config, process_index=i, process_count=2,
                       start_step=start_step).as_numpy_iterator() for i in range(2)]
    sharding = shd.batch_sharding(mesh, config.mesh.rules)
    for step, parts in enumerate(zip(*hosts), start_step + 1):
      if step == stop_at:
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop's SigtermFlag (1 process)
      yield {k: jax.device_put(np.concatenate([p[k] for p in parts]), sharding)
             for k in parts[0]}

  return make


def _one_process_config(data_dir):
  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = data_dir
  c.train.update(num_steps=NUM_STEPS, ckpt_every=2, keep=0)
  c.mesh.strategy = "dp"
  return c


@pytest.mark.slow
def test_two_processes_match_one_process_and_stop_together(two_process_run, tiny_data_dir,
                                                           tmp_path):
  work2, last, seconds = two_process_run
  rows2 = _rows(work2)
  assert [r["step"] for r in rows2] == list(range(1, last + 1))  # once each: process 0 writes
  assert len([f for f in os.listdir(work2) if f.startswith("events.out")]) == 1
  assert jax.device_count() == 8 and jax.process_count() == 1
  train.train_and_evaluate(_one_process_config(tiny_data_dir), str(tmp_path), mode="train",
                           make_train_iterator=_two_host_batches(last),
                           compiler_options=FAST_COMPILE)
  rows1 = _rows(tmp_path)
  assert [r["step"] for r in rows1] == list(range(1, last + 1))
  for a, b in zip(rows2, rows1):
    for key in LOSSES + ("train/lr",):
      np.testing.assert_allclose(a[key], b[key], rtol=2e-4, err_msg=f"step {a['step']} {key}")
  assert rows2[0]["train/loss"] != rows2[-1]["train/loss"]   # it trained
  worst = max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
              for a, b in zip(rows2, rows1) for k in LOSSES)
  print(f"2-process run: {seconds:.1f}s wall, stopped at step {last}; max rel. diff {worst:.1e}")


@pytest.mark.slow
def test_two_process_checkpoint_resumes_in_one_process(two_process_run, tiny_data_dir,
                                                       tmp_path):
  """Step 2 saved by 2 processes with FSDP restores onto 1 process with replicated params and
  continues with the same losses."""
  work2, last, _ = two_process_run
  work = tmp_path / "w"
  shutil.copytree(work2, work)
  for d in os.listdir(work / "checkpoints"):
    if d.isdigit() and int(d) > 2:
      shutil.rmtree(work / "checkpoints" / d)
  train.train_and_evaluate(_one_process_config(tiny_data_dir), str(work), mode="train",
                           make_train_iterator=_two_host_batches(last),
                           compiler_options=FAST_COMPILE)
  rows = _rows(work)
  first = {r["step"]: r for r in rows[:last]}
  resumed = {r["step"]: r for r in rows[last:]}
  assert sorted(resumed) == list(range(3, last + 1))
  for s in resumed:
    for key in LOSSES:
      np.testing.assert_allclose(resumed[s][key], first[s][key], rtol=2e-4, err_msg=f"{s} {key}")
  assert max(int(d) for d in os.listdir(work / "checkpoints") if d.isdigit()) == last


# ----------------------------------------------------------------------------- start-up plan


def test_resolve_explicit_flags_env_and_errors():
  plan = distributed.resolve("10.0.0.1:8476", 4, 3, "0,1", env={})
  assert (plan.mode, plan.num_processes, plan.process_id) == ("explicit", 4, 3)
  assert plan.kwargs() == dict(coordinator_address="10.0.0.1:8476", num_processes=4,
                               process_id=3, local_device_ids=[0, 1])
  env = {"VLX_COORDINATOR_ADDRESS": "host-0:1234", "VLX_NUM_PROCESSES": "2",
         "VLX_PROCESS_ID": "1"}
  assert distributed.resolve(env=env).kwargs()["coordinator_address"] == "host-0:1234"
  assert distributed.resolve(process_id=0, env=env).process_id == 0   # flags win over env
  bad = [(dict(coordinator_address="h:1", num_processes=2, process_id=2), "must be <"),
         (dict(coordinator_address="h:1", num_processes=2), "--process_id missing"),
         (dict(coordinator_address="h", num_processes=2, process_id=0), "HOST:PORT"),
         (dict(coordinator_address="h:1", num_processes=0, process_id=0), "expected >= 1"),
         (dict(coordinator_address="h:1", num_processes=2, process_id=0, distributed=False),
          "contradicts"),
         (dict(local_device_ids="0,1"), "only applies to multi-process")]
  for kwargs, message in bad:
    with pytest.raises(distributed.DistributedConfigError, match=message):
      distributed.resolve(**kwargs, env={}, tpu_vm=False)


def test_resolve_auto_detection():
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "16",
           "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}
  plan = distributed.resolve(env=slurm, tpu_vm=False)
  assert plan.mode == "auto" and plan.kwargs() == {} and "SLURM" in plan.source
  assert distributed.resolve(env=dict(slurm, SLURM_NTASKS="1"), tpu_vm=False).mode == "single"
  assert distributed.resolve(env=slurm, distributed=False).mode == "single"
  assert distributed.resolve(env={"VLX_DISTRIBUTED": "0"}, tpu_vm=True).mode == "single"
  assert distributed.resolve(env={}, tpu_vm=True).source == "Cloud TPU VM"
  assert distributed.resolve(env={}, distributed=True, tpu_vm=False).mode == "auto"
  assert distributed.resolve(env={}, tpu_vm=False).mode == "single"


def test_cli_rejects_inconsistent_flags(repo_root, tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "vlx.main", "--config", "configs/alpro_pretrain.py:tiny",
       "--workdir", str(tmp_path), "--coordinator_address", "127.0.0.1:1", "--num_processes",
       "2", "--process_id", "2"], cwd=repo_root, capture_output=True, text=True, timeout=120,
      check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "python -m vlx.main: error: --process_id=2 must be < --num_processes=2 (ids are 0 .. "
      "num_processes-1)")

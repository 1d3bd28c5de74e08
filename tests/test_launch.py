"""launch/: dry runs of the TPU pod and SLURM launchers print the commands they would run."""
import os
import shlex
import subprocess

import pytest

from vlx import distributed


def _run(repo_root, script, args, env=None):
  proc = subprocess.run(["bash", str(repo_root / "launch" / script), *args], cwd=repo_root,
                        env=dict(os.environ, **(env or {})), capture_output=True, text=True,
                        timeout=60, check=False)
  return proc.returncode, proc.stdout, proc.stderr


def _commands(stdout):
  """The printed commands ('+ ...' lines), each split into words as a shell would."""
  return [shlex.split(l[2:]) for l in stdout.splitlines() if l.startswith("+ ")]


def _flag(words, name):
  return words[words.index(name) + 1]


def test_tpu_pod_dry_run(repo_root):
  rc, out, err = _run(repo_root, "tpu_pod.sh", [
      "--dry-run", "--name", "vlx-a", "--zone", "us-east5-a", "--project", "proj",
      "--accelerator-type", "v5p-64", "--spot", "--config", "configs/alpro_pretrain.py",
      "--workdir", "gs://bkt/alpro", "--delete", "--", "--config.train.num_steps=100"])
  assert rc == 0, err
  cmds = _commands(out)
  gcloud = [c for c in cmds if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]]
  verbs = [c[4] for c in gcloud]
  assert verbs == ["describe", "create", "scp", "ssh", "ssh", "delete"], verbs
  create = gcloud[1]
  assert create[5] == "vlx-a" and _flag(create, "--accelerator-type") == "v5p-64"
  assert _flag(create, "--version") == "v2-alpha-tpuv5" and "--spot" in create
  assert all(_flag(c, "--zone") == "us-east5-a" and _flag(c, "--project") == "proj"
             for c in gcloud)
  scp, setup, train = gcloud[2], gcloud[3], gcloud[4]
  assert "--worker=all" in scp and "--worker=all" in setup and "--worker=all" in train
  assert "pip install" in _flag(setup, "--command")
  remote = shlex.split(_flag(train, "--command").split("&&", 1)[1].split("2>&1")[0])
  assert remote[1:3] == ["-m", "vlx.main"]
  assert _flag(remote, "--config") == "configs/alpro_pretrain.py"
  assert _flag(remote, "--workdir") == "gs://bkt/alpro"
  assert "--distributed" in remote and remote[-1] == "--config.train.num_steps=100"
  assert cmds[0][:3] == ["gcloud", "compute", "tpus"] and cmds[-1][-1] == "--quiet"


@pytest.mark.parametrize("args, message", [
    (["--workdir", "gs://b/r"], "--zone is required"),
    (["--zone", "z", "--workdir", "/local/dir"], "--workdir must be gs://"),
    (["--zone", "z", "--bogus"], "unknown option --bogus"),
])
def test_tpu_pod_rejects_bad_flags(repo_root, args, message):
  rc, _, err = _run(repo_root, "tpu_pod.sh", ["--dry-run", *args],
                    env={"CLOUDSDK_COMPUTE_ZONE": ""})
  assert rc == 2 and message in err


SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_NUM_NODES": "3",
         "SLURM_GPUS_ON_NODE": "4", "CONFIG": "configs/alpro_pretrain.py:demo",
         "WORKDIR": "/shared/runs/x"}


def test_slurm_dry_run_one_process_per_gpu(repo_root):
  rc, out, err = _run(repo_root, "gpu_slurm.sbatch", ["--dry-run", "--",
                                                      "--config.train.num_steps=7"], SLURM)
  assert rc == 0, err
  (srun,) = _commands(out)
  assert srun[0] == "srun" and "--ntasks=12" in srun and "--ntasks-per-node=4" in srun
  assert srun[-3:-1] == ["bash", "-c"]
  task = shlex.split(srun[-1])
  assert task[:4] == ["exec", "python", "-m", "vlx.main"]
  assert _flag(task, "--process_id") == "$SLURM_PROCID"       # expanded inside each task
  assert _flag(task, "--local_device_ids") == "$SLURM_LOCALID"
  assert _flag(task, "--workdir") == "/shared/runs/x" and task[-1] == "--config.train.num_steps=7"
  # Task 5's flags resolve to a consistent jax.distributed plan (coordinator on the first node).
  plan = distributed.resolve(_flag(task, "--coordinator_address"),
                             _flag(task, "--num_processes"), 5, "1", env={})
  assert plan.kwargs() == dict(coordinator_address="gpu07:24242", num_processes=12,
                               process_id=5, local_device_ids=[1])


def test_slurm_dry_run_one_process_per_node_and_errors(repo_root):
  rc, out, err = _run(repo_root, "gpu_slurm.sbatch", ["--dry-run"],
                      dict(SLURM, PER="node", SLURM_JOB_NODELIST="nodeA,nodeB",
                           SLURM_JOB_NUM_NODES="2"))
  assert rc == 0, err
  task = shlex.split(_commands(out)[0][-1])
  assert _flag(task, "--num_processes") == "2" and "--local_device_ids" not in task
  assert _flag(task, "--coordinator_address") == "nodeA:24242"
  env = {k: "" for k in SLURM if k.startswith("SLURM")}
  rc, _, err = _run(repo_root, "gpu_slurm.sbatch", ["--dry-run"], env)
  assert rc == 2 and "not inside a SLURM job" in err

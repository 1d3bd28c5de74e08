"""The loop end to end: resume == uninterrupted, metrics.jsonl, NaN guard, SIGTERM, 1 vs 8 devs."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import fake_family
from configs import alpro_pretrain
from vlx import registry, train
from vlx.logging_utils import read_metrics


from conftest import FAST_COMPILE  # unoptimised XLA CPU codegen: same computation, faster compile


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir):
  return tiny_data_dir


def _tiny(data_dir, **train_overrides):
  c = alpro_pretrain.get_config("tiny")
  c.data.data_dir = data_dir
  c.train.update(train_overrides)
  return c


def _jsonl(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def eight_device_run(data_dir, tmp_path_factory):
  """The tiny config trained 4 steps (checkpoints at 2 and 4) + final eval on the 8 CPU devices."""
  work = str(tmp_path_factory.mktemp("run8") / "w")
  c = _tiny(data_dir, num_steps=4, ckpt_every=2, log_every=1, keep=3)
  assert jax.device_count() == 8
  train.train_and_evaluate(c, work, compiler_options=FAST_COMPILE)
  first = {r["step"]: r for r in _jsonl(work) if "train/loss" in r}
  return c, work, first


@pytest.mark.slow
def test_resume_equals_uninterrupted_run_and_metrics(eight_device_run):
  c, work, first = eight_device_run
  assert sorted(first) == [1, 2, 3, 4]
  for key in ("train/loss", "train/vtc_loss", "train/vtm_loss", "train/mlm_loss", "train/lr",
              "train/grad_norm", "train/steps_per_sec"):
    assert all(np.isfinite(first[s][key]) for s in first), key
  evals = read_metrics(work)[4]
  assert evals["eval/moving_shapes_test/num_videos"] == 16
  for k in ("r1", "r5", "r10", "medr", "meanr"):
    assert 0 <= evals[f"eval/moving_shapes_test/{k}"] <= 100
  assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == ["2", "4"]

  # Interrupt after step 2: drop the last checkpoint and re-run the same command.
  shutil.rmtree(os.path.join(work, "checkpoints", "4"))
  train.train_and_evaluate(c, work, mode="train", compiler_options=FAST_COMPILE)
  rows = [r for r in _jsonl(work) if "train/loss" in r]
  resumed = {r["step"]: r for r in rows[len(first):]}
  assert sorted(resumed) == [3, 4]
  for s in (3, 4):
    assert abs(resumed[s]["train/loss"] - first[s]["train/loss"]) <= 1e-6
    assert resumed[s]["train/lr"] == first[s]["train/lr"]
  assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == ["2", "4"]


def _fake_registry(monkeypatch):
  orig = registry.get
  monkeypatch.setattr(registry, "get", lambda f: fake_family.FAMILY if f == "fake" else orig(f))


def test_nan_loss_stops_with_step_and_metric(monkeypatch, tmp_path):
  _fake_registry(monkeypatch)
  c = fake_family.toy_config()
  c.train.update(num_steps=8, ckpt_every=2)
  c.evals = {}

  def poisoned(config, mesh, *, start_step=0):
    for i, batch in enumerate(fake_family.make_train_iterator(config, mesh,
                                                              start_step=start_step)):
      step = start_step + i + 1
      if step == 5:
        batch = dict(batch, video=batch["video"] * np.nan)
      yield batch

  with pytest.raises(train.NonFiniteError, match=r"train/loss is nan at step 5"):
    train.train_and_evaluate(c, str(tmp_path), make_train_iterator=poisoned)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


@pytest.mark.slow
def test_sigterm_saves_current_step_and_exits_zero(data_dir, eight_device_run, tmp_path,
                                                   repo_root):
  """One device in a subprocess; SIGTERM -> checkpoint at the current step, exit 0. Its first
  three losses must equal the 8-device run's (same lr for steps 1-3: warm-up 1 step, then the
  decay has not started to differ)."""
  work = tmp_path / "w"
  cmd = [sys.executable, "-m", "vlx.main", "--config", "configs/alpro_pretrain.py:tiny",
         "--workdir", str(work), "--mode", "train", "--config.train.num_steps=100000",
         "--config.train.log_every=1", "--config.train.ckpt_every=0",
         f"--config.data.data_dir={data_dir}"]
  fast = " ".join(f"--{k}={str(v).lower()}" for k, v in FAST_COMPILE.items())
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=1 {fast}")
  proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  metrics = work / "metrics.jsonl"
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.5)
  assert proc.poll() is None, proc.stderr.read()[-3000:]
  proc.send_signal(signal.SIGTERM)
  t0 = time.time()
  rc = proc.wait(timeout=60)
  err = proc.stderr.read()
  assert rc == 0, err[-3000:]
  assert time.time() - t0 < 60
  saved = [int(p) for p in os.listdir(work / "checkpoints") if p.isdigit()]
  logged = {r["step"]: r for r in _jsonl(work)}
  assert len(saved) == 1 and saved[0] >= max(logged) >= 3
  _, _, eight = eight_device_run
  for s in (1, 2, 3):
    np.testing.assert_allclose(logged[s]["train/loss"], eight[s]["train/loss"], rtol=1e-4)


def test_continue_with_more_steps_and_eval_mode(monkeypatch, tmp_path):
  _fake_registry(monkeypatch)
  kw = dict(make_train_iterator=fake_family.make_train_iterator,
            make_eval_batches=fake_family.make_eval_batches)
  c = fake_family.toy_config()
  c.train.update(num_steps=4, ckpt_every=2, log_every=2, eval_every=2)
  out = train.train_and_evaluate(c, str(tmp_path), **kw)
  m = read_metrics(tmp_path)
  assert sorted(m) == [2, 4]                       # log_every=2; periodic eval at 2, final at 4
  assert m[2]["eval/toy_test/num_videos"] == 20 and "eval/toy_test/r1" in m[4]
  assert out["eval/toy_test/r1"] == m[4]["eval/toy_test/r1"]
  c.train.num_steps = 6                            # same workdir, more steps: continues from 4
  train.train_and_evaluate(c, str(tmp_path), mode="train", **kw)
  rows = _jsonl(tmp_path)
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4, 6]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]
  ev = train.train_and_evaluate(c, str(tmp_path), mode="eval", **kw)
  assert _jsonl(tmp_path)[-1]["step"] == 6 and ev["eval/toy_test/num_videos"] == 20
  # Parameter table: video_in 3*8+8, video_mlp 8*32+32, video_out 32*8+8, word 32*8,
  # text_out 8*8+8, norm 8+8, temp 1 = 929 in 12 arrays.
  table = (tmp_path / "parameters.txt").read_text()
  assert any(l.split()[:2] == ["video_mlp/kernel", "|"] and "(8, 32)" in l
             for l in table.splitlines())
  assert table.strip().endswith("Total: 929 parameters in 12 arrays")

"""Every eval type on 2 processes x 4 CPU devices == on 1 process x 8 devices == computed directly.

Eval-set and batch sizes do not divide over the 8 batch shards (nor over a host's 4), so each
host's batches are padded (vlx.evals.common.place). The 2-process job runs this file as a script
(one launch per process, all eval types in it) with jax.distributed on localhost and FSDP
parameters; the 1-process run is this pytest process's 8 devices with replicated parameters.
"""
import json
import os
import socket
import subprocess
import sys
import time
import types

import jax
import ml_collections
import numpy as np
from flax import nnx

if __name__ == "__main__":  # the worker: repository root and tests/ importable
  sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)),
                  os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import fake_family  # noqa: E402
from vlx import evals  # noqa: E402
from vlx import sharding as shd  # noqa: E402
from vlx.evals import common, retrieval  # noqa: E402

TIMEOUT_S = 300
QTYPES = ("a", "b", "c", "d", "e")


def eval_blocks() -> dict[str, ml_collections.ConfigDict]:
  """One block per eval type and protocol; no size divides over 8 shards or a host's 4."""
  base = dict(builder="toy", split="test", every=0)
  blocks = dict(
      ret=dict(type="retrieval", mode="vtc", protocol="rounded_stable", num_examples=11,
               rows_per_example=2, batch_size=5),                    # 2 captions per clip
      ret_ties=dict(type="retrieval", mode="vtc", protocol="tie_aware", num_examples=11,
                    rows_per_example=2, batch_size=5),
      ret_avg=dict(type="retrieval", mode="vtc", protocol="averaged_ties", complete_size=0,
                   num_examples=11, rows_per_example=2, batch_size=5),
      qa=dict(type="qa", protocol="oov_wrong", qtypes=QTYPES, num_examples=19, batch_size=3),
      qa_excl=dict(type="qa", protocol="oov_excluded", qtypes=QTYPES, num_examples=19,
                   batch_size=3),
      mc=dict(type="multiple_choice", num_examples=13, batch_size=3),
      cls=dict(type="classification", num_examples=7, rows_per_example=2, batch_size=3))
  return {k: ml_collections.ConfigDict(dict(base, **v)) for k, v in blocks.items()}


def run_all(model, config, mesh) -> dict[str, dict]:
  """Every block of eval_blocks through vlx.evals.EVALUATORS (timings left out)."""
  out = {}
  for name, ev in eval_blocks().items():
    m = evals.EVALUATORS[ev.type](model, fake_family.FAMILY, ev, config, mesh,
                                  make_eval_batches=fake_family.host_eval_batches)
    out[name] = {k: v for k, v in m.items() if not k.endswith("seconds")}
  return out


def direct_metrics(model, config) -> dict[str, dict]:
  """The same metrics from the family functions on all rows at once (no mesh, no padding)."""
  graphdef, state = nnx.split(model)
  out = {}
  def jitted(fn):
    run = jax.jit(lambda s, b: fn(nnx.merge(graphdef, s), b))
    return lambda rows: jax.tree.map(np.asarray, run(state, {
        k: v for k, v in rows.items() if k in ("video", "text_ids", "text_mask", "choice_ids",
                                               "choice_mask")}))
  f = types.SimpleNamespace(**{n: jitted(getattr(fake_family, n)) for n in (
      "encode_texts", "encode_videos", "qa_logits", "mc_scores", "class_logits")},
                            eval_rows=fake_family.eval_rows)
  for name, ev in eval_blocks().items():
    per = int(ev.get("rows_per_example", 1))
    ex = np.repeat(np.arange(ev.num_examples), per)
    rows = f.eval_rows(ev.type, ex, np.tile(np.arange(per), ev.num_examples), config)
    if ev.type == "retrieval":
      t = f.encode_texts(rows)["feat"]
      v = f.encode_videos({"video": rows["video"][::per]})["feat"]
      m = retrieval.METRIC_PROTOCOLS[ev.protocol](t @ v.T, ex)
      m.update(num_videos=ev.num_examples, num_texts=len(ex))
    elif ev.type == "qa":
      pred = np.argmax(f.qa_logits(rows), -1)
      m = evals.qa_metrics(pred, rows["label"], rows["qtype"], type_names=QTYPES,
                           exclude_oov=ev.protocol == "oov_excluded")
      m["num_oov"] = int(np.sum(rows["label"] < 0))
    elif ev.type == "multiple_choice":
      m = evals.mc_metrics(np.argmax(f.mc_scores(rows), -1), rows["label"])
      m["num_choices"] = rows["choice_ids"].shape[1]
    else:
      m = evals.classification_metrics(f.class_logits(rows), rows["label"],
                                       rows["example_index"])
    out[name] = m
  return out


def _model_on_mesh(config, mesh):
  """The toy model (same init on every process) with its state placed per config.mesh.rules."""
  model = fake_family.build(config.model, rngs=nnx.Rngs(params=0))
  graphdef, state = nnx.split(model)
  shardings = shd.state_shardings(state, mesh, tuple(config.mesh.rules))
  placed = jax.tree.map(lambda x, s: jax.make_array_from_callback(
      x.shape, s, lambda i, x=x: np.asarray(x)[i]), state, shardings)
  return nnx.merge(graphdef, placed)


def _worker(process_id: int, port: int, out_path: str) -> None:
  jax.distributed.initialize(f"127.0.0.1:{port}", 2, process_id, initialization_timeout=120)
  assert jax.device_count() == 8 and jax.local_device_count() == 4
  config = fake_family.toy_config()
  config.mesh.strategy = "fsdp"
  config = shd.resolve_strategy(config)
  mesh = shd.make_mesh(config.mesh)
  assert common.host_shards(mesh, config.mesh.rules) == 4
  metrics = run_all(_model_on_mesh(config, mesh), config, mesh)
  # gather: every host's rows (the same count on each), in process order, on every host
  rows = common.gather(np.full(2, process_id, np.int32))
  assert rows.tolist() == [0, 0, 1, 1], rows
  if process_id == 0:
    with open(out_path, "w") as f:
      json.dump(metrics, f)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_every_eval_type_two_processes_equal_one_process(repo_root, tmp_path, fast_compile):
  out = tmp_path / "metrics.json"
  port = _free_port()
  flags = " ".join(f"--{k}={str(v).lower()}" for k, v in fast_compile.items())
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {flags}",
             JAX_PLATFORMS="cpu")
  t0 = time.time()
  procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), str(out)],
                            cwd=repo_root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    errs = [p.communicate(timeout=TIMEOUT_S)[1] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    raise AssertionError(f"2-process evals did not finish in {TIMEOUT_S}s (hung collective?)")
  for i, (p, err) in enumerate(zip(procs, errs)):
    assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{err[-3000:]}"
  two = json.loads(out.read_text())
  seconds = time.time() - t0

  config = fake_family.toy_config()
  mesh = shd.make_mesh(config.mesh)
  assert jax.process_count() == 1 and common.host_shards(mesh, config.mesh.rules) == 8
  model = _model_on_mesh(config, mesh)
  one = run_all(model, config, mesh)
  want = direct_metrics(fake_family.build(config.model, rngs=nnx.Rngs(params=0)), config)
  assert set(one) == set(two) == set(want)
  for name in want:
    assert one[name] == two[name], (name, one[name], two[name])
    assert set(one[name]) == set(want[name]), name
    for k, v in want[name].items():
      assert np.isclose(one[name][k], v, rtol=1e-9, atol=1e-9), (name, k, one[name][k], v)
  # the checks can fail: the blocks measure something, and the protocols differ on this data
  assert 0 < one["qa"]["acc"] < one["qa_excl"]["acc"] < 100
  assert 0 < one["mc"]["acc"] < 100 and 0 < one["cls"]["top5"] <= 100
  assert one["ret"]["num_texts"] == 22 and one["ret"]["num_videos"] == 11
  print(f"2-process evals: {seconds:.1f}s wall (both launches, all eval types)")


if __name__ == "__main__":
  _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])

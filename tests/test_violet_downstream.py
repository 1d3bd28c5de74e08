"""VIOLET downstream (spec §6): objectives and scorers against the reference fixture (retrieval
training loss and scores, eval probabilities, QA-MC / QA-OE logits), rerank with k = all videos
equals exact vtm, the pairing groups of 'ret', configs for every preset, and tiny fine-tuning
runs (retrieval, open-ended QA, multiple choice) through the training loop with their evals."""
from __future__ import annotations

import importlib
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from vlx import config_validation
from vlx.convert import load_state_dict
from vlx.evals import retrieval
from vlx.models import violet
from vlx.models.violet import downstream, load_fixture as lf, tasks

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
CONFIGS = ("violet_msrvtt_ret", "violet_didemo_ret", "violet_lsmdc_ret", "violet_msrvtt_qa",
           "violet_msvd_qa", "violet_tgif_frame", "violet_lsmdc_fib", "violet_tgif_action",
           "violet_tgif_transition", "violet_msrvtt_mc", "violet_lsmdc_mc")


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_validate_for_every_preset(name):
  module = importlib.import_module(f"configs.{name}")
  for preset in ("", "demo", "tiny"):
    config_validation.validate(module.get_config(preset), num_devices=8)
  c = module.get_config("")
  assert c.init.from_converted and c.optim.lr == 1.2e-5 and c.optim.weight_decay == 1e-3
  assert c.data.train.num_frames == 5 and c.data.train.resolution == 224
  assert c.data.train.max_text_len == 25 and tuple(c.optim.wd_exclude) == ()
  task = next(iter(c.objectives))
  per_gpu = {"ret": 6, "qa": 10, "mc": 8}[task]
  assert c.data.global_batch_size == per_gpu * 4
  if task == "qa":
    assert c.model.num_answers == c.data.answer_top_k in (1000, 1500, 1540, 908)
    assert tuple(c.init.keep_init) == ("^fc/fc2/",)
  if task == "ret":
    assert c.model.ret_group == 6


@pytest.fixture(scope="module")
def fixture(reference_dir):
  d = reference_dir / "violet" / "tiny"
  cfg = json.loads((d / "config.json").read_text())
  with np.load(d / "inputs.npz") as z:
    x = {k: z[k] for k in z.files}
  with np.load(d / "outputs.npz") as z:
    ref = {k: z[k] for k in z.files}
  return d, cfg, x, ref


def _model(fixture, task: str):
  d, cfg, _, _ = fixture
  return lf.convert_fixture(cfg, task, load_state_dict(d / lf._TASK_FILES[task])).model


def _jit(model, fn):
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st), *a), compiler_options=FAST_COMPILE)
  return lambda *a: run(state, *a)


def test_ret_objective_and_vtm_eval_match_the_fixture(fixture):
  """'ret' = CE over the fixture's [B,B] scores (row = video, / 0.05); the eval's exact 'vtm'
  (encode once, every pair through the cross-modal head, sigmoid) = ret_eval_prob; 'rerank' with
  k = every video ranks as 'vtm'; groups of 1 row leave nothing to contrast (loss 0)."""
  _, _, x, ref = fixture
  model = _model(fixture, "retrieval")
  n = x["ret_txt"].shape[0]
  batch = dict(video=lf.normalize(x["video_ds"][:n]),
               text_ids=jnp.asarray(x["ret_txt"], jnp.int32),
               text_mask=jnp.asarray(x["ret_mask"], jnp.int32))

  def everything(m, b):
    loss, metrics = downstream.ret(m, b, rng=jax.random.key(0), train=False)
    return (loss, metrics, downstream.ret_scores(m, b), tasks.encode_videos(m, b),
            tasks.encode_texts(m, b))

  with jax.default_matmul_precision("highest"):
    loss, metrics, scores, videos, texts = _jit(model, everything)(batch)
    np.testing.assert_allclose(scores[0], ref["ret_scores"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(loss, ref["ret_loss"], rtol=1e-4, atol=1e-4)
    assert float(metrics["ret_acc"]) == pytest.approx(np.mean(np.argmax(ref["ret_scores"], 1)
                                                              == np.arange(n)))
    videos, texts = jax.device_get((videos, texts))
    ev = lambda **kw: ml_collections.ConfigDict(dict(video_chunk=2, text_chunk=2, pair_chunk=2,
                                                     **kw))
    vtm = retrieval.score_matrix(violet.FAMILY, model, texts, videos, ev(mode="vtm"))
    rerank = retrieval.score_matrix(violet.FAMILY, model, texts, videos,
                                    ev(mode="rerank", first_stage="vtc", k=n))
    vtc = retrieval.score_matrix(violet.FAMILY, model, texts, videos, ev(mode="vtc"))
  np.testing.assert_allclose(vtm, ref["ret_eval_prob"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(rerank, vtm, atol=1e-5)
  assert vtc.shape == (n, n) and np.all(np.abs(vtc) <= 1 + 1e-5)
  ranks = 1 + np.argmax(np.argsort(-vtm, 1, kind="stable") == np.arange(n)[:, None], 1)
  np.testing.assert_array_equal(ranks, ref["ret_eval_rank_of_gt"])
  m = retrieval.METRIC_PROTOCOLS["stable"](vtm, np.arange(n))
  assert m["r1"] == pytest.approx(100 * float(ref["ret_eval_r1"]))
  assert m["r5"] == pytest.approx(100 * float(ref["ret_eval_r5"]))


def test_ret_groups_pair_rows_within_each_group(fixture):
  """ret_group = g: the batch is cut into groups of g rows (the reference's per-GPU batch) and
  only pairs inside a group are scored; g = the batch size is the plain B x B objective."""
  _, _, x, _ = fixture
  model = _model(fixture, "qamc")   # same head shape as retrieval (k = 1)
  video = lf.normalize(np.concatenate([x["video_ds"], x["video_ds"][:1]]))   # 4 rows
  ids = np.concatenate([x["ret_txt"], x["ret_txt"][:1]]).astype(np.int32)
  mask = np.concatenate([x["ret_mask"], x["ret_mask"][:1]]).astype(np.int32)
  batch = dict(video=video, text_ids=jnp.asarray(ids), text_mask=jnp.asarray(mask))

  def scores(group):
    model.ret_group = group          # a static attribute: one program per value
    return np.asarray(_jit(model, downstream.ret_scores)(batch))

  full, halves = scores(0), scores(2)
  assert full.shape == (1, 4, 4) and halves.shape == (2, 2, 2)
  np.testing.assert_allclose(halves[0], full[0, :2, :2], rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(halves[1], full[0, 2:, 2:], rtol=1e-5, atol=1e-4)
  model.ret_group = 3
  with pytest.raises(ValueError, match="ret_group=3"):
    jax.eval_shape(lambda b: downstream.ret_scores(model, b), batch)


def test_mc_and_qa_scorers_match_the_fixture(fixture):
  _, _, x, ref = fixture
  for task, scorer, objective, key in (("qamc", tasks.mc_scores, downstream.mc, "choice"),
                                       ("qaoe", tasks.qa_logits, downstream.qa, "text")):
    model = _model(fixture, task)
    b = x[f"{task}_txt"].shape[0]
    batch = {"video": lf.normalize(x["video_ds"][:b]),
             f"{key}_ids": jnp.asarray(x[f"{task}_txt"], jnp.int32),
             f"{key}_mask": jnp.asarray(x[f"{task}_mask"], jnp.int32),
             "label": jnp.asarray(x[f"{task}_ans"], jnp.int32)}
    with jax.default_matmul_precision("highest"):
      logits, (loss, metrics) = _jit(model, lambda m, bt: (
          scorer(m, bt), objective(m, bt, rng=jax.random.key(0), train=False)))(batch)
    np.testing.assert_allclose(logits, ref[f"{task}_logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(loss, ref[f"{task}_loss"], rtol=1e-4, atol=1e-4)
    acc = np.mean(ref[f"{task}_pred"] == x[f"{task}_ans"])
    assert float(next(iter(metrics.values()))) == pytest.approx(acc)


# Retrieval fine-tuning + eval of violet_msrvtt_ret:tiny runs in tests/test_own_videos.py (every
# family's retrieval config on the own-videos data); QA and multiple choice run here.
@pytest.mark.parametrize("name,eval_key", [("violet_msrvtt_qa", "acc"),
                                           ("violet_tgif_action", "acc")])
def test_tiny_finetuning_trains_and_evaluates(name, eval_key, tiny_data_dir, tmp_path):
  from vlx import train
  c = importlib.import_module(f"configs.{name}").get_config("tiny")
  c.data.data_dir = tiny_data_dir
  out = train.train_and_evaluate(c, str(tmp_path), compiler_options=FAST_COMPILE)
  loss = next(iter(c.objectives))
  assert np.isfinite(out[f"train/{loss}_loss"]) if f"train/{loss}_loss" in out else True
  value = out[f"eval/test/{eval_key}"]
  assert 0.0 <= value <= 100.0
  if eval_key == "r1":
    assert out["eval/test/num_videos"] == 16
  else:
    assert out["eval/test/num_questions"] == (64 if "qa" in name else 16)
  lines = [json.loads(s) for s in (pathlib.Path(tmp_path) / "metrics.jsonl").read_text()
           .splitlines()]
  assert any(f"train/{loss}_loss" in r for r in lines)

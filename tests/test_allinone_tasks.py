"""All-in-one task configs end to end: one training step + the task's eval through
vlx.train.train_and_evaluate on moving_shapes/tiny (tiny presets), and a few optimisation steps
that lower the loss. Every task type: pre-training (VTM retrieval eval), open-ended QA, multiple
choice (rank_output and mc_vqa), classification; retrieval fine-tuning (VTC + re-rank) runs on the
own-videos data in tests/test_own_videos.py."""
import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from conftest import FAST_COMPILE
from vlx import config_validation, steps, train
from vlx.logging_utils import read_metrics
from vlx.models import allinone
from vlx.models.allinone import objectives as obj

pytestmark = pytest.mark.slow

# (config module, preset argument, the eval metric that must exist, its valid range)
RUNS = {
    "pretrain": ("allinone_pretrain", "tiny", "test/r1", (0, 100)),
    # retrieval fine-tuning (VTC + re-rank evals): allinone_msrvtt_ret:tiny,own trains and
    # evaluates in tests/test_own_videos.py::test_own_modifier_trains_and_evaluates_every_family
    # with the same checks (losses finite, metrics in range, the eval json = the returned metrics)
    "qa": ("allinone_msrvtt_qa", "tiny", "test/acc", (0, 100)),
    "multiple_choice": ("allinone_lsmdc_mc", "tiny", "test/acc", (0, 100)),
    "mc_vqa": ("allinone_tgif_qa", "action,tiny", "test/acc", (0, 100)),
    "classification": ("allinone_hmdb51", "tiny", "test/top1", (0, 100)),
}
ALL_CONFIGS = ("allinone_pretrain", "allinone_msrvtt_ret", "allinone_didemo_ret",
               "allinone_msrvtt_qa", "allinone_msvd_qa", "allinone_tgif_qa", "allinone_msrvtt_mc",
               "allinone_lsmdc_mc", "allinone_k400", "allinone_hmdb51")


@pytest.mark.parametrize("module", ALL_CONFIGS)
def test_every_preset_validates(module):
  mod = importlib.import_module(f"configs.{module}")
  args = ("", "demo", "tiny")
  if module == "allinone_tgif_qa":
    args += ("action", "transition,demo", "frameqa,tiny")
  for arg in args:
    c = mod.get_config(arg)
    config_validation.validate(c, num_devices=8)
    assert c.model.family == "allinone"
    assert c.evals or (module, arg) == ("allinone_pretrain", ""), (module, arg)


def test_paper_presets_follow_the_spec():
  from configs import allinone_hmdb51, allinone_k400, allinone_msrvtt_qa, allinone_msrvtt_ret
  from configs import allinone_pretrain, allinone_tgif_qa
  p = allinone_pretrain.get_config("")
  assert dict(p.objectives) == dict(mlm=1.0, itm=1.0, wpa=1.0)
  assert (p.optim.lr, p.optim.b2, p.optim.eps, p.optim.weight_decay) == (1e-4, 0.98, 1e-8, 0.01)
  assert (p.train.num_steps, p.optim.schedule.warmup_steps, p.data.global_batch_size) == (
      25_000, 2_500, 4096)
  assert (p.model.hidden_size, p.model.num_frames, p.data.train.crop) == (768, 3, 224)
  r = allinone_msrvtt_ret.get_config("")
  assert dict(r.objectives) == dict(ind_itc=1.0, irtr=1.0) and r.model.heads.itc
  assert (r.optim.lr, r.data.global_batch_size, r.model.irtr_false_texts) == (3e-4, 1024, 15)
  assert r.evals.test.mode == "vtc" and r.evals.test.split == "test_1ka"
  # Eval protocol (spec §5): VTC similarity averaged over 3 random samplings, reference tie rules.
  assert (r.evals.test.num_views, r.evals.test.sampling, r.evals.test.protocol) == (
      3, "segment_rand", "tie_aware")
  assert (p.data.train.resize, p.data.train.resolution) == ("square", 268)  # 512x512 decode
  assert (p.data.mlm_masking, p.data.train.false_videos) == ("whole_word", 1)
  q = allinone_msrvtt_qa.get_config("")
  assert q.model.heads.num_qa_labels == 1501 and dict(q.optim.lr_mult) == {
      "^vqa_classifier/": 10.0}
  assert q.evals.test.protocol == "oov_excluded" and q.init.reinit == ()  # OOV: not scored
  t = allinone_tgif_qa.get_config("action")
  assert t.model.heads.mc_vqa and t.train.num_steps == -(-100 * 20_475 // 512)
  assert t.init.reinit == ("^itm_score/",)   # the reference re-creates its ITM head
  assert "Options: {options} Answer: {choice}" in t.data.train.mc_template
  k = allinone_k400.get_config("")
  assert (k.model.num_frames, k.model.heads.num_qa_labels, k.optim.lr) == (8, 401, 3e-4)
  assert k.data.train.class_prompt == "A persion is doing [MASK]"
  h = allinone_hmdb51.get_config("")
  assert (h.model.heads.num_qa_labels, h.data.train.builder_config) == (52, "split1")


@pytest.mark.parametrize("task", sorted(RUNS))
def test_tiny_train_step_and_eval(task, tiny_data_dir, tmp_path):
  module, arg, metric, (lo, hi) = RUNS[task]
  c = importlib.import_module(f"configs.{module}").get_config(arg)
  c.data.data_dir = tiny_data_dir
  steps = 6 if task == "qa" else 1         # QA: the loss falls over a few moving_shapes steps
  c.train.update(num_steps=steps, ckpt_every=steps)
  out = train.train_and_evaluate(c, str(tmp_path), compiler_options=FAST_COMPILE)
  assert np.isfinite(out["train/loss"]) and lo <= out[f"eval/{metric}"] <= hi
  for name in c.objectives:
    assert np.isfinite(out[f"train/{name}_loss"]), name
  if task == "qa":
    logged = read_metrics(tmp_path)
    first, last = logged[1]["train/loss"], logged[steps]["train/loss"]
    assert last < first - 0.05, (first, last)   # deterministic: seeded data, dropout, init
  name = metric.split("/")[0]
  saved = json.loads((tmp_path / f"eval_{name}_step{steps}.json").read_text())
  assert saved[metric.split("/")[1]] == out[f"eval/{metric}"]


def test_a_few_steps_lower_the_pretraining_loss():
  """Adam on one fixed batch: the weighted VTM + WPA + MLM loss falls within 6 steps."""
  c = allinone.model_config("tiny")
  model = allinone.build(c, rngs=nnx.Rngs(params=0))
  rs = np.random.RandomState(0)
  ids = rs.randint(5, 128, (8, 16)).astype(np.int32)
  mask = np.ones_like(ids)
  batch = dict(video=jnp.asarray(rs.randn(8, 3, 32, 32, 3), jnp.float32), text_ids=ids,
               text_mask=mask, mlm_text_ids=np.where(rs.rand(8, 16) < 0.2, 3, ids),
               mlm_labels=np.where(rs.rand(8, 16) < 0.2, ids, -100).astype(np.int32))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(3e-3)
  weights = dict(mlm=1.0, itm=1.0, wpa=1.0)

  def loss(p):
    return steps.weighted_loss(allinone.FAMILY, nnx.merge(graphdef, p, rest), batch, weights=weights,
                       rng=jax.random.key(0), train=False)[0]

  @jax.jit
  def step(p, s):
    value, g = jax.value_and_grad(loss)(p)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, value

  state, losses = tx.init(params), []
  for _ in range(6):
    params, state, value = step(params, state)
    losses.append(float(value))
  assert losses[-1] < losses[0] - 0.5, losses


def test_config_argument_parts():
  from configs import allinone_common, allinone_tgif_qa
  assert allinone_common.parse("action,S,demo", allinone_tgif_qa.TASKS) == ("action", "S", "demo")
  assert allinone_common.parse("", allinone_tgif_qa.TASKS) == ("frameqa", "B", "")
  assert allinone_common.parse("tiny") == ("", "B", "tiny")
  with pytest.raises(ValueError, match="unknown config preset 'large'"):
    allinone_common.parse("large")
  s = allinone_tgif_qa.get_config("transition,S")
  assert (s.model.hidden_size, s.model.distilled, s.model.deit) == (384, True, True)
  assert s.init.from_converted == "converted/allinone_pretrain_s"

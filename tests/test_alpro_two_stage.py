"""ALPRO two-stage pre-training (spec §5.4): prompter (VTC only) -> ALPRO with PEM and the frozen
prompter loaded from the stage-1 workdir, prompt features built at the fresh start."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from configs import alpro_pretrain, alpro_prompter_pretrain
from vlx import checkpoint as ckpt
from vlx import config_validation, train
from vlx.models.alpro import prompts
from vlx.models import alpro
from vlx.models.alpro import pem_setup


def _short(c, data_dir):
  c.data.data_dir = data_dir
  c.train.update(num_steps=2, ckpt_every=2, log_every=1)
  c.evals = {}
  return c


def _stage2_config(data_dir, prompter_dir):
  c = _short(alpro_pretrain.get_config("tiny"), data_dir)
  c.model.pem = True
  c.objectives.update(pem=1.0, mlm=0.0)  # MLM off: a smaller step program (test time)
  c.init.prompter = prompter_dir
  return c


@pytest.fixture(scope="module")
def two_stage(tiny_data_dir, fast_compile, tmp_path_factory):
  data_dir = tiny_data_dir
  root = tmp_path_factory.mktemp("two_stage")
  w1, w2 = str(root / "prompter"), str(root / "alpro")
  c1 = _short(alpro_prompter_pretrain.get_config("tiny"), data_dir)
  train.train_and_evaluate(c1, w1, mode="train", compiler_options=fast_compile)
  c2 = _stage2_config(data_dir, w1)
  train.train_and_evaluate(c2, w2, mode="train", compiler_options=fast_compile)
  return c1, c2, w1, w2


def _rows(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in l]


def test_prompter_trains_with_vtc_only(two_stage):
  _, _, w1, _ = two_stage
  rows = _rows(w1)
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    assert np.isfinite(r["train/vtc_loss"])
    assert r["train/loss"] == pytest.approx(r["train/vtc_loss"], rel=1e-6)
    assert "train/vtm_loss" not in r and "train/mlm_loss" not in r


def test_stage2_prompter_frozen_features_built_pem_loss(two_stage, fast_build, fast_jit):
  _, c2, w1, w2 = two_stage
  stage1 = ckpt.load_params_flat(w1)
  stage2 = ckpt.load_params_flat(w2)
  prompter2 = {k[len("prompter/"):]: v for k, v in stage2.items() if k.startswith("prompter/")}
  assert sorted(prompter2) == sorted(stage1)
  for k, v in stage1.items():   # loaded, then not moved by 2 steps of training (frozen_params)
    np.testing.assert_array_equal(prompter2[k], v, err_msg=k)
  # frozen: the saved optimizer state has no entries for the prompter
  step_dir = ckpt.checkpoint_dir(w2) / "2" / "default"
  meta = ocp.StandardCheckpointer().metadata(step_dir).item_metadata.tree
  opt_paths = [str(p) for p, _ in jax.tree_util.tree_flatten_with_path(meta["opt_state"])[0]]
  assert any("vision_proj" in p for p in opt_paths)
  assert not any("prompter" in p for p in opt_paths)
  # the rest of the model did train
  assert not np.array_equal(stage2["vision_proj/kernel"], stage1["vision_proj/kernel"])

  # saved prompt features == build_prompt_features of the stage-1 prompter
  other = ocp.StandardCheckpointer().restore(step_dir)["other"]["prompter"]
  pc = c2.model.copy_and_resolve_references()
  pc.head = "prompter"
  model = fast_build(lambda: alpro.build(pc, rngs=nnx.Rngs(params=0)))
  pem_setup.load_prompter(model, w1)
  p = prompts.prompt_inputs(c2)

  def features(m, *batches):
    m.build_prompt_features(*batches, num_templates=len(prompts.VIDEO_TEMPLATES))
    return {"video_prompt_feat": m.video_prompt_feat[...],
            "image_prompt_feat": m.image_prompt_feat[...]}
  expected = fast_jit(features)(model, *(jnp.asarray(p[k]) for k in (
      "video_prompt_ids", "video_prompt_mask", "image_prompt_ids", "image_prompt_mask")))
  for name in ("video_prompt_feat", "image_prompt_feat"):
    saved = np.asarray(other[name]["value"] if isinstance(other[name], dict) else other[name])
    assert saved.shape == (c2.model.num_entities, c2.model.embed_dim)
    assert np.abs(saved).min() > 0
    np.testing.assert_allclose(saved, np.asarray(expected[name]), rtol=1e-4,
                               atol=1e-5, err_msg=name)

  rows = _rows(w2)
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    # >= 0: after 2 prompter steps every clip's best entity may be #0 ('object'), which the
    # reference ignores (vlx.objectives.pem.pseudo_labels) -> loss 0
    assert np.isfinite(r["train/pem_loss"]) and r["train/pem_loss"] >= 0
    total = sum(r[f"train/{n}_loss"] for n in ("vtc", "vtm", "pem"))
    assert r["train/loss"] == pytest.approx(total, rel=1e-5)


def test_pem_config_checks_name_the_field(tmp_path):
  c = alpro_pretrain.get_config("tiny")
  c.objectives.pem = 1.0
  with pytest.raises(config_validation.ConfigError, match=r"config\.objectives\.pem=1\.0 needs "
                     r"config\.model\.pem=True"):
    config_validation.validate(c)
  c = alpro_pretrain.get_config("tiny")
  c.init.prompter = str(tmp_path)
  with pytest.raises(config_validation.ConfigError, match=r"config\.init\.prompter"):
    config_validation.validate(c)
  with pytest.raises(FileNotFoundError, match=r"config\.init\.prompter="):
    ckpt.load_params_flat(str(tmp_path), "config.init.prompter")

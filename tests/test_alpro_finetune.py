"""ALPRO downstream: configs, retrieval eval modes (exact vtm vs the reference fixture, rerank),
time_embed resizing in init_from, and a tiny QA fine-tuning run that writes its eval JSON."""
from __future__ import annotations

import json
import logging

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
import jax.numpy as jnp

from configs import (alpro_didemo_ret, alpro_msrvtt_qa, alpro_msrvtt_ret, alpro_msvd_qa,
                     common)
from vlx import checkpoint as ckpt
from vlx import config_validation
from vlx import sharding as shd
from vlx.evals import retrieval
from vlx.models import alpro
from vlx.models.alpro import load_fixture as lf

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
CONFIGS = (alpro_msrvtt_ret, alpro_didemo_ret, alpro_msrvtt_qa, alpro_msvd_qa)


@pytest.mark.parametrize("module", CONFIGS, ids=lambda m: m.__name__.split(".")[-1])
def test_configs_validate_for_every_preset(module):
  for preset in ("", "demo", "tiny"):
    c = module.get_config(preset)
    config_validation.validate(c, num_devices=8)
    assert c.model.video.num_frames == c.data.train.num_frames
  paper = module.get_config("")
  assert paper.init.from_converted and paper.optim.schedule.warmup_ratio == 0.1
  if paper.model.head == "qa":
    assert paper.objectives.to_dict() == {"qa": 1.0} and paper.data.train.num_frames == 16
    assert paper.model.num_labels in (1500, 2423) and paper.train.grad_accum == 2
  else:
    assert paper.evals.test.mode == "vtm" and paper.data.train.num_frames == 8


def test_paper_presets_stop_with_the_tfds_build_command():
  from vlx.data import pipeline
  for name in ("msrvtt", "didemo", "msvd_qa"):
    with pytest.raises(pipeline.DatasetNotBuiltError, match=f"tfds build data_builders/{name}"):
      pipeline.get_builder(name, "", "/nonexistent")


@pytest.fixture(scope="module")
def fixture_model(reference_dir):
  fixture = reference_dir / "alpro" / "tiny"
  cfg, x, sd = lf.read_fixture(fixture)
  return lf._build(cfg, "retrieval", sd), x, dict(np.load(fixture / "outputs.npz"))


def _eval(model, x, **overrides):
  config = common.base_config()
  mesh = shd.make_mesh(config.mesh)
  nv = x["ret_visual_inputs"].shape[0]

  def batches(eval_cfg, cfg, batch_size):   # 3 + 1 rows, the last one padded
    video = np.asarray(lf.to_channels_last(x["ret_visual_inputs"]))
    for s in (slice(0, 3), slice(3, nv)):
      n = s.stop - s.start
      pad = lambda a: np.concatenate([a, np.repeat(a[:1], 3 - n, 0)]) if n < 3 else a
      yield dict(video=pad(video[s]), text_ids=pad(x["ret_text_input_ids"][s].astype(np.int32)),
                 text_mask=pad(x["ret_text_input_mask"][s].astype(np.int32)),
                 video_index=pad(np.arange(nv, dtype=np.int32)[s]),
                 valid=np.arange(3) < n)

  ev = common.retrieval_eval(batch_size=3, video_chunk=3, text_chunk=3, pair_chunk=3, k=16)
  ev.update(overrides)
  with jax.default_matmul_precision("highest"):
    return retrieval.run_retrieval_eval(model, alpro.FAMILY, ev, config, mesh,
                                        make_eval_batches=batches)


def test_vtm_eval_reproduces_the_reference_fixture(fixture_model):
  model, x, ref = fixture_model
  m = _eval(model, x, mode="vtm")
  names = {"medr": "medianR", "meanr": "meanR"}
  for k in ("r1", "r5", "r10", "medr", "meanr"):
    assert m[k] == pytest.approx(float(ref[f"ret_metric/text2video/{names.get(k, k)}"])), k
    assert m[f"v2t/{k}"] == pytest.approx(
        float(ref[f"ret_metric/video2text/{names.get(k, k)}"])), k
  assert m["seconds"] > 0 and m["num_videos"] == m["num_texts"] == 4


def test_score_matrix_modes(fixture_model):
  """Chunked exact vtm = the reference's score matrix; rerank with k = Nv = vtm; a smaller k keeps
  the top-k videos by vtc, re-scored, and every other video below them."""
  model, x, ref = fixture_model
  # features from the evaluator's jitted encoder on 3-row batches (compiled once, shared)
  encode = retrieval.common.jitted(alpro.FAMILY, nnx.graphdef(model),
                                  ("encode_videos", "encode_texts"))
  video = lf.to_channels_last(x["ret_visual_inputs"])
  parts = [jax.device_get(encode(nnx.state(model), dict(
      video=video[s], text_ids=jnp.asarray(x["ret_text_input_ids"][s], jnp.int32),
      text_mask=jnp.asarray(x["ret_text_input_mask"][s], jnp.int32))))
      for s in (slice(0, 3), slice(1, 4))]
  cat = lambda a, b: np.concatenate([a[:1], b])
  videos = jax.tree.map(cat, parts[0][0], parts[1][0])
  texts = jax.tree.map(cat, parts[0][1], parts[1][1])
  ev = lambda **kw: ml_collections.ConfigDict(dict(video_chunk=3, text_chunk=3, pair_chunk=3,
                                                   **kw))
  with jax.default_matmul_precision("highest"):
    vtm = retrieval.score_matrix(alpro.FAMILY, model, texts, videos, ev(mode="vtm"))
    full = retrieval.score_matrix(alpro.FAMILY, model, texts, videos, ev(mode="rerank", k=4))
    top2 = retrieval.score_matrix(alpro.FAMILY, model, texts, videos, ev(mode="rerank", k=2))
    vtc = retrieval.score_matrix(alpro.FAMILY, model, texts, videos, ev(mode="vtc"))
  np.testing.assert_allclose(vtm, ref["ret_score_matrix"].T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(full, vtm, atol=1e-5)
  np.testing.assert_array_equal(np.argsort(-np.round(full, 4), 1, kind="stable"),
                                np.argsort(-np.round(vtm, 4), 1, kind="stable"))
  np.testing.assert_allclose(vtc, ref["ret_itc_scores"].T, rtol=1e-4, atol=1e-4)
  top = np.argsort(-vtc, 1, kind="stable")[:, :2]
  for t in range(4):
    rest = np.setdiff1d(np.arange(4), top[t])
    np.testing.assert_allclose(top2[t, top[t]], vtm[t, top[t]], atol=1e-5)
    assert top2[t, rest].max() < 0 <= top2[t, top[t]].min()
    assert np.argsort(-top2[t, rest]).tolist() == np.argsort(-vtc[t, rest]).tolist()


class _Video(nnx.Module):
  def __init__(self, frames: int):
    self.time_embed = nnx.Param(jnp.zeros((1, frames, 3)))


class _Model(nnx.Module):
  def __init__(self, frames: int, labels: int = 5):
    self.video = _Video(frames)
    self.classifier = nnx.Linear(3, labels, rngs=nnx.Rngs(params=0))


def test_init_from_resizes_time_embed_and_names_mismatches(monkeypatch, caplog):
  src = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
  source = {"video": {"time_embed": src}, "classifier": {"kernel": np.ones((3, 7), np.float32),
                                                         "bias": np.ones(7, np.float32)}}
  from vlx.convert import store
  monkeypatch.setattr(store, "load_converted", lambda path: (None, source))
  _, params, other = nnx.split(_Model(8), nnx.Param, ...)
  fresh = np.asarray(params["classifier"]["kernel"][...])
  init = ml_collections.ConfigDict(dict(from_converted="conv", from_checkpoint="", keep_init=()))
  with pytest.raises(ValueError, match=r"classifier/(kernel|bias) has shape \((3, )?7,?\).*\((3, )?5,?\)"):
    ckpt.init_from(dict(params=params, other=other), init, family=alpro.FAMILY)
  init.keep_init = ("^classifier/",)
  out = ckpt.init_from(dict(params=params, other=other), init, family=alpro.FAMILY)
  te = np.asarray(out["params"]["video"]["time_embed"][...])
  np.testing.assert_array_equal(te, src[:, [0, 0, 1, 1, 2, 2, 3, 3]])   # floor(i * 4 / 8)
  np.testing.assert_array_equal(out["params"]["classifier"]["kernel"][...], fresh)
  # a source without the classifier (a pre-trained file for a QA model): fresh init, logged
  del source["classifier"]
  _, params16, other16 = nnx.split(_Model(16), nnx.Param, ...)
  with caplog.at_level(logging.INFO):
    out = ckpt.init_from(dict(params=params16, other=other16),
                         ml_collections.ConfigDict(dict(from_converted="conv", keep_init=())),
                         family=alpro.FAMILY)
  np.testing.assert_array_equal(out["params"]["video"]["time_embed"][...],
                                np.repeat(src, 4, axis=1))
  assert "classifier/kernel" in caplog.text and "fresh init" in caplog.text


def test_tiny_qa_finetuning_writes_eval_json(tmp_path_factory, tmp_path):
  from vlx import train
  from vlx.data import pipeline
  data_dir = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"
  pipeline.get_builder("moving_shapes", "tiny", str(data_dir))
  c = alpro_msrvtt_qa.get_config("tiny")
  c.data.data_dir = str(data_dir)
  out = train.train_and_evaluate(c, str(tmp_path), compiler_options=FAST_COMPILE)
  saved = json.loads((tmp_path / "eval_test_step2.json").read_text())
  assert saved["step"] == 2 and saved["acc"] == out["eval/test/acc"]
  assert saved["num_questions"] == 16 * 4 and 0.0 <= saved["acc"] <= 100.0
  assert set(saved) >= {f"{t}_acc" for t in ("colour", "shape", "direction", "count")}
  assert saved["seconds"] > 0

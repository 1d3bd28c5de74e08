"""All-in-one evaluation patch order (config.model.eval_patch_order): 'random' reproduces the
reference's per-frame random patch order in eval (spec §3.3.4) with an order fixed by (clip,
view), so scores do not depend on the batch a row sits in; 'raster' is the identity order."""
import dataclasses
import importlib
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from conftest import _fast_jit
from vlx import sharding as shd
from vlx.evals import classification, multiple_choice, qa, retrieval
from vlx.models import allinone
from vlx.models.allinone import tasks

T, P, B = 3, 16, 4                     # tiny: 32 px frames, patch 8 -> 16 patches, fold 2


def _model(order: str = "random"):
  c = allinone.model_config("tiny")
  c.heads.update(itc=True, num_qa_labels=5)
  # lecun init: with the 0.02 init attention is ~uniform, and then the frame mean hardly sees
  # which patches the roll moved (random and raster would agree to ~1e-7).
  c.update(eval_patch_order=order, kernel_init="lecun")
  return allinone.build(c, rngs=nnx.Rngs(params=0))


@pytest.fixture(scope="module")
def models():
  return {o: _model(o) for o in ("random", "raster")}


def _batch(seed: int = 0) -> dict:
  rs = np.random.RandomState(seed)
  ids = rs.randint(5, 128, (B, 16)).astype(np.int32)
  mask = (np.arange(16)[None] < np.array([16, 9, 12, 5])[:, None]).astype(np.int32)
  return dict(video=rs.randn(B, T, 32, 32, 3).astype(np.float32), text_ids=ids, text_mask=mask,
              choice_ids=rs.randint(5, 128, (B, 3, 16)).astype(np.int32),
              choice_mask=np.ones((B, 3, 16), np.int32),
              video_index=np.array([10, 11, 12, 13], np.int32),
              example_index=np.array([0, 1, 2, 3], np.int32),
              view_index=np.array([0, 1, 0, 2], np.int32))


def _recipe(video_index: int, view: int) -> np.ndarray:
  """[T, P] the documented key recipe, written out independently of tasks.eval_patch_perm."""
  k = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), video_index), view)
  return np.argsort(np.asarray(jax.random.uniform(k, (T, P))), axis=-1, kind="stable")


EVALS = {name: _fast_jit(getattr(allinone, name))
         for name in ("qa_logits", "class_logits", "mc_scores", "encode_videos")}
_vqa = _fast_jit(lambda m, ids, mask, video, perm: m.vqa_classifier(
    m.infer(ids, mask, video, patch_perm=perm)["cls_feats"]))
_rank = _fast_jit(lambda m, ids, mask, video, perm: m.rank_output(
    m.infer(ids, mask, video, patch_perm=perm)["cls_feats"])[:, 0])
_vtm = _fast_jit(lambda m, texts, videos: allinone.retrieval_scores(m, texts, videos, mode="vtm"))
_video_only = _fast_jit(lambda m, video, perm: m.infer_video_only(
    video, patch_perm=perm)["image_feats"][:, 0])


def test_outputs_do_not_depend_on_batch_composition(models):
  """Rows reordered and padded (index -1, as the pipeline pads): the same per-row outputs."""
  model, batch = models["random"], _batch()
  order = np.array([2, 0, 3, 1])
  mixed = {k: np.concatenate([v[order], v[:2]]) for k, v in batch.items()}
  for key in ("video_index", "example_index", "view_index"):
    mixed[key][B:] = -1
  for name, fn in EVALS.items():
    want, got = fn(model, batch), fn(model, mixed)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(np.asarray(g)[:B], np.asarray(w)[order], rtol=1e-5, atol=1e-5,
                                 err_msg=name)


def test_random_order_is_the_documented_recipe(models):
  model, batch = models["random"], _batch()
  rows = batch["video_index"]
  perm = np.stack([_recipe(int(i), 0) for i in rows])          # QA / MC: no view
  views = np.stack([_recipe(int(i), int(v)) for i, v in zip(rows, batch["view_index"])])
  np.testing.assert_array_equal(tasks.eval_patch_perm(model, batch["video"], rows,
                                                      batch["view_index"]), views)
  assert not np.array_equal(perm, np.broadcast_to(np.arange(P), perm.shape))
  qa_batch = {k: v for k, v in batch.items() if k != "view_index"}
  np.testing.assert_allclose(EVALS["qa_logits"](model, qa_batch),
                             _vqa(model, batch["text_ids"], batch["text_mask"], batch["video"],
                                  perm), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(EVALS["class_logits"](model, batch),
                             _vqa(model, batch["text_ids"], batch["text_mask"], batch["video"],
                                  views), rtol=1e-5, atol=1e-6)
  mc = np.stack([_rank(model, batch["choice_ids"][:, k], batch["choice_mask"][:, k],
                       batch["video"], perm) for k in range(3)], axis=1)
  np.testing.assert_allclose(EVALS["mc_scores"](model, qa_batch), mc, rtol=1e-5, atol=1e-6)
  # No index key at all: the row's position in the batch keys its order.
  bare = {k: batch[k] for k in ("video", "text_ids", "text_mask")}
  by_pos = np.stack([_recipe(i, 0) for i in range(B)])
  np.testing.assert_allclose(EVALS["qa_logits"](model, bare),
                             _vqa(model, bare["text_ids"], bare["text_mask"], bare["video"],
                                  by_pos), rtol=1e-5, atol=1e-6)


def test_retrieval_pairs_use_each_videos_one_order(models):
  """VTM pairs every text with the video embeddings of encode_videos: score (i, j) = the joint
  pass of text i with video j in video j's order; VTC uses the same order."""
  model, batch = models["random"], _batch()
  views = np.stack([_recipe(int(i), int(v))
                    for i, v in zip(batch["video_index"], batch["view_index"])])
  videos = EVALS["encode_videos"](model, batch)
  texts = dict(text_ids=batch["text_ids"], text_mask=batch["text_mask"])
  sim = np.asarray(_vtm(model, texts, videos))                    # [Nt, Nv]
  for j in range(B):
    video = np.repeat(batch["video"][j:j + 1], B, axis=0)
    col = _rank(model, batch["text_ids"], batch["text_mask"], video,
                np.repeat(views[j:j + 1], B, axis=0))
    np.testing.assert_allclose(sim[:, j], col, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(videos["itc_video"], _video_only(model, batch["video"], views),
                             rtol=1e-5, atol=1e-6)


def test_random_differs_from_raster_and_raster_is_the_old_behaviour(models):
  batch = _batch()
  random = np.asarray(EVALS["qa_logits"](models["random"], batch))
  raster = np.asarray(EVALS["qa_logits"](models["raster"], batch))
  assert np.abs(random - raster).max() > 1e-2         # the roll moves other patches
  assert tasks.eval_patch_perm(models["raster"], batch["video"], batch["video_index"]) is None
  old = _vqa(models["raster"], batch["text_ids"], batch["text_mask"], batch["video"], None)
  np.testing.assert_allclose(raster, old, rtol=1e-6, atol=1e-7)
  emb = _fast_jit(lambda m, v: m.embed_video(v)[0])(models["raster"], batch["video"])
  np.testing.assert_allclose(
      EVALS["encode_videos"](models["raster"], batch)["video_embeds"].reshape(emb.shape), emb,
      rtol=1e-6, atol=1e-7)


def test_views_get_different_orders(models):
  model, batch = models["random"], _batch()
  same_clip = dict(batch, video=np.repeat(batch["video"][:1], B, 0),
                   text_ids=np.repeat(batch["text_ids"][:1], B, 0),
                   text_mask=np.repeat(batch["text_mask"][:1], B, 0),
                   video_index=np.full(B, 7, np.int32), view_index=np.arange(B, dtype=np.int32))
  perm = np.asarray(tasks.eval_patch_perm(model, same_clip["video"], same_clip["video_index"],
                                          same_clip["view_index"]))
  for v in range(1, B):
    assert (perm[v] != perm[0]).any(), v
  logits = np.asarray(EVALS["class_logits"](model, same_clip))
  assert np.abs(logits[1:] - logits[:1]).max() > 1e-4


def test_encode_split_passes_clip_and_view_to_the_family(models):
  """The retrieval eval keeps video_index in the batch and adds view_index = eval_cfg.view."""
  model, batch = models["random"], _batch()
  config = importlib.import_module("configs.allinone_msrvtt_ret").get_config("tiny")
  mesh = shd.make_mesh(config.mesh)
  ev = ml_collections.ConfigDict(dict(builder="toy", split="test", mode="vtm", batch_size=B,
                                      view=2))

  def batches(eval_cfg, cfg, *, batch_size):
    assert batch_size == B
    yield dict(video=batch["video"], text_ids=batch["text_ids"], text_mask=batch["text_mask"],
               video_index=batch["video_index"], valid=np.ones(B, bool))

  _, videos, uniq, _ = retrieval.encode_split(model, allinone.FAMILY, ev, config, mesh, batches)
  np.testing.assert_array_equal(uniq, batch["video_index"])
  views = np.stack([_recipe(int(i), 2) for i in batch["video_index"]])
  emb = _fast_jit(lambda m, v, p: m.embed_video(v, p)[0])(model, batch["video"], views)
  np.testing.assert_allclose(videos["video_embeds"].reshape(emb.shape), emb, rtol=1e-5,
                             atol=1e-6)


def test_config_field_default_and_validation():
  for name in ("allinone_pretrain", "allinone_msrvtt_ret", "allinone_msrvtt_qa",
               "allinone_hmdb51"):
    mod = importlib.import_module(f"configs.{name}")
    for preset in ("", "demo", "tiny"):
      assert mod.get_config(preset).model.eval_patch_order == "random", (name, preset)
  assert allinone.model_config("B").eval_patch_order == "random"
  c = importlib.import_module("configs.allinone_msrvtt_ret").get_config("tiny")
  c.model.eval_patch_order = "zigzag"
  with pytest.raises(ValueError, match=r"config.model.eval_patch_order='zigzag'"):
    allinone.validate_config(c)
  with pytest.raises(ValueError, match="eval_patch_order"):
    allinone.build(c.model, rngs=nnx.Rngs(params=0))
  c.model.eval_patch_order = "raster"
  allinone.validate_config(c)


def test_eval_drivers_pass_row_indices_to_the_family():
  """The QA / MC / classification evals give the family video_index / example_index /
  view_index (what batch_patch_perm keys on): a spy family whose outputs are one-hots of them
  scores 100 % only if it sees them (padding rows: -1, dropped)."""
  config = importlib.import_module("configs.allinone_msrvtt_ret").get_config("tiny")
  mesh = shd.make_mesh(config.mesh)
  ev = ml_collections.ConfigDict(dict(builder="toy", split="test", batch_size=B))
  vid, ex, view = np.array([3, 8, 5, -1]), np.array([0, 1, 2, -1]), np.array([2, 0, 1, -1])
  label = ((vid + ex + view) % 3).astype(np.int32)
  rows = dict(video=np.zeros((B, T, 32, 32, 3), np.float32), text_ids=np.ones((B, 16), np.int32),
              text_mask=np.ones((B, 16), np.int32), choice_ids=np.ones((B, 3, 16), np.int32),
              choice_mask=np.ones((B, 3, 16), np.int32), video_index=vid.astype(np.int32),
              example_index=ex.astype(np.int32), view_index=view.astype(np.int32), label=label,
              qtype=np.zeros(B, np.int32), valid=vid >= 0)
  keys = {"qa": ("video", "text_ids", "text_mask", "video_index", "valid", "label", "qtype",
                 "example_index"),
          "mc": ("video", "choice_ids", "choice_mask", "label", "video_index", "example_index",
                 "valid"),
          "cls": ("video", "text_ids", "text_mask", "label", "video_index", "example_index",
                  "view_index", "valid")}
  spy = lambda m, b: jax.nn.one_hot((b["video_index"] + b["example_index"]
                                     + b.get("view_index", 0)) % 3, 3) + 0 * m.w[...]
  family = dataclasses.replace(allinone.FAMILY, name="spy", qa_logits=spy, mc_scores=spy,
                               class_logits=spy)
  model = types.new_class("M", (nnx.Module,))()
  model.w = nnx.Param(jnp.zeros(()))
  for task, run in (("qa", qa.run_qa_eval), ("mc", multiple_choice.run_mc_eval),
                    ("cls", classification.run_classification_eval)):
    if task != "cls":
      rows["label"] = ((vid + ex) % 3).astype(np.int32)
    else:
      rows["label"] = label
    batch = {k: rows[k] for k in keys[task]}
    with jax.set_mesh(mesh):
      m = run(model, family, ev, config, mesh, lambda *a, batch=batch, **k: iter([batch]))
    assert m.get("acc", m.get("top1")) == 100.0, (task, m)

"""All-in-one model: temporal roll, patch order, distilled tokens, frame interaction, API shapes.

Numbers against the reference live in tests/test_allinone_parity.py; here the rules of spec §3
are checked on a tiny random model with hand-computed expectations.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from vlx.convert.engine import abstract_model
from vlx.layers.vit import resize_bilinear_align_corners, temporal_roll
from vlx.models.allinone.model import AllInOne, build, model_config


def _config(**kw):
  c = model_config("tiny")
  c.update(drop_rate=0.0, drop_path_rate=0.0)
  c.heads.update(itc=True, num_qa_labels=5, mc_vqa=True, vcop=True)
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def tiny(fast_build):
  return fast_build(lambda: build(_config(), rngs=nnx.Rngs(params=0)))


@pytest.fixture(scope="module")
def data():
  r = np.random.default_rng(0)
  video = r.standard_normal((2, 3, 32, 32, 3)).astype(np.float32)
  ids = r.integers(104, 128, (2, 6)).astype(np.int32)
  mask = np.array([[1] * 6, [1] * 4 + [0] * 2], np.int32)
  perm = np.stack([r.permutation(16) for _ in range(6)]).reshape(2, 3, 16).astype(np.int32)
  return video, ids, mask, perm


def test_temporal_roll_moves_the_right_tokens():
  """l = 9 tokens, fold 2: slots 1-2 take frame t-1, slots 7-8 frame t+1 (cyclic), rest stay."""
  b, t, l = 2, 3, 9
  x = np.arange(b * t * l, dtype=np.float32).reshape(b * t, l, 1)
  y = np.asarray(temporal_roll(jnp.asarray(x), t, 2)).reshape(b, t, l)
  xr = x.reshape(b, t, l)
  for f in range(t):
    np.testing.assert_array_equal(y[:, f, [0, 3, 4, 5, 6]], xr[:, f, [0, 3, 4, 5, 6]])
    np.testing.assert_array_equal(y[:, f, 1:3], xr[:, (f - 1) % t, 1:3])
    np.testing.assert_array_equal(y[:, f, 7:9], xr[:, (f + 1) % t, 7:9])
  np.testing.assert_array_equal(temporal_roll(jnp.asarray(x), t, 0), x)
  with pytest.raises(ValueError, match="multiple of num_frames=4"):
    temporal_roll(jnp.asarray(x), 4, 1)


def test_bilinear_resize_matches_torch_align_corners():
  grid = np.random.default_rng(1).standard_normal((1, 4, 4, 5)).astype(np.float32)
  ours = resize_bilinear_align_corners(jnp.asarray(grid), 7, 3)
  want = torch.nn.functional.interpolate(torch.from_numpy(grid).permute(0, 3, 1, 2), size=(7, 3),
                                         mode="bilinear", align_corners=True)
  np.testing.assert_allclose(ours, want.permute(0, 2, 3, 1).numpy(), atol=1e-6)
  np.testing.assert_array_equal(resize_bilinear_align_corners(jnp.asarray(grid), 4, 4), grid)


def test_patch_order_temporal_and_cls_tokens(tiny, data, fast_jit):
  video, _, _, perm = data
  emb = fast_jit(lambda m, v, p: m.embed_video(v, p)[0])
  raster, permuted = emb(tiny, video, None), emb(tiny, video, perm)
  assert raster.shape == (6, 17, 32)
  tr = tiny.transformer
  pos, temporal = np.asarray(tr.pos_embed[...]), np.asarray(tr.temporal_embed[...])
  np.testing.assert_allclose(raster[:, 0], np.broadcast_to(tr.cls_token[...][0, 0] + pos[0, 0],
                                                           (6, 32)), atol=1e-6)
  # slot 1 + j holds raster patch perm[j], together with its position and temporal embedding
  rows = perm.reshape(6, 16)
  np.testing.assert_allclose(permuted[:, 1:], np.take_along_axis(
      np.asarray(raster)[:, 1:], rows[..., None], axis=1), atol=1e-6)
  # frame t's patches carry temporal_embed[t]; the CLS none
  patches = fast_jit(lambda m, v: m.transformer.patch_embed(v))(tiny, video.reshape(6, 32, 32, 3))
  want = np.asarray(patches) + pos[:, 1:] + np.tile(temporal[0], (2, 1))[:, None]
  np.testing.assert_allclose(raster[:, 1:], want, atol=1e-5)


def test_distilled_has_cls_and_dist_tokens_and_no_temporal(fast_build, data, fast_jit):
  m = fast_build(lambda: build(_config(distilled=True), rngs=nnx.Rngs(params=1)))
  video, _, _, perm = data
  emb, msk = fast_jit(lambda m, v, p: m.embed_video(v, p))(m, video, perm)
  assert emb.shape == (6, 18, 32) and msk.shape == (6, 18) and int(msk.min()) == 1
  pos = m.transformer.pos_embed[...]
  np.testing.assert_allclose(emb[:, 1], np.broadcast_to(m.transformer.dist_token[...][0, 0]
                                                        + pos[0, 1], (6, 32)), atol=1e-6)
  # the temporal table exists (released S files have it) but is never added
  m.transformer.temporal_embed[...] = jnp.ones_like(m.transformer.temporal_embed[...]) * 7
  np.testing.assert_array_equal(fast_jit(lambda m, v, p: m.embed_video(v, p)[0])(m, video, perm),
                                emb)


def _per_frame(m, ids, mask, video):
  return m.infer(ids, mask, video)["final_norm_per_frame"]


def test_frames_interact_only_through_the_roll(tiny, data, fast_jit):
  """Changing frame 2 changes frame 0's sequence only when tokens are rolled (fold > 0)."""
  video, ids, mask, _ = data
  other = video.copy()
  other[:, 2] += 1.0
  fn = fast_jit(_per_frame)
  a, b = fn(tiny, ids, mask, video), fn(tiny, ids, mask, other)
  assert float(jnp.abs(a[:, 0] - b[:, 0]).max()) > 1e-3      # roll brings frame 2 into frame 0
  no_roll = nnx.clone(tiny)
  no_roll.roll_div = 100                                      # fold = 17 // 100 = 0
  a, b = fn(no_roll, ids, mask, video), fn(no_roll, ids, mask, other)
  np.testing.assert_array_equal(a[:, :2], b[:, :2])


def test_infer_outputs_and_heads(tiny, data, fast_jit):
  video, ids, mask, perm = data

  def run(m, ids, mask, video, perm):
    f = m.infer(ids, mask, video, patch_perm=perm, intermediates=True)
    emb, msk = m.embed_video(video, perm)
    one = m.infer(ids, mask, video_embeds=emb.reshape(2, 3, 17, -1)[:1],
                  video_masks=msk.reshape(2, 3, 17)[:1])
    first = m.infer(ids[:1], mask[:1], video[:1], patch_perm=perm[:1])
    heads = dict(mlm=m.mlm_score(f["text_feats"]), itm=m.itm_score(f["cls_feats"]),
                 rank=m.rank_output(f["cls_feats"]), qa=m.vqa_classifier(f["cls_feats"]),
                 mc=m.mc_vqa_classifier(f["cls_feats"]),
                 vcop=m.vcop_head(f["final_norm_per_frame"][:, :, 0]))
    return f, one, first, heads, m.infer_text_only(ids, mask), m.infer_video_only(video)

  f, one, first, heads, text, vid = fast_jit(run)(tiny, ids, mask, video, perm)
  shapes = {k: v.shape for k, v in f.items()}
  assert shapes["text_feats"] == (2, 6, 32) and shapes["image_feats"] == (2, 17, 32)
  assert shapes["final_norm_per_frame"] == (2, 3, 23, 32) and shapes["cls_feats"] == (2, 32)
  assert shapes["roll_in_1"] == (6, 17, 32) and shapes["block_1_out"] == (6, 23, 32)
  np.testing.assert_allclose(f["raw_cls_feats"], f["final_norm_per_frame"][:, :, 0].mean(1),
                             atol=1e-6)
  np.testing.assert_allclose(f["cls_feats"], np.tanh(
      f["raw_cls_feats"] @ tiny.pooler.kernel[...] + tiny.pooler.bias[...]), atol=1e-5)
  np.testing.assert_allclose(f["roll_out_0"], temporal_roll(f["roll_in_0"], 3, 2))
  np.testing.assert_allclose(f["roll_in_1"], f["block_0_out"][:, 6:])
  # one precomputed video broadcast to both texts = text 0 with video 0 in the normal path
  np.testing.assert_allclose(one["cls_feats"][0], first["cls_feats"][0], atol=1e-5)
  np.testing.assert_allclose(heads["rank"][:, 0], heads["itm"][:, 1], atol=1e-6)
  assert heads["mlm"].shape == (2, 6, 128) and heads["qa"].shape == (2, 5)
  assert heads["mc"].shape == (2, 1) and heads["vcop"].shape == (2, 6)
  assert text["text_feats"].shape == (2, 6, 16) and vid["image_feats"].shape == (2, 17, 16)
  np.testing.assert_allclose(text["text_feats"], text["text_hidden"] @ tiny.txt_proj.kernel[...]
                             + tiny.txt_proj.bias[...], atol=1e-5)


def test_logical_axis_names_and_tree(tiny):
  names = lambda v: v.get_metadata()["out_sharding"]
  assert names(tiny.transformer.blocks[0].attn.query.kernel) == ("embed", "heads")
  assert names(tiny.transformer.blocks[1].mlp.fc1.kernel) == ("embed", "mlp")
  assert names(tiny.mlm_score.decoder.kernel) == ("embed", "vocab")
  assert names(tiny.text_embeddings.word.embedding) == ("vocab", "embed")
  assert names(tiny.txt_proj.kernel) == ("embed", "proj")
  assert names(tiny.transformer.patch_embed.proj.kernel) == (None, None, None, "embed")
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(tiny))}
  for p in ("transformer/temporal_embed", "token_type_embeddings/embedding", "pooler/kernel",
            "mlm_score/bias", "vqa_classifier/norm/scale", "vcop_head/fc8/kernel", "vid_proj/bias"):
    assert p in paths, p
  assert tiny.vcop_head.fc8.kernel.shape == (512 * 3, 6)


def test_released_sizes_and_errors():
  shapes = {}
  for v in ("Ti", "S", "B"):
    m = abstract_model(build, model_config(v))
    n = sum(int(np.prod(x.shape)) for _, x in nnx.to_flat_state(nnx.state(m, nnx.Param)))
    shapes[v] = (m.transformer.pos_embed.shape, n)
  # spec §1: float parameters of the released pre-training state dicts
  assert shapes == {"Ti": ((1, 197, 192), 17_359_676), "S": ((1, 198, 384), 45_453_884),
                    "B": ((1, 197, 768), 133_932_860)}
  with pytest.raises(ValueError, match="not divisible by model.num_heads=5"):
    nnx.eval_shape(lambda: build(_config(num_heads=5), rngs=nnx.Rngs(params=0)))
  with pytest.raises(ValueError, match="variant 'L'"):
    model_config("L")
  wrong = model_config("B")
  wrong.variant = "S"
  with pytest.raises(ValueError, match=r"model.variant='S' means hidden_size=384.*'custom'"):
    abstract_model(build, wrong)
  with pytest.raises(ValueError, match="pass no word_embedding"):
    abstract_model(build, _config()).mlm_score(jnp.ones((1, 2, 32)), jnp.ones((128, 32)))
  m = nnx.eval_shape(lambda: build(_config(), rngs=nnx.Rngs(params=0)))
  with pytest.raises(ValueError, match="video has 4 frames but the temporal embedding has 3"):
    nnx.eval_shape(lambda m, v: m.embed_video(v), m, jnp.ones((1, 4, 32, 32, 3)))
  with pytest.raises(ValueError, match=r"patch_perm has shape \(1, 3, 9\); expected 16 patch"):
    nnx.eval_shape(lambda m, v: m.embed_video(v, jnp.zeros((1, 3, 9), jnp.int32)), m,
                   jnp.ones((1, 3, 32, 32, 3)))
  with pytest.raises(ValueError, match="3 videos for 2 texts"):
    nnx.eval_shape(lambda m: m.infer(jnp.ones((2, 6), jnp.int32), jnp.ones((2, 6), jnp.int32),
                                     video_embeds=jnp.ones((3, 3, 17, 32))), m)
  assert isinstance(m, AllInOne)


def test_training_mode_uses_dropout(fast_build, data, fast_jit):
  """drop_rate 0.1 / drop_path 0.1 (the reference's): train passes differ per key, eval is fixed."""
  c = model_config("tiny")
  m = fast_build(lambda: build(c, rngs=nnx.Rngs(params=0)))
  video, ids, mask, perm = data
  run = fast_jit(lambda m, key, det: m.infer(ids, mask, video, patch_perm=perm,
                                             deterministic=det, rngs=nnx.Rngs(dropout=key)
                                             )["cls_feats"], static_argnums=(2,))
  a, b = run(m, jax.random.key(0), False), run(m, jax.random.key(1), False)
  e1, e2 = run(m, jax.random.key(0), True), run(m, jax.random.key(1), True)
  assert np.isfinite(a).all() and float(jnp.abs(a - b).max()) > 1e-4
  np.testing.assert_array_equal(e1, e2)

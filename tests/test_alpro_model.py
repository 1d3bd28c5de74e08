"""ALPRO on the tiny config: shapes per head, jitted loss, PEM image prompts, QA logits, bf16,
remat, temperature gradient.

Speed: every eval-mode check reads one compiled function (`eval_out`), every train-mode check one
small vtm-only training loss compiled per model variant (`train_losses`); see conftest FAST_COMPILE.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vlx  # noqa: F401
from configs.alpro_pretrain import alpro_model
from vlx import registry, steps
from vlx.models import alpro
from vlx.models.alpro.model import PromptFeatures

WEIGHTS = dict(vtc=1.0, vtm=1.0, mlm=1.0, pem=1.0)
B, L = 3, 6


def tiny(**kw):
  c = alpro_model("tiny")
  c.pem = True
  c.update(kw)
  return c


def make_batch(c, b=B, seed=0):
  rng = np.random.default_rng(seed)
  v = c.video
  shape = (b, v.num_frames, v.img_size, v.img_size, 3)
  ids = rng.integers(1, c.text.vocab_size, size=(b, L)).astype(np.int32)
  mask = np.ones((b, L), np.int32)
  mask[0, -2:] = 0
  labels = np.full((b, L), -100, np.int32)
  labels[:, 2] = ids[:, 2]
  grid = v.img_size // v.patch_size
  mpm = np.ones((b, grid, grid), np.float32)
  mpm[:, 0, 0] = 0
  return dict(video=jnp.asarray(rng.normal(size=shape), jnp.float32), text_ids=jnp.asarray(ids),
              text_mask=jnp.asarray(mask), mlm_text_ids=jnp.asarray(np.where(labels > 0, 103, ids)),
              mlm_labels=jnp.asarray(labels),
              crop_video=jnp.asarray(rng.normal(size=shape), jnp.float32),
              mpm_mask=jnp.asarray(mpm), label=jnp.asarray(rng.integers(0, 5, size=b)))


IS_IMAGE = np.array([True, False, True])   # a mixed batch: rows 0 and 2 use the image prompts


@pytest.fixture(scope="module")
def model():
  m = alpro.build(tiny(), rngs=nnx.Rngs(params=0))
  r = np.random.default_rng(7)   # distinct prompt sets so that picking the wrong one shows
  shape = m.prompter.video_prompt_feat.shape
  m.prompter.video_prompt_feat[...] = jnp.asarray(r.normal(size=shape), jnp.float32)
  m.prompter.image_prompt_feat[...] = jnp.asarray(r.normal(size=shape), jnp.float32)
  return m


def _eval_everything(m, batch, prompt_ids):
  """All eval-mode outputs the tests below check, in one program."""
  rng = jax.random.key(0)
  o = {}
  video = m.encode_video(batch["video"])
  text = m.encode_text(batch["text_ids"], batch["text_mask"])
  fused = m.fuse(text, batch["text_mask"], video)
  o.update(video=video, text=text, fused=fused, video_feat=m.video_feat(video),
           text_feat=m.text_feat(text), itm=m.itm_logits(fused), mlm=m.mlm_logits(fused, L),
           pem=m.pem_logits(fused, L, batch["mpm_mask"]))
  p, crop = m.prompter, batch["crop_video"]
  o.update(sim_video=p.entity_similarity(crop, "video"),
           sim_image=p.entity_similarity(crop, "image"),
           sim_mixed=p.entity_similarity(crop, is_image=batch["is_image"]),
           sim_all_image=p.entity_similarity(crop, is_image=jnp.bool_(True)))
  f = lambda mm: steps.weighted_loss(alpro.FAMILY, mm, batch, weights=WEIGHTS, rng=rng, train=False)
  o["loss_and_metrics"], o["grads"] = nnx.value_and_grad(f, has_aux=True)(m)
  # retrieval
  videos = alpro.encode_videos(m, dict(video=batch["video"][:2]))
  texts = alpro.encode_texts(m, batch)
  pair = m.fuse(texts["text_embeds"][2:3], texts["text_mask"][2:3], videos["video_embeds"][1:2])
  o.update(videos=videos, texts=texts, vtc=alpro.retrieval_scores(m, texts, videos, mode="vtc"),
           vtm=alpro.retrieval_scores(m, texts, videos, mode="vtm"),
           pair_match=jax.nn.softmax(m.itm_logits(pair), -1)[0, 1])
  # more frames than the model's time_embed (4 vs 2): resized on the fly
  o["video_4_frames"] = m.encode_video(jnp.concatenate([batch["video"]] * 2, axis=1)[:2])
  # prompt features: built in place on this (traced) copy of the prompter
  ids = prompt_ids
  o["prompt_feats_by_hand"] = p.text_feat(p.encode_text(ids, jnp.ones_like(ids))).reshape(
      2, m.prompter.video_prompt_feat.shape[0], -1).mean(0)
  p.build_prompt_features(ids, jnp.ones_like(ids), ids[::-1], jnp.ones_like(ids), num_templates=2)
  o["built_video_prompt_feat"] = p.video_prompt_feat[...]
  o["built_image_prompt_feat"] = p.image_prompt_feat[...]
  # temperature clamp with straight-through gradient (on this copy)
  m.temp[...] = jnp.float32(2.0)
  o["temp_clamped"], o["temp_grad"] = nnx.value_and_grad(lambda mm: mm.temperature() * 3.0)(m)
  return o


@pytest.fixture(scope="module")
def batch():
  b = make_batch(tiny())
  b["is_image"] = jnp.asarray(IS_IMAGE)
  return b


@pytest.fixture(scope="module")
def eval_out(model, batch, fast_jit):
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 100, size=(2 * 16, 5)), jnp.int32)
  return fast_jit(_eval_everything)(model, batch, ids)


def test_registry_exports_contract():
  mod = registry.get("alpro")
  for name in ("build", "encode_videos", "encode_texts", "retrieval_scores",
               "qa_logits"):
    assert callable(getattr(mod, name))


def test_shapes_of_every_head(model, eval_out):
  c = tiny()
  n = (c.video.img_size // c.video.patch_size) ** 2
  d = c.text.hidden_size
  o = eval_out
  assert o["video"].shape == (B, 1 + n, d) and o["text"].shape == (B, L, d)
  assert o["fused"].shape == (B, L + 1 + n, d)
  assert o["video_feat"].shape == (B, c.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(o["text_feat"], axis=-1), 1.0, rtol=1e-5)
  assert o["itm"].shape == (B, 2)
  assert o["mlm"].shape == (B, L, c.text.vocab_size)
  assert o["pem"].shape == (B, c.num_entities)
  assert model.prompter.head == "prompter" and not hasattr(model.prompter, "prompter")
  # structure only: abstract builds, nothing is initialised
  qa = nnx.eval_shape(lambda: alpro.build(tiny(head="qa", num_labels=5, pem=False),
                                          rngs=nnx.Rngs(params=1)))
  assert not hasattr(qa, "mlm_head")
  assert qa.classifier.fc2.kernel.shape == (2 * d, 5)
  ret = nnx.eval_shape(lambda: alpro.build(tiny(head="retrieval", pem=False),
                                           rngs=nnx.Rngs(params=1)))
  assert not hasattr(ret, "prompter") and not hasattr(ret, "pem_head")


def test_prompt_features_are_state_not_params(model, eval_out):
  assert isinstance(model.prompter.video_prompt_feat, PromptFeatures)
  params = nnx.state(model, nnx.Param)
  assert not any("prompt_feat" in "/".join(map(str, k)) for k, _ in nnx.to_flat_state(params))
  np.testing.assert_allclose(eval_out["built_video_prompt_feat"], eval_out["prompt_feats_by_hand"],
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(eval_out["built_image_prompt_feat"], eval_out["prompt_feats_by_hand"])
  with pytest.raises(ValueError, match="head='prompter'"):
    model.build_prompt_features(None, None, None, None)


def test_pem_uses_image_prompts_where_is_image(eval_out):
  """Per-row prompt choice (CC3M image batches, spec §5.4/§7), and the PEM loss built on it."""
  o = eval_out
  sim_v, sim_i, mixed = map(np.asarray, (o["sim_video"], o["sim_image"], o["sim_mixed"]))
  assert not np.allclose(sim_v, sim_i)
  np.testing.assert_allclose(mixed[IS_IMAGE], sim_i[IS_IMAGE], rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(mixed[~IS_IMAGE], sim_v[~IS_IMAGE], rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(o["sim_all_image"], sim_i, rtol=1e-6, atol=1e-5)
  # pem_loss of loss_fn (batch has is_image) = soft CE on the mixed similarities, by hand
  soft = np.exp(mixed - mixed.max(1, keepdims=True))
  soft /= soft.sum(1, keepdims=True)
  logits = np.asarray(o["pem"], np.float64)
  logp = logits - logits.max(1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(1, keepdims=True))
  keep = mixed.argmax(1) != 0
  want = (-(soft * logp).sum(1) * keep).sum() / max(keep.sum(), 1)
  np.testing.assert_allclose(o["loss_and_metrics"][1]["pem_loss"], want, rtol=1e-5)


def test_entity_similarity_rejects_bad_is_image(model):
  crop = jnp.zeros((2, 2, 32, 32, 3))
  with pytest.raises(ValueError, match=r"is_image has shape \(3,\)"):
    model.prompter.entity_similarity(crop, is_image=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="prompts='text'"):
    model.prompter.entity_similarity(crop, "text")


def test_jitted_loss_finite_and_metrics(model, batch, eval_out):
  loss, metrics = eval_out["loss_and_metrics"]
  assert np.isfinite(float(loss))
  for k in ("vtc_loss", "vtm_loss", "mlm_loss", "pem_loss", "loss", "temp", "vtm_acc", "mlm_acc"):
    assert k in metrics, k
  np.testing.assert_allclose(loss, sum(metrics[f"{k}_loss"] for k in WEIGHTS), rtol=1e-5)
  with pytest.raises(ValueError, match="unknown names"):
    steps.weighted_loss(alpro.FAMILY, model, batch, weights=dict(itc=1.0), rng=jax.random.key(0), train=False)


def test_gradient_reaches_temp_not_prompter(eval_out):
  grads = eval_out["grads"]
  assert abs(float(grads.temp[...])) > 0
  prompter_grads = jax.tree.leaves(nnx.state(grads.prompter, nnx.Param))
  assert prompter_grads and all(not np.asarray(g).any() for g in prompter_grads)


def test_temperature_clamped_with_straight_through_gradient(eval_out):
  assert float(eval_out["temp_clamped"]) == pytest.approx(1.5)   # 3 * clip(2.0) = 3 * 0.5
  assert float(eval_out["temp_grad"].temp[...]) == pytest.approx(3.0)


def test_retrieval_scores(model, eval_out):
  o = eval_out
  videos, texts, vtc, vtm = o["videos"], o["texts"], o["vtc"], o["vtm"]
  assert vtc.shape == vtm.shape == (B, 2)
  np.testing.assert_allclose(vtc, texts["text_feat"] @ videos["video_feat"].T / 0.07, rtol=1e-5)
  np.testing.assert_allclose(vtm[2, 1], o["pair_match"], rtol=1e-5)
  with pytest.raises(ValueError, match="retrieval mode"):
    alpro.retrieval_scores(model, texts, videos, mode="itc")


def test_video_with_more_frames_resizes_time_embed(eval_out):
  assert eval_out["video_4_frames"].shape == (2, 1 + 4, tiny().video.width)


def _qa_everything(m, batch):
  logits = alpro.qa_logits(m, batch)
  video = m.encode_video(batch["video"])
  fused = m.fuse(m.encode_text(batch["text_ids"], batch["text_mask"]), batch["text_mask"], video)
  by_hand = m.classifier(fused[:, 0])
  loss, metrics = steps.weighted_loss(alpro.FAMILY, m, batch, weights=dict(qa=1.0), rng=jax.random.key(0),
                                train=False)
  return logits, by_hand, loss, metrics


def test_qa_logits_contract(model, batch, fast_jit):
  qa = alpro.build(tiny(head="qa", num_labels=5, pem=False), rngs=nnx.Rngs(params=1))
  qa_batch = {k: batch[k] for k in ("video", "text_ids", "text_mask", "label")}
  logits, by_hand, loss, metrics = fast_jit(_qa_everything)(qa, qa_batch)
  assert logits.shape == (B, 5) and logits.dtype == jnp.float32
  np.testing.assert_allclose(logits, by_hand, rtol=1e-5, atol=1e-6)
  lp = np.asarray(logits, np.float64)
  lp = lp - lp.max(1, keepdims=True)
  lp -= np.log(np.exp(lp).sum(1, keepdims=True))
  labels = np.asarray(qa_batch["label"])
  np.testing.assert_allclose(loss, -lp[np.arange(B), labels].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["qa_acc"], np.mean(lp.argmax(1) == labels))
  with pytest.raises(ValueError, match="head='qa'"):
    alpro.qa_logits(model, qa_batch)


# -- train mode: a vtm-only loss (video + text encoders + fusion layers, all with dropout) --------
def _train_loss(m, batch, rng):
  return steps.weighted_loss(alpro.FAMILY, m, batch, weights=dict(vtm=1.0), rng=rng, train=True)[0]


@pytest.fixture(scope="module")
def train_losses(fast_jit):
  """Losses of the plain model at two dropout keys, and of its remat / bfloat16 twins."""
  run = fast_jit(_train_loss)
  b = make_batch(tiny())
  out = {}
  for name, kw in (("plain", {}), ("remat", dict(remat=True)), ("bf16", dict(dtype="bfloat16"))):
    m = alpro.build(tiny(pem=False, **kw), rngs=nnx.Rngs(params=0))
    out[name] = run(m, b, jax.random.key(1))
    if name == "plain":
      out["plain_other_rng"] = run(m, b, jax.random.key(2))   # same program, no recompile
    if name == "bf16":
      out["bf16_param_dtype"] = m.vision_proj.kernel[...].dtype
  return out


def test_train_mode_dropout(train_losses):
  plain, other = float(train_losses["plain"]), float(train_losses["plain_other_rng"])
  assert np.isfinite(plain) and other != plain


def test_bf16_compute_runs(train_losses):
  assert train_losses["bf16_param_dtype"] == jnp.float32            # params stay float32
  loss = train_losses["bf16"]
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  np.testing.assert_allclose(loss, train_losses["plain"], rtol=0.1)


def test_remat_matches_plain(train_losses):
  """Same loss with remat, dropout included (gradients through remat: test_layers)."""
  np.testing.assert_allclose(train_losses["remat"], train_losses["plain"], rtol=1e-5)

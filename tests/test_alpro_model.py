"""ALPRO on the tiny config: shapes per head, jitted loss, bf16, remat, temperature gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vlx  # noqa: F401
from configs.alpro_pretrain import alpro_model
from vlx import registry
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


@pytest.fixture(scope="module")
def model():
  return alpro.build(tiny(), rngs=nnx.Rngs(params=0))


@nnx.jit
def train_loss(m, batch, rng):
  """Train mode (dropout on) without PEM: a small program for the bf16 / remat comparisons."""
  return alpro.loss_fn(m, batch, weights=dict(vtc=1.0, vtm=1.0, mlm=1.0), rng=rng, train=True)


@pytest.fixture(scope="module")
def plain_train_loss():
  m = alpro.build(tiny(pem=False), rngs=nnx.Rngs(params=0))
  return train_loss(m, make_batch(tiny()), jax.random.key(1))[0]


@nnx.jit
def jit_value_and_grad(m, batch, rng):
  """One compile serves the finite-loss, metrics, temp-gradient and frozen-prompter checks."""
  f = lambda mm: alpro.loss_fn(mm, batch, weights=WEIGHTS, rng=rng, train=False)
  return nnx.value_and_grad(f, has_aux=True)(m)


@pytest.fixture(scope="module")
def loss_and_grads(model):
  return jit_value_and_grad(model, make_batch(tiny()), jax.random.key(0))


def test_registry_exports_contract():
  mod = registry.get("alpro")
  for name in ("build", "loss_fn", "encode_videos", "encode_texts", "retrieval_scores"):
    assert callable(getattr(mod, name))


@nnx.jit
def _head_outputs(m, batch):
  video = m.encode_video(batch["video"])
  text = m.encode_text(batch["text_ids"], batch["text_mask"])
  fused = m.fuse(text, batch["text_mask"], video)
  return dict(video=video, text=text, fused=fused, video_feat=m.video_feat(video),
              text_feat=m.text_feat(text), itm=m.itm_logits(fused), mlm=m.mlm_logits(fused, L),
              pem=m.pem_logits(fused, L, batch["mpm_mask"]))


def test_shapes_of_every_head(model):
  c = tiny()
  batch = make_batch(c)
  n = (c.video.img_size // c.video.patch_size) ** 2
  d = c.text.hidden_size
  o = _head_outputs(model, batch)
  assert o["video"].shape == (B, 1 + n, d) and o["text"].shape == (B, L, d)
  assert o["fused"].shape == (B, L + 1 + n, d)
  assert o["video_feat"].shape == (B, c.embed_dim)
  np.testing.assert_allclose(jnp.linalg.norm(o["text_feat"], axis=-1), 1.0, rtol=1e-5)
  assert o["itm"].shape == (B, 2)
  assert o["mlm"].shape == (B, L, c.text.vocab_size)
  assert o["pem"].shape == (B, c.num_entities)
  assert model.prompter.head == "prompter" and not hasattr(model.prompter, "prompter")
  qa = alpro.build(tiny(head="qa", num_labels=5, pem=False), rngs=nnx.Rngs(params=1))
  assert not hasattr(qa, "mlm_head")
  assert qa.classifier.fc2.kernel.shape == (2 * d, 5)
  ret = alpro.build(tiny(head="retrieval", pem=False), rngs=nnx.Rngs(params=1))
  assert not hasattr(ret, "prompter") and not hasattr(ret, "pem_head")


def test_prompt_features_are_state_not_params(model):
  assert isinstance(model.prompter.video_prompt_feat, PromptFeatures)
  params = nnx.state(model, nnx.Param)
  assert not any("prompt_feat" in "/".join(map(str, k)) for k, _ in nnx.to_flat_state(params))
  p = alpro.build(tiny(head="prompter", pem=False), rngs=nnx.Rngs(params=2))
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 100, size=(2 * 16, 5)), jnp.int32)
  p.build_prompt_features(ids, jnp.ones_like(ids), ids, jnp.ones_like(ids), num_templates=2)
  feats = p.text_feat(p.encode_text(ids, jnp.ones_like(ids))).reshape(2, 16, -1).mean(0)
  np.testing.assert_allclose(p.video_prompt_feat[...], feats, rtol=1e-5, atol=1e-6)


def test_jitted_loss_finite_and_train_mode(model, loss_and_grads):
  batch = make_batch(tiny())
  (loss, metrics), _ = loss_and_grads
  assert np.isfinite(float(loss))
  for k in ("vtc_loss", "vtm_loss", "mlm_loss", "pem_loss", "loss", "temp", "vtm_acc", "mlm_acc"):
    assert k in metrics, k
  np.testing.assert_allclose(loss, sum(metrics[f"{k}_loss"] for k in WEIGHTS), rtol=1e-5)
  with pytest.raises(ValueError, match="unknown names"):
    alpro.loss_fn(model, batch, weights=dict(itc=1.0), rng=jax.random.key(0), train=False)


def test_gradient_reaches_temp_not_prompter(loss_and_grads):
  _, grads = loss_and_grads
  assert abs(float(grads.temp[...])) > 0
  prompter_grads = jax.tree.leaves(nnx.state(grads.prompter, nnx.Param))
  assert all(float(jnp.abs(g).max()) == 0 for g in prompter_grads)


def test_temperature_clamped_with_straight_through_gradient():
  m = alpro.build(tiny(head="retrieval", pem=False), rngs=nnx.Rngs(params=0))
  m.temp[...] = jnp.float32(2.0)
  assert float(m.temperature()) == pytest.approx(0.5)
  g = nnx.grad(lambda mm: mm.temperature() * 3.0)(m)
  assert float(g.temp[...]) == pytest.approx(3.0)


def test_train_mode_dropout(plain_train_loss):
  m = alpro.build(tiny(pem=False), rngs=nnx.Rngs(params=0))
  other_rng = train_loss(m, make_batch(tiny()), jax.random.key(2))[0]
  assert np.isfinite(float(plain_train_loss)) and float(other_rng) != float(plain_train_loss)


def test_bf16_compute_runs(plain_train_loss):
  m = alpro.build(tiny(dtype="bfloat16", pem=False), rngs=nnx.Rngs(params=0))
  assert m.vision_proj.kernel[...].dtype == jnp.float32            # params stay float32
  loss, _ = train_loss(m, make_batch(tiny()), jax.random.key(1))
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  np.testing.assert_allclose(loss, plain_train_loss, rtol=0.1)


def test_remat_matches_plain(plain_train_loss):
  """Same loss with remat, dropout included (gradients through remat: test_layers)."""
  m = alpro.build(tiny(remat=True, pem=False), rngs=nnx.Rngs(params=0))
  loss, _ = train_loss(m, make_batch(tiny()), jax.random.key(1))
  np.testing.assert_allclose(loss, plain_train_loss, rtol=1e-5)


@nnx.jit
def _retrieval(m, batch):
  videos = alpro.encode_videos(m, dict(video=batch["video"][:2]))
  texts = alpro.encode_texts(m, batch)
  fused = m.fuse(texts["text_embeds"][2:3], texts["text_mask"][2:3], videos["video_embeds"][1:2])
  return (videos, texts, alpro.retrieval_scores(m, texts, videos, mode="vtc"),
          alpro.retrieval_scores(m, texts, videos, mode="vtm"),
          jax.nn.softmax(m.itm_logits(fused), -1)[0, 1])


def test_retrieval_scores(model):
  videos, texts, vtc, vtm, p = _retrieval(model, make_batch(tiny()))
  assert vtc.shape == vtm.shape == (B, 2)
  np.testing.assert_allclose(vtc, texts["text_feat"] @ videos["video_feat"].T / 0.07, rtol=1e-5)
  np.testing.assert_allclose(vtm[2, 1], p, rtol=1e-5)
  with pytest.raises(ValueError, match="retrieval mode"):
    alpro.retrieval_scores(model, texts, videos, mode="itc")


def test_video_with_more_frames_resizes_time_embed(model):
  batch = make_batch(tiny(), b=2)
  video = jnp.concatenate([batch["video"], batch["video"]], axis=1)   # 4 frames, model has 2
  out = nnx.jit(lambda m, v: m.encode_video(v))(model, video)
  assert out.shape == (2, 1 + 4, tiny().video.width)

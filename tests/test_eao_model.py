"""Everything-at-Once model (tiny sizes, built inside jit) and the combinatorial NormSoftmax loss:
padding never leaks into embeddings, the masking token for empty inputs, pair / late-fusion
embeddings, the TV-only variant, audio token pooling against a direct implementation, and the
loss's row selection, direction sum, weights and zero gradients for excluded rows."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import FAST_COMPILE
from vlx.models.eao import model as em
from vlx.objectives.norm_softmax import combinatorial_loss, norm_softmax

B = 4


def _batch(seed=0):
  r = np.random.default_rng(seed)
  text_mask = np.zeros((B, 5), np.float32)
  for i, n in enumerate([5, 0, 3, 1]):        # sample 1: no text
    text_mask[i, :n] = 1
  video_mask = np.zeros((B, 3), np.float32)
  for i, n in enumerate([3, 2, 0, 1]):        # sample 2: no video
    video_mask[i, :n] = 1
  audio_mask = np.zeros((B, 256), np.float32)
  nframes = np.array([256, 100, 0, 256])     # sample 2: no audio either
  for i, n in enumerate(nframes):
    audio_mask[i, :n] = 1
  return dict(text=(r.normal(size=(B, 5, 32)) * text_mask[..., None]).astype(np.float32),
              text_mask=text_mask,
              video=(r.normal(size=(B, 3, 48)) * video_mask[..., None]).astype(np.float32),
              video_mask=video_mask, audio=r.normal(size=(B, 40, 256)).astype(np.float32),
              audio_mask=audio_mask, audio_STFT_nframes=nframes)


@pytest.fixture(scope="module")
def outputs():
  """Forward of one tiny model on a batch and on the batch with different padding values; the
  TV-only model's outputs (shapes only)."""
  cfg = em.model_config("tiny")
  cfg.depth = 1
  tv = em.model_config("tiny")
  tv.update(depth=1, tv_only=True)
  batch = _batch()
  noisy = dict(batch)
  r = np.random.default_rng(5)
  noisy["text"] = batch["text"] + r.normal(size=batch["text"].shape).astype(np.float32) * (
      1 - batch["text_mask"][..., None])
  noisy["video"] = batch["video"] + 3.0 * (1 - batch["video_mask"][..., None])

  def run(b1):
    model = em.build(cfg, rngs=nnx.Rngs(0))
    out = model(b1, force_cross_modal=True, return_intermediates=True)
    return out, model.fusion.masking_token[...]
  fn = jax.jit(run, compiler_options=FAST_COMPILE)   # one compile, two batches of equal shapes
  (a, token), (b, _) = fn(batch), fn(noisy)
  c = jax.eval_shape(lambda b1: em.build(tv, rngs=nnx.Rngs(0))(b1, force_cross_modal=True), batch)
  return (a, b, c, token), batch


def test_padding_does_not_change_embeddings(outputs):
  (a, b, _, _), _ = outputs
  for k in ("text_embed", "video_embed", "tv_embed", "ta_embed", "va_embed", "t+v_embed"):
    np.testing.assert_allclose(a[k], b[k], atol=1e-5, err_msg=k)


def test_empty_inputs_get_the_masking_token(outputs):
  (a, _, _, token), batch = outputs
  assert a["text_nonempty_input_mask"].tolist() == [True, False, True, True]
  assert a["video_nonempty_input_mask"].tolist() == [True, True, False, True]
  assert a["audio_nonempty_input_mask"].tolist() == [True, True, False, True]
  np.testing.assert_array_equal(a["text_tokens"][1, 0], token)
  np.testing.assert_array_equal(a["video_tokens"][2, 0], token)
  assert a["text_attention_mask"][1].tolist() == [1, 0, 0, 0, 0]
  assert a["audio_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0],
                                                [1, 1, 1, 1]]
  assert a["audio_davenet_features"].shape == (B, 4, 80)
  # non-empty samples keep their own first token (the LayerNorm output, not the token)
  assert not np.allclose(a["text_tokens"][0, 0], token)


def test_pair_and_late_fusion_embeddings(outputs):
  (a, _, _, _), _ = outputs
  n = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
  np.testing.assert_allclose(a["t+a_embed"], (n(a["text_embed"]) + n(a["audio_embed"])) / 2,
                             atol=1e-6)
  # pair tokens: [text ; video] in that order; the single pass differs from the joint one
  assert a["fusion_tv_text_tokens"].shape == a["text_tokens"].shape
  assert not np.allclose(a["fusion_tv_text_embed"], a["fusion_t_text_embed"])
  for k in ("tv_embed", "ta_embed", "va_embed"):
    assert np.all(np.linalg.norm(a[k], axis=-1) <= 1 + 1e-5)


def test_tv_only_variant_has_no_audio(outputs):
  (_, _, c, _), _ = outputs
  assert set(c) == {"text_embed", "video_embed", "tv_embed", "t+v_embed",
                    "text_nonempty_input_mask", "video_nonempty_input_mask"}


def _adaptive(x, k, op):
  n = x.shape[0]
  return np.stack([op(x[(i * n) // k: -((-(i + 1) * n) // k)], axis=0) for i in range(k)])


@pytest.mark.parametrize("strategy", ["clip", "nearest", "max_pool", "avg_pool"])
def test_audio_pooling_strategies(strategy):
  r = np.random.default_rng(0)
  tok = r.normal(size=(3, 10, 2)).astype(np.float32)
  mask = np.ones((3, 10), np.float32)
  n_valid = np.array([10, 7, 3])           # the last one is short: always the first k ('clip')
  got, gmask = em.pool_audio_tokens(jnp.asarray(tok), jnp.asarray(mask), jnp.asarray(n_valid), 4,
                                    strategy)
  assert gmask.shape == (3, 4)
  for i, nv in enumerate(n_valid):
    x = tok[i, :nv]
    if strategy == "clip" or nv <= 4:
      want = tok[i, :4]
    elif strategy == "nearest":
      want = x[(np.arange(4) * nv) // 4]
    else:
      want = _adaptive(x, 4, np.max if strategy == "max_pool" else np.mean)
    np.testing.assert_allclose(np.asarray(got[i]), want, rtol=1e-6, err_msg=f"{strategy} {i}")
  same, _ = em.pool_audio_tokens(jnp.asarray(tok), jnp.asarray(mask), jnp.asarray(n_valid), 10,
                                 "max_pool")
  np.testing.assert_array_equal(np.asarray(same), tok)   # not longer than k: unchanged


def _log_softmax(z, axis):
  z = z - z.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def test_norm_softmax_selects_rows_and_sums_both_directions():
  r = np.random.default_rng(0)
  sim = r.uniform(-1, 1, size=(5, 5)).astype(np.float32)
  keep = np.array([True, False, True, True, False])
  s = sim[keep][:, keep] / 0.05
  want = -np.mean(np.diag(_log_softmax(s, 1))) - np.mean(np.diag(_log_softmax(s, 0)))
  got = norm_softmax(jnp.asarray(sim), jnp.asarray(keep))
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  g = jax.grad(lambda x: norm_softmax(x, jnp.asarray(keep)))(jnp.asarray(sim))
  assert np.all(np.asarray(g)[~keep] == 0) and np.all(np.asarray(g)[:, ~keep] == 0)
  assert float(norm_softmax(jnp.asarray(sim), jnp.zeros(5, bool))) == 0.0


def test_combinatorial_loss_pairs_and_weights():
  r = np.random.default_rng(1)
  emb = {k: jnp.asarray(r.normal(size=(6, 8)).astype(np.float32)) for k in
         ("text_embed", "video_embed", "audio_embed", "tv_embed", "ta_embed", "va_embed")}
  nonempty = {"text": jnp.asarray([1, 1, 0, 1, 1, 1], bool),
              "video": jnp.ones(6, bool), "audio": jnp.asarray([1, 1, 1, 1, 0, 1], bool)}
  w = dict(tv=1.0, ta=0.1, va=0.1, t_va=0.1, v_ta=0.1, a_tv=0.1)
  out = combinatorial_loss(emb, nonempty, w)
  cos = lambda a, b: (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
      b / np.linalg.norm(b, axis=1, keepdims=True)).T
  keep = np.array([1, 1, 0, 1, 0, 1], bool)        # t & v & a
  want = float(norm_softmax(jnp.asarray(cos(np.asarray(emb["text_embed"])[keep],
                                            np.asarray(emb["va_embed"])[keep]))))
  np.testing.assert_allclose(float(out["t_va"]), want, rtol=1e-5)
  total = sum(w[k] * float(out[k]) for k in w) / 1.5
  np.testing.assert_allclose(float(out["total"]), total, rtol=1e-6)
  only_tv = combinatorial_loss({k: emb[k] for k in ("text_embed", "video_embed")}, nonempty, w)
  assert set(only_tv) == {"tv", "total"} and float(only_tv["total"]) == float(only_tv["tv"])


def test_family_objectives_return_the_active_pairs(outputs):
  """losses.objectives: unweighted per-pair losses; weights w / Σw reproduce the total."""
  from vlx.models.eao import losses  # pylint: disable=import-outside-toplevel
  (a, _, _, _), batch = outputs
  out = {k: jnp.asarray(v) for k, v in a.items()}
  w = dict(tv=1.0, ta=0.1, va=0.1, t_va=0.1, v_ta=0.1, a_tv=0.1)
  got, metrics = losses.objectives(lambda _, train: out, batch, active=frozenset(w),
                                   train=False)   # the model's forward, already computed
  nonempty = {m: out[f"{m}_nonempty_input_mask"] for m in ("text", "video", "audio")}
  ref_total = combinatorial_loss(out, nonempty, w)["total"]
  assert set(got) == set(losses.OBJECTIVES)
  total = sum(w[k] / 1.5 * float(got[k]) for k in got)
  np.testing.assert_allclose(total, float(ref_total), rtol=1e-5)
  assert float(metrics["text_nonempty"]) == 0.75
  only = losses.objectives(lambda _, train: out, batch, active=frozenset({"tv"}))[0]
  assert set(only) == {"tv"}


def test_partial_batches_give_the_embeddings_of_the_present_modalities():
  """Retrieval encodes texts and videos(+audio) separately: a batch with some modalities only."""
  cfg = em.model_config("tiny")
  batch = _batch()
  text_only = {k: batch[k] for k in ("text", "text_mask")}
  va = {k: v for k, v in batch.items() if not k.startswith("text")}
  run = lambda b: em.build(cfg, rngs=nnx.Rngs(0))(b, force_cross_modal=True)
  assert set(jax.eval_shape(run, text_only)) == {"text_embed", "text_nonempty_input_mask"}
  out = jax.eval_shape(run, va)
  assert {"video_embed", "audio_embed", "va_embed", "v+a_embed"} <= set(out)
  assert not any(k.startswith(("text", "t")) for k in out)
  assert out["va_embed"].shape == (B, 96)

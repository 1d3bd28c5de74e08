"""Shared objectives against numpy formulas (spec §5.1–5.4)."""
import jax
import jax.numpy as jnp
import numpy as np

import vlx  # noqa: F401
from vlx.objectives import contrastive, masked_lm, matching, pem

RTOL = dict(rtol=1e-5, atol=1e-6)


def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def normed(rng, shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_vtc_matches_numpy():
  rng = np.random.default_rng(0)
  v, t, temp = normed(rng, (5, 8)), normed(rng, (5, 8)), 0.07
  out = contrastive.vtc(jnp.asarray(v), jnp.asarray(t), jnp.float32(temp))
  s = v @ t.T / temp
  l_v2t = -np.mean(np.diag(np_log_softmax(s)))
  l_t2v = -np.mean(np.diag(np_log_softmax(s.T)))
  np.testing.assert_allclose(out["sim_v2t"], s, **RTOL)
  np.testing.assert_allclose(out["loss_v2t"], l_v2t, **RTOL)
  np.testing.assert_allclose(out["loss"], (l_v2t + l_t2v) / 2, **RTOL)
  targets = np.array([1, 0, 2, 4, 3])
  np.testing.assert_allclose(contrastive.info_nce(jnp.asarray(s), jnp.asarray(targets)),
                             -np.mean(np_log_softmax(s)[np.arange(5), targets]), **RTOL)


def test_negative_weights_and_sampling():
  rng = np.random.default_rng(1)
  sim = rng.normal(size=(4, 4)).astype(np.float32) * 3
  w = np.asarray(matching.negative_weights(jnp.asarray(sim)))
  want = np.exp(sim - np.where(np.eye(4), np.inf, 0))
  want = want / want.sum(1, keepdims=True)
  np.testing.assert_allclose(w, want, **RTOL)
  assert np.all(np.diag(w) == 0)
  keys = jax.random.split(jax.random.key(0), 4000)
  draws = np.asarray(jax.jit(jax.vmap(lambda k: matching.sample_negatives(k, jnp.asarray(sim))))(
      keys))
  assert np.all(draws != np.arange(4))              # self is never drawn
  freq = np.stack([np.bincount(draws[:, i], minlength=4) / 4000 for i in range(4)])
  np.testing.assert_allclose(freq, w, atol=0.04)


def test_matching_loss():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(9, 2)).astype(np.float32)
  labels = np.array([1] * 3 + [0] * 6)
  out = matching.matching_loss(jnp.asarray(logits), jnp.asarray(labels))
  np.testing.assert_allclose(out["loss"], -np.mean(np_log_softmax(logits)[np.arange(9), labels]),
                             **RTOL)
  np.testing.assert_allclose(out["acc"], np.mean(logits.argmax(1) == labels))


def test_masked_lm_ignores_minus_100():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
  labels = np.full((2, 5), -100)
  labels[0, 1], labels[1, 3], labels[1, 4] = 4, 7, 0
  out = masked_lm.masked_lm(jnp.asarray(logits), jnp.asarray(labels))
  lp = np_log_softmax(logits)
  want = -np.mean([lp[0, 1, 4], lp[1, 3, 7], lp[1, 4, 0]])
  np.testing.assert_allclose(out["loss"], want, **RTOL)
  assert int(out["count"]) == 3
  none = masked_lm.masked_lm(jnp.asarray(logits), jnp.full((2, 5), -100))
  assert float(none["loss"]) == 0.0


def test_pem_pseudo_labels_and_soft_ce():
  rng = np.random.default_rng(4)
  sim = rng.normal(size=(4, 6)).astype(np.float32)
  sim[1, 0] = 10.0                                  # best entity is #0 -> ignored (reference rule)
  soft, ignore = pem.pseudo_labels(jnp.asarray(sim))
  np.testing.assert_allclose(soft, np.exp(np_log_softmax(sim)), **RTOL)
  np.testing.assert_array_equal(ignore, sim.argmax(1) == 0)
  logits = rng.normal(size=(4, 6)).astype(np.float32)
  ce = -(np.asarray(soft) * np_log_softmax(logits)).sum(1)
  ig = np.asarray(ignore)
  want = np.where(ig, 0, ce).sum() / (4 - ig.sum())
  np.testing.assert_allclose(pem.soft_ce(jnp.asarray(logits), soft, ignore), want, **RTOL)
  all_ignored = pem.soft_ce(jnp.asarray(logits), soft, jnp.ones(4, bool))
  assert float(all_ignored) == 0.0

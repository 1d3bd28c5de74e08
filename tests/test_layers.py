"""Shared layers vs hand-computed numpy (attention, MLP, LayerNorm, BERT) + TimeSformer layout."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vlx  # noqa: F401
from vlx.layers import common
from vlx.layers import attention
from vlx.layers.attention import Attention, additive_mask
from vlx.layers.bert import BertEncoder, BertLayer, MlmHead
from vlx.layers.mlp import Mlp
from vlx.layers.timesformer import TimeSformer, temporal_pool

RTOL = dict(rtol=1e-5, atol=1e-5)
erf = np.vectorize(math.erf)


def np_gelu(x):
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_ln(x, scale, bias, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def lin(layer):
  return lambda x: x @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])


def np_attention(att, x, kv, mask_add, heads):
  q, k, v = lin(att.query)(x), lin(att.key)(kv), lin(att.value)(kv)
  split = lambda a: a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + mask_add
  o = (np_softmax(s) @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
  return lin(att.out)(o)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_attention_self_and_cross_with_mask(rng, fast_jit):
  att = Attention(16, 4, kv_dim=8, rngs=nnx.Rngs(params=0))
  x = rng.normal(size=(2, 5, 16)).astype(np.float32)
  kv = rng.normal(size=(2, 7, 8)).astype(np.float32)
  mask = np.array([[1] * 7, [1] * 4 + [0] * 3])
  ours = fast_jit(lambda a, x, kv, m: a(x, kv, additive_mask(m)))(att, x, kv, mask)
  want = np_attention(att, x, kv, ((1 - mask) * -10000.0)[:, None, None, :], 4)
  np.testing.assert_allclose(ours, want, **RTOL)
  self_att = Attention(16, 4, rngs=nnx.Rngs(params=1))
  np.testing.assert_allclose(fast_jit(lambda a, x: a(x))(self_att, x),
                             np_attention(self_att, x, x, 0.0, 4), **RTOL)


def test_attention_dropout_needs_rngs_and_bf16_runs(rng, fast_jit):
  att = Attention(8, 2, attn_dropout=0.5, dtype="bfloat16", rngs=nnx.Rngs(params=0))
  x = jnp.asarray(rng.normal(size=(1, 3, 8)), jnp.float32)
  with pytest.raises(ValueError, match="rngs"):
    att(x, deterministic=False)
  plain, a = fast_jit(lambda m, x: (m(x), m(x, deterministic=False, rngs=nnx.Rngs(dropout=1))))(
      att, x)
  assert plain.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(a, np.float32)))
  assert not np.allclose(np.asarray(a, np.float32), np.asarray(plain, np.float32))


@pytest.mark.parametrize("mask_shape", [None, (3, 1, 1, 7), (2, 1, 1, 1, 7), (1, 4, 5, 7), (5, 7), (2, 3, 4, 5, 7)])
def test_batched_and_fused_attention_match_numpy(rng, mask_shape, fast_jit):
  """Leading dims [2, 3], 4 heads of width 6, Lq 5, Lk 7, masks of every broadcast form."""
  q, k, v = (rng.normal(size=(2, 3, n, 4, 6)).astype(np.float32) for n in (5, 7, 7))
  mask = None if mask_shape is None else rng.normal(size=mask_shape).astype(np.float32)
  s = np.einsum("abqhd,abkhd->abhqk", q, k) / np.sqrt(6) + (0.0 if mask is None else mask)
  probs = np_softmax(s)
  want = np.einsum("abhqk,abkhd->abqhd", probs, v)
  ctx, got_probs = fast_jit(attention.batched_attention)(q, k, v, mask)
  np.testing.assert_allclose(ctx, want, **RTOL)
  np.testing.assert_allclose(got_probs, probs, **RTOL)
  # Off-GPU the cuDNN request is refused at trace time and the XLA form answers: same numbers.
  np.testing.assert_allclose(fast_jit(attention.fused_attention)(q, k, v, mask), want, **RTOL)
  assert not attention.fused_attention_applies(jnp.float32)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_mlp(rng, act, fast_jit):
  mlp = Mlp(6, 12, 3, activation=act, rngs=nnx.Rngs(params=0))
  x = rng.normal(size=(4, 6)).astype(np.float32)
  f = np_gelu if act == "gelu" else (lambda h: np.maximum(h, 0))
  np.testing.assert_allclose(fast_jit(lambda m, x: m(x))(mlp, x),
                             lin(mlp.fc2)(f(lin(mlp.fc1)(x))), **RTOL)
  assert mlp.fc1.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")


def test_layer_norm_eps_and_linear_names(rng, fast_jit):
  ln = common.layer_norm(5, 1e-12, rngs=nnx.Rngs(params=0))
  ln.scale[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
  ln.bias[...] = jnp.asarray(rng.normal(size=5), jnp.float32)
  x = rng.normal(size=(3, 5)).astype(np.float32) * 1e-3
  np.testing.assert_allclose(fast_jit(lambda m, x: m(x))(ln, x),
                             np_ln(x, ln.scale[...], ln.bias[...], 1e-12),
                             rtol=1e-4, atol=1e-4)
  dense = common.linear(4, 2, ("embed", "vocab"), rngs=nnx.Rngs(params=0))
  assert dense.kernel.shape == (4, 2)
  assert dense.kernel.get_metadata()["out_sharding"] == ("embed", "vocab")


def test_bert_layer_post_ln(rng, fast_jit):
  layer = BertLayer(8, 2, 16, ln_eps=1e-12, dropout=0.1, attn_dropout=0.1,
                    rngs=nnx.Rngs(params=0))
  x = rng.normal(size=(2, 4, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
  ours = fast_jit(lambda m, x, k: m(x, additive_mask(k)))(layer, x, mask)
  ln = lambda m, h: np_ln(h, np.asarray(m.scale[...]), np.asarray(m.bias[...]), 1e-12)
  a = ln(layer.attn_norm, x + np_attention(layer.attn, x, x,
                                           ((1 - mask) * -10000.0)[:, None, None, :], 2))
  want = ln(layer.mlp_norm, a + lin(layer.mlp.fc2)(np_gelu(lin(layer.mlp.fc1)(a))))
  np.testing.assert_allclose(ours, want, **RTOL)


def test_bert_encoder_layer_ranges_and_mlm_head(rng, fast_jit, fast_build):
  enc = fast_build(lambda: BertEncoder(vocab_size=20, hidden_size=8, num_layers=3, num_heads=2,
                                       intermediate_size=16, max_position_embeddings=10,
                                       rngs=nnx.Rngs(params=0)))
  ids = jnp.asarray(rng.integers(0, 20, size=(2, 6)))
  mask = jnp.ones((2, 6), jnp.int32)
  head = MlmHead(8, 20, ln_eps=1e-12, rngs=nnx.Rngs(params=1))

  def run(e, ids, mask, head):
    full = e(ids, mask)
    return (full, e.run_layers(e(ids, mask, 0, 1), mask, 1), e(ids, mask, 0, 0),
            head(full, e.embeddings.word.embedding[...]))

  full, split, embedded, logits = fast_jit(run)(enc, ids, mask, head)
  np.testing.assert_allclose(full, split, **RTOL)
  emb = enc.embeddings
  want = np.asarray(emb.word.embedding[...])[np.asarray(ids)] + \
      np.asarray(emb.position.embedding[...])[:6] + np.asarray(emb.token_type.embedding[...])[0]
  np.testing.assert_allclose(embedded,
                             np_ln(want, emb.norm.scale[...], emb.norm.bias[...], 1e-12), **RTOL)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    enc(jnp.zeros((1, 11), jnp.int32), jnp.ones((1, 11)))
  h = np.asarray(full)
  t = np_ln(np_gelu(lin(head.dense)(h)), head.norm.scale[...], head.norm.bias[...], 1e-12)
  want = t @ np.asarray(emb.word.embedding[...]).T + np.asarray(head.bias[...])
  np.testing.assert_allclose(logits, want, **RTOL)


def test_timesformer_token_order_and_pooling(fast_jit, fast_build):
  """Token 1 + n*T + t = patch n of frame t (+pos[1+n] +time[t]); CLS = cls + pos[0]."""
  tsf = fast_build(lambda: TimeSformer(img_size=32, patch_size=16, num_frames=3, width=8,
                                       depth=1, num_heads=2, rngs=nnx.Rngs(params=0)))
  rng = np.random.default_rng(1)
  tsf.time_embed[...] = jnp.asarray(rng.normal(size=(1, 3, 8)), jnp.float32)
  video = jnp.asarray(rng.normal(size=(2, 3, 32, 32, 3)), jnp.float32)
  tokens, full, pooled = fast_jit(lambda m, v: (m.embed(v), m(v), temporal_pool(m.embed(v), 3)))(
      tsf, video)
  tokens = np.asarray(tokens)
  assert tokens.shape == (2, 1 + 4 * 3, 8)
  k = np.asarray(tsf.patch_embed.kernel[...]).reshape(-1, 8)
  pos, time = np.asarray(tsf.pos_embed[...])[0], np.asarray(tsf.time_embed[...])[0]
  v = np.asarray(video)
  for n in range(4):
    y, x = divmod(n, 2)
    for t in range(3):
      patch = v[1, t, 16 * y:16 * y + 16, 16 * x:16 * x + 16].reshape(-1)
      want = patch @ k + np.asarray(tsf.patch_embed.bias[...]) + pos[1 + n] + time[t]
      np.testing.assert_allclose(tokens[1, 1 + n * 3 + t], want, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tokens[0, 0], np.asarray(tsf.cls_token[...])[0, 0] + pos[0], **RTOL)
  pooled = np.asarray(pooled)
  np.testing.assert_allclose(pooled[:, 2], tokens[:, 4:7].mean(1), **RTOL)
  assert full.shape == (2, 5, 8)


def test_timesformer_drop_path_and_remat(fast_jit, fast_build):
  kw = dict(img_size=32, patch_size=16, num_frames=2, width=8, depth=2, num_heads=2,
            drop_path_rate=0.5)
  video = jnp.ones((4, 2, 32, 32, 3))

  @fast_jit
  def run(m):
    grad = nnx.grad(lambda mm: jnp.sum(mm(video) ** 2))(m).blocks[1].mlp.fc1.kernel[...]
    train = [m(video, deterministic=False, rngs=nnx.Rngs(dropout=s)) for s in (0, 1)]
    return m(video), grad, train

  tsf = fast_build(lambda: TimeSformer(**kw, rngs=nnx.Rngs(params=0)))
  out, grad, (a, b) = run(tsf)
  out_r, grad_r, _ = run(fast_build(lambda: TimeSformer(**kw, remat=True,
                                                        rngs=nnx.Rngs(params=0))))
  np.testing.assert_allclose(out, out_r, **RTOL)
  np.testing.assert_allclose(grad_r, grad, rtol=1e-4, atol=1e-6)
  assert not np.allclose(a, b) and not np.allclose(a, out)
  assert tsf.blocks[0].drop_path == 0.0 and tsf.blocks[1].drop_path == 0.5


@pytest.mark.parametrize("old,new", [(2, 4), (4, 8), (4, 16), (8, 4), (3, 5)])
def test_nearest_resize_matches_torch(old, new):
  import torch  # noqa: PLC0415  (the [test] extra; only this test needs it)
  x = np.random.default_rng(0).normal(size=(1, old, 3)).astype(np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 2, 1), size=new,
                                         mode="nearest").permute(0, 2, 1).numpy()
  np.testing.assert_array_equal(common.nearest_resize_1d(jnp.asarray(x), new, 1), want)


def test_pos_embed_resized_for_other_image_size(fast_jit):
  tsf = nnx.eval_shape(lambda: TimeSformer(img_size=32, patch_size=16, num_frames=2, width=8,
                                           depth=1, num_heads=2, rngs=nnx.Rngs(params=0)))
  out = nnx.eval_shape(lambda m, v: m(v), tsf, jnp.ones((1, 2, 64, 64, 3)))   # shape only
  assert out.shape == (1, 17, 8)


def test_vit_block_pre_ln_and_patch_embed(rng, fast_jit):
  from vlx.layers.vit import PatchEmbed, ViTBlock
  blk = ViTBlock(8, 2, 2.0, rngs=nnx.Rngs(params=0))
  x = rng.normal(size=(2, 5, 8)).astype(np.float32)
  ln = lambda m, h: np_ln(h, np.asarray(m.scale[...]), np.asarray(m.bias[...]), 1e-6)
  h = x + np_attention(blk.attn, ln(blk.norm1, x), ln(blk.norm1, x), 0.0, 2)
  want = h + lin(blk.mlp.fc2)(np_gelu(lin(blk.mlp.fc1)(ln(blk.norm2, h))))
  np.testing.assert_allclose(fast_jit(lambda m, x: m(x))(blk, x), want, rtol=1e-4, atol=1e-5)
  # shapes only: abstract evaluation, nothing compiled
  patch = nnx.eval_shape(lambda: PatchEmbed(4, 3, 8, rngs=nnx.Rngs(params=0)))
  assert nnx.eval_shape(lambda m: m(jnp.ones((2, 8, 12, 3))), patch).shape == (2, 6, 8)
  tube = nnx.eval_shape(lambda: PatchEmbed(4, 3, 8, tubelet=2, rngs=nnx.Rngs(params=0)))
  assert nnx.eval_shape(lambda m: m(jnp.ones((2, 4, 8, 8, 3))), tube).shape == (2, 2, 4, 8)


@pytest.mark.parametrize("n_old,n_new", [(3, 4), (4, 6), (16, 32), (10, 5), (7, 3)])
def test_linear_resize_matches_torch_interpolate(n_old, n_new):
  """common.linear_resize_1d == torch F.interpolate(mode='linear', align_corners=False), growing
  and shrinking (no antialias), along a middle axis, numpy and jax alike."""
  torch = pytest.importorskip("torch")
  x = np.random.default_rng(n_old * 31 + n_new).normal(size=(2, n_old, 5)).astype(np.float32)
  want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 2, 1), size=n_new,
                                         mode="linear", align_corners=False).permute(0, 2, 1)
  got = common.linear_resize_1d(x, n_new, axis=1)
  assert isinstance(got, np.ndarray) and got.shape == (2, n_new, 5)
  np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
  np.testing.assert_allclose(np.asarray(common.linear_resize_1d(jnp.asarray(x), n_new, axis=1)),
                             want.numpy(), atol=1e-6)

"""DAVEnet layer (vlx/layers/davenet.py): stride 64 over six stages (T -> ceil(T/64)), the
converter's shape inference, conv-weight hooks against a direct convolution, and BatchNorm in
running vs batch statistics."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import FAST_COMPILE
from vlx.layers import davenet_rules as dr
from vlx.layers.davenet import DAVEnet

SMALL = dict(feat_dim=8, layers=(2, 1, 1), widths=(4, 4, 6, 8), kernel=5)


@pytest.mark.parametrize("frames,tokens", [(384, 6), (768, 12), (500, 8), (65, 2), (64, 1)])
def test_released_stride_is_64_with_ceil(frames, tokens):
  net = nnx.eval_shape(lambda: DAVEnet(widths=(4, 4, 4, 4, 4, 4, 8), rngs=nnx.Rngs(0)))
  out = nnx.eval_shape(lambda m: m(jnp.zeros((2, 40, frames))), net)
  assert out.shape == (2, tokens, 8) and net.stride == 64


def test_infer_config_and_rules_cover_every_key():
  net = nnx.eval_shape(lambda: DAVEnet(**SMALL, rngs=nnx.Rngs(0)))
  targets = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(net))}
  sd = {"conv1.weight": np.zeros((4, 1, 8, 1)), "bn1.weight": np.zeros(4)}
  widths = SMALL["widths"]
  for s, n in enumerate(SMALL["layers"], start=1):
    for i in range(n):
      cin = widths[s - 1] if i == 0 else widths[s]
      sd[f"layer{s}.{i}.conv1.weight"] = np.zeros((widths[s], cin, 1, 5))
      sd[f"layer{s}.{i}.conv2.weight"] = np.zeros((widths[s], widths[s], 1, 5))
      for bn in ("bn1", "bn2") + (("downsample.1",) if i == 0 else ()):
        for f in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
          sd[f"layer{s}.{i}.{bn}.{f}"] = np.zeros(widths[s] if f != "num_batches_tracked" else ())
      if i == 0:
        sd[f"layer{s}.{i}.downsample.0.weight"] = np.zeros((widths[s], cin, 1, 1))
  for f in ("bias", "running_mean", "running_var", "num_batches_tracked"):
    sd[f"bn1.{f}"] = np.zeros(4 if f != "num_batches_tracked" else ())
  for f in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
    sd[f"batchnorm1.{f}"] = np.zeros(1 if f != "num_batches_tracked" else ())
  assert dr.infer_config(sd, "") == SMALL
  from vlx.convert import engine  # pylint: disable=import-outside-toplevel
  m = engine.map_keys(sd, dr.davenet("", ""), targets, unused=dr.unused(""))
  assert not m.unmapped and not m.mismatches and not m.bad_targets
  assert set(m.filled) == set(targets)
  assert "batchnorm1.running_var" in m.unused


def test_conv_hooks_match_a_direct_convolution():
  """torch Conv2d [out, in, 1, k] on [B, in, 1, T] (padding k//2) == the converted 1-D conv."""
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 2, 1, 5)).astype(np.float32)
  x = rng.normal(size=(1, 2, 11)).astype(np.float32)                   # [B, C, T]
  xp = np.pad(x, ((0, 0), (0, 0), (2, 2)))
  want = np.stack([np.einsum("oik,bik->bo", w[:, :, 0], xp[:, :, t:t + 5])
                   for t in range(0, 11, 2)], axis=-1)                 # stride 2
  conv = nnx.Conv(2, 3, (5,), strides=(2,), padding=((2, 2),), use_bias=False, rngs=nnx.Rngs(0))
  conv.kernel[...] = jnp.asarray(dr.conv_weight(w))
  got = conv(jnp.asarray(x.transpose(0, 2, 1)))
  np.testing.assert_allclose(np.asarray(got).transpose(0, 2, 1), want, rtol=1e-5, atol=1e-5)
  m = rng.normal(size=(4, 1, 8, 1)).astype(np.float32)
  assert dr.mel_weight(m).shape == (1, 8, 4)
  np.testing.assert_array_equal(dr.mel_weight(m)[0], m[:, 0, :, 0].T)


def test_batchnorm_running_vs_batch_statistics():
  def run(x):
    net = DAVEnet(feat_dim=8, layers=(1,), widths=(4, 6), kernel=3, rngs=nnx.Rngs(0))
    net.bn1.mean[...] = jnp.full((4,), 3.0)
    evald, trained = net(x), net(x, train=True)
    h = net.conv1(jnp.swapaxes(x, 1, 2))
    before = net.bn1.var[...]
    normed = net.bn1(h, train=True)
    return evald, trained, normed, h, before, net.bn1.mean[...], net.bn1.var[...]
  x = jax.random.normal(jax.random.key(1), (2, 8, 40))
  evald, trained, normed, h, before, mean, var = jax.jit(run, compiler_options=FAST_COMPILE)(x)
  assert evald.shape == trained.shape == (2, 20, 6)
  assert not np.allclose(evald, trained)
  np.testing.assert_allclose(np.mean(np.asarray(normed), axis=(0, 1)), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.std(np.asarray(normed), axis=(0, 1)), 1.0, atol=1e-2)
  # torch's running update: momentum 0.1, unbiased batch variance
  h = np.asarray(h).reshape(-1, 4)
  np.testing.assert_allclose(var, 0.9 * np.asarray(before) + 0.1 * h.var(axis=0, ddof=1),
                             rtol=1e-5)
  assert np.all(np.asarray(mean) != 3.0)

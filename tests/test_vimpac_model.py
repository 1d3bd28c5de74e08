"""VIMPAC model properties the fixtures do not pin: PAD positions are masked as keys (their
embedding cannot change any other output), dropout is active only in training, the tied decoder
reads the input embedding, and invalid architectures fail with one clear line."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import FAST_COMPILE
from vlx.models.vimpac import model as vm


def _cfg(**kw):
  c = vm.model_config("tiny")
  c.update(hidden=128, layers=1, clip_len=2, frame_size=24, nce_proj_hid_dim=16)
  c.update(**kw)
  return c


@pytest.fixture(scope="module")
def model():
  cfg = _cfg()
  return nnx.jit(lambda: vm.build(cfg, rngs=nnx.Rngs(0)))()


def _forward(model, codes, deterministic=True, seed=0):
  graphdef, state = nnx.split(model)

  def run(st, c, key):
    m = nnx.merge(graphdef, st)
    rngs = nnx.Rngs(dropout=key)
    cls, x = m(c, deterministic=deterministic, rngs=rngs)
    return cls, x, m.mlm_logits(x)
  return jax.jit(run, compiler_options=FAST_COMPILE)(state, codes, jax.random.key(seed))


def test_pad_keys_are_masked(model):
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 8192, (2, 2, 3, 3))
  codes[0, 1] = vm.PAD_TOKEN_ID           # second frame of clip 0 is padding
  codes[1, :, 2, 2] = vm.PAD_TOKEN_ID
  codes = jnp.asarray(codes, jnp.int32)
  cls, x, logits = _forward(model, codes)
  assert logits.shape == (2, 2, 3, 3, 8197)
  table = model.backbone.embedding.embedding
  table.set_value(table[...].at[vm.PAD_TOKEN_ID].add(3.0))
  cls2, x2, _ = _forward(model, codes)
  table.set_value(table[...].at[vm.PAD_TOKEN_ID].add(-3.0))
  keep = np.asarray(codes != vm.PAD_TOKEN_ID)
  np.testing.assert_allclose(np.asarray(cls2), np.asarray(cls), atol=1e-5)
  np.testing.assert_allclose(np.asarray(x2)[keep], np.asarray(x)[keep], atol=1e-5)
  assert not np.allclose(np.asarray(x2)[~keep], np.asarray(x)[~keep])


def test_dropout_only_in_training(model):
  codes = jnp.asarray(np.random.default_rng(1).integers(0, 8192, (2, 2, 3, 3)), jnp.int32)
  a = _forward(model, codes)[0]
  b = _forward(model, codes, seed=5)[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = _forward(model, codes, deterministic=False)[0]
  assert np.all(np.isfinite(np.asarray(c))) and not np.allclose(np.asarray(a), np.asarray(c))


def test_invalid_architectures_fail_clearly():
  with pytest.raises(ValueError, match="pre_activation with model.halve_att"):
    nnx.eval_shape(lambda: vm.build(_cfg(pre_activation=True, halve_att=True),
                                    rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="divisible by its 2 parallel patterns"):
    nnx.eval_shape(lambda: vm.build(_cfg(hidden=64), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="model.pos_emb='frozen'"):
    nnx.eval_shape(lambda: vm.build(_cfg(pos_emb="frozen"), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="unknown vimpac model preset"):
    vm.model_config("huge")


def test_bfloat16_compute():
  cfg = _cfg(dtype="bfloat16")
  m = nnx.jit(lambda: vm.build(cfg, rngs=nnx.Rngs(0)))()
  codes = jnp.asarray(np.random.default_rng(2).integers(0, 8192, (2, 2, 3, 3)), jnp.int32)
  cls, x, logits = _forward(m, codes)
  assert cls.dtype == x.dtype == jnp.bfloat16
  assert logits.dtype == jnp.float32    # the float32 bias: the 8197-way softmax runs in float32
  assert np.all(np.isfinite(np.asarray(logits, np.float32)))

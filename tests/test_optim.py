"""vlx.optim: schedules, weight-decay masks, clipping and lr groups against hand-computed values."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from vlx import optim


def _config(**optim_overrides) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.train.num_steps = 100
  c.optim.update(optim_overrides)
  return c


def test_linear_warmup_then_linear_decay_like_alpro():
  c = _config(lr=1e-4)
  c.optim.schedule.update(type="linear", warmup_ratio=0.05, end_value=0.0)
  sched = optim.make_schedule(c.optim, 100)
  # warm-up: int(0.05 * 100) = 5 steps from 0; then lr * (100 - s) / 95 down to 0.
  np.testing.assert_allclose([float(sched(s)) for s in (0, 1, 5, 50, 100)],
                             [0.0, 2e-5, 1e-4, 1e-4 * 50 / 95, 0.0], rtol=1e-6, atol=1e-12)


def test_cosine_schedule_and_warmup_steps():
  c = _config(lr=2.0)
  c.optim.schedule.update(type="cosine", warmup_steps=10, end_value=0.2)
  sched = optim.make_schedule(c.optim, 110)
  expected_mid = 0.2 + (2.0 - 0.2) * 0.5 * (1 + np.cos(np.pi * 0.5))
  np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 60, 110)],
                             [0.0, 1.0, 2.0, expected_mid, 0.2], rtol=1e-5)


def test_unknown_schedule_is_rejected():
  c = _config()
  c.optim.schedule.type = "poly"
  with pytest.raises(ValueError, match="config.optim.schedule.type"):
    optim.make_schedule(c.optim, 10)


def _one_update(c, params, grads):
  tx, _ = optim.make_optimizer(c)
  updates, _ = tx.update(grads, tx.init(params), params)
  return optax.apply_updates(params, updates)


def test_weight_decay_mask_excludes_bias_and_norm():
  c = _config(lr=0.5, weight_decay=0.1, wd_exclude=("bias", "norm"))
  c.optim.schedule.type = "constant"
  params = {"dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)},
            "norm": {"scale": jnp.full((2,), 2.0)}}
  zeros = {k: {n: jnp.zeros_like(v) for n, v in d.items()} for k, d in params.items()}
  out = _one_update(c, params, zeros)
  # zero gradients: Adam's term is 0, decoupled decay subtracts lr * wd * p = 0.5 * 0.1 * 2 = 0.1.
  np.testing.assert_allclose(out["dense"]["kernel"], 1.9, rtol=1e-6)
  np.testing.assert_allclose(out["dense"]["bias"], 2.0)
  np.testing.assert_allclose(out["norm"]["scale"], 2.0)


def test_global_norm_clipping():
  c = _config(name="sgd", lr=1.0, b1=0.0, grad_clip=1.0)
  c.optim.schedule.type = "constant"
  params = {"a": jnp.zeros((2,)), "b": jnp.zeros((1,))}
  grads = {"a": jnp.array([6.0, 0.0]), "b": jnp.array([8.0])}  # global norm 10
  out = _one_update(c, params, grads)
  np.testing.assert_allclose(out["a"], [-0.6, 0.0], rtol=1e-6)
  np.testing.assert_allclose(out["b"], [-0.8], rtol=1e-6)


def test_lr_multipliers_by_path_regex():
  c = _config(name="sgd", lr=1.0, b1=0.0)
  c.optim.schedule.type = "constant"
  c.optim.lr_mult = ml_collections.ConfigDict({"^frozen/": 0.0, "head": 0.5})
  params = {"frozen": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}, "body": {"w": jnp.ones(2)}}
  grads = {k: {"w": jnp.full((2,), 2.0)} for k in params}
  out = _one_update(c, params, grads)
  np.testing.assert_allclose(out["frozen"]["w"], 1.0)
  np.testing.assert_allclose(out["head"]["w"], 0.0)     # 1 - 0.5 * 2
  np.testing.assert_allclose(out["body"]["w"], -1.0)    # 1 - 1 * 2

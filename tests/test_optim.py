"""vlx.optim: schedules, weight-decay masks, clipping and lr groups against hand-computed values;
frozen parameters (Family.frozen_params): no optimizer state, no update, on any mesh."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from vlx import optim, registry, steps
from vlx import sharding as shd


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


# ----------------------------------------------------------------------------- frozen parameters


def _nbytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _paths(tree) -> list[str]:
  return [optim.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_split_frozen_by_path_regex_round_trips():
  params = nnx.State({"enc": {"w": nnx.Param(jnp.ones(2))}, "teacher": {"w": nnx.Param(jnp.ones(3))},
                      "head": nnx.Param(jnp.ones(1))})
  trainable, frozen = optim.split_frozen(params, (r"^teacher/",))
  assert _paths(trainable) == ["enc/w", "head"] and _paths(frozen) == ["teacher/w"]
  assert jax.tree.structure(nnx.merge_state(trainable, frozen)) == jax.tree.structure(params)
  same, none = optim.split_frozen(params, ())
  assert same is params and not jax.tree.leaves(none)


_FROZEN = (r"^video_in/", r"^word/")


@pytest.fixture(scope="module")
def frozen_toy_runs():
  """The toy family with two frozen layers: 3 steps (grad accumulation 2) on 1 device and on a
  2x4 FSDP mesh, from the same init."""
  import fake_family  # pylint: disable=import-outside-toplevel
  from conftest import FAST_COMPILE  # pylint: disable=import-outside-toplevel
  family = dataclasses.replace(fake_family.FAMILY, frozen_params=_FROZEN)
  runs = {}
  for axes, devices in (((("data", 1), ("fsdp", 1), ("model", 1)), jax.devices()[:1]),
                        ((("data", 2), ("fsdp", 4), ("model", 1)), jax.devices())):
    c = fake_family.toy_config()
    c.mesh.axes, c.train.grad_accum = axes, 2
    mesh = shd.make_mesh(c.mesh, devices=devices)
    prog = steps.program(family, c, mesh, FAST_COMPILE)
    with jax.set_mesh(mesh), shd.use_rules(c.mesh.rules):
      state = prog.init()
      init = jax.device_get(state["params"])
      bs = shd.batch_sharding(mesh, c.mesh.rules)
      for s in range(3):
        batch = {k: jax.device_put(v, bs) for k, v in
                 fake_family.synthetic_batch(s, c.data.global_batch_size, c).items()}
        state, metrics = prog.train_step(state, batch)
    runs[mesh.size] = (prog, init, jax.device_get(state), jax.device_get(metrics))
  return runs


def test_frozen_params_have_no_optimizer_state(frozen_toy_runs):
  prog, _, state, _ = frozen_toy_runs[1]
  params = prog.abstract["params"]
  trainable, frozen = optim.split_frozen(params, _FROZEN)
  assert {p.split("/")[0] for p in _paths(frozen)} == {"video_in", "word"}
  # AdamW: mu and nu for the trainable parameters only (+ int32 counters)
  moments = [p for p in _paths(prog.abstract["opt_state"]) if "video_in" in p or "word" in p]
  assert not moments
  counters = sum(4 for x in jax.tree.leaves(prog.abstract["opt_state"]) if x.dtype == jnp.int32)
  assert _nbytes(prog.abstract["opt_state"]) == 2 * _nbytes(trainable) + counters
  assert jax.tree.structure(state["opt_state"]) == jax.tree.structure(prog.abstract["opt_state"])


def test_frozen_params_bit_identical_others_train_and_meshes_agree(frozen_toy_runs):
  _, init, state, metrics = frozen_toy_runs[1]
  after = state["params"]
  for name in ("video_in", "word"):
    for a, b in zip(jax.tree.leaves(init[name]), jax.tree.leaves(after[name])):
      np.testing.assert_array_equal(a, b, err_msg=name)
  for name in ("video_mlp", "text_out"):
    assert not np.array_equal(init[name]["kernel"][...], after[name]["kernel"][...]), name
  assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
  _, init8, state8, metrics8 = frozen_toy_runs[8]
  np.testing.assert_allclose(float(metrics8["loss"]), float(metrics["loss"]), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(init8), jax.tree.leaves(init)):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state8["params"]), jax.tree.leaves(after)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_alpro_pem_optimizer_state_skips_the_prompter():
  """ALPRO tiny with PEM (abstract shapes only): the optimizer holds Adam moments for the
  non-prompter parameters only."""
  from configs import alpro_pretrain  # pylint: disable=import-outside-toplevel
  c = alpro_pretrain.get_config("tiny")
  c.model.pem, c.objectives.pem = True, 1.0
  family = registry.get(c.model.family)
  tx, _ = optim.make_optimizer(c)
  _, abstract = steps.abstract_state(family, c, tx)
  trainable, frozen = optim.split_frozen(abstract["params"], family.frozen_params)
  assert _nbytes(frozen) > 0 and all(p.startswith("prompter/") for p in _paths(frozen))
  assert not any("prompter" in p for p in _paths(abstract["opt_state"]))
  counters = sum(4 for x in jax.tree.leaves(abstract["opt_state"]) if x.dtype == jnp.int32)
  assert _nbytes(abstract["opt_state"]) == 2 * _nbytes(trainable) + counters
  assert _nbytes(jax.eval_shape(tx.init, abstract["params"])) - _nbytes(abstract["opt_state"]) \
      == 2 * _nbytes(frozen)

"""vlx.sharding and the train step: mesh building, logical rules, 1-device == 2x4-mesh step."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import fake_family
from configs import common
from vlx import optim, steps
from vlx import sharding as shd

RULES = common.base_config().mesh.rules


def _mesh_cfg(*axes):
  return ml_collections.ConfigDict(dict(axes=axes, rules=RULES))


def test_make_mesh_resolves_minus_one_and_uses_auto_axes():
  mesh = shd.make_mesh(_mesh_cfg(("data", -1), ("fsdp", 2), ("model", 2)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  one = shd.make_mesh(_mesh_cfg(("data", -1), ("fsdp", 1)), devices=jax.devices()[:1])
  assert dict(one.shape) == {"data": 1, "fsdp": 1}


def test_make_mesh_rejects_sizes_that_do_not_fit():
  with pytest.raises(ValueError, match="config.mesh.axes"):
    shd.make_mesh(_mesh_cfg(("data", -1), ("model", 3)))
  with pytest.raises(ValueError, match="config.mesh.axes"):
    shd.make_mesh(_mesh_cfg(("data", 4), ("model", 4)))


def test_logical_to_spec_rules_divisibility_and_reuse():
  mesh = shd.make_mesh(_mesh_cfg(("data", 2), ("fsdp", 2), ("model", 2)))
  assert shd.logical_to_spec(("embed", "mlp"), RULES) == P("fsdp", "model")
  assert shd.logical_to_spec(("batch", None), RULES) == P(("data", "fsdp"))
  assert shd.logical_to_spec(("unknown", "proj"), RULES) == P()
  # 'mlp' -> model does not divide 3: replicated; 'heads' reuses 'model' after 'mlp' took it.
  assert shd.logical_to_spec(("embed", "mlp"), RULES, (4, 3), mesh) == P("fsdp")
  assert shd.logical_to_spec(("mlp", "heads"), RULES, (4, 4), mesh) == P("model")
  # batch over data x fsdp = 4 needs a multiple of 4; 2 keeps only 'data'.
  assert shd.logical_to_spec(("batch",), RULES, (2,), mesh) == P("data")


def _toy(mesh_axes, devices):
  c = fake_family.toy_config()
  c.mesh.axes = mesh_axes
  c.train.grad_accum = 2
  mesh = shd.make_mesh(c.mesh, devices=devices)
  tx, sched = optim.make_optimizer(c)
  graphdef, abstract = steps.abstract_state(fake_family.FAMILY, c, tx)
  shardings = steps.state_shardings(abstract, tx, mesh, c.mesh.rules)
  return c, mesh, tx, sched, graphdef, shardings


def _run_two_steps(mesh_axes, devices):
  c, mesh, tx, sched, graphdef, shardings = _toy(mesh_axes, devices)
  with jax.set_mesh(mesh), shd.use_rules(c.mesh.rules):
    state = steps.create_state(fake_family.FAMILY, c, tx, shardings)
    fn = steps.jit_train_step(steps.make_train_step(fake_family.FAMILY, c, graphdef, tx, sched),
                              shardings, mesh)
    bs = shd.batch_sharding(mesh, c.mesh.rules)
    losses = []
    for s in range(2):
      batch = {k: jax.device_put(v, bs) for k, v in
               fake_family.synthetic_batch(s, c.data.global_batch_size, c).items()}
      state, m = fn(state, batch)
      losses.append(float(m["loss"]))
  return losses, jax.device_get(state["params"]), state


def test_train_step_on_2x4_mesh_equals_one_device():
  one, p1, _ = _run_two_steps((("data", 1), ("fsdp", 1), ("model", 1)), jax.devices()[:1])
  many, p8, s8 = _run_two_steps((("data", 2), ("fsdp", 4), ("model", 1)), jax.devices())
  kernel = s8["params"]["video_mlp"]["kernel"][...]
  assert kernel.sharding.spec == P("fsdp")          # 'embed' -> fsdp, 'mlp' -> model (size 1)
  np.testing.assert_allclose(many, one, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_optimizer_state_follows_param_shardings():
  c, mesh, tx, _, _, shardings = _toy((("data", 2), ("fsdp", 1), ("model", 4)), jax.devices())
  mu = shardings["opt_state"][0][0].mu       # chain(adamw) -> (ScaleByAdamState, ...)
  assert mu["video_mlp"]["kernel"].spec == shardings["params"]["video_mlp"]["kernel"].spec
  assert shardings["params"]["video_mlp"]["kernel"].spec == P(None, "model")
  assert shardings["step"].spec == P()


def test_constrain_is_noop_without_mesh():
  x = jnp.ones((4, 4))
  assert shd.constrain(x, ("batch", "embed")) is x


# ----------------------------------------------------------------------------- strategies


def _alpro_program(strategy, preset="tiny", fsdp_size=0):
  from configs import alpro_pretrain  # pylint: disable=import-outside-toplevel
  from conftest import FAST_COMPILE  # pylint: disable=import-outside-toplevel
  from vlx import registry  # pylint: disable=import-outside-toplevel
  c = alpro_pretrain.get_config(preset)
  c.mesh.update(strategy=strategy, fsdp_size=fsdp_size)
  c = shd.resolve_strategy(c)
  mesh = shd.make_mesh(c.mesh)
  return c, mesh, steps.program(registry.get("alpro"), c, mesh, FAST_COMPILE)


def _bytes_per_device(prog) -> int:
  """Parameter + optimizer-state bytes held by one device (shard shapes of the state)."""
  leaves, shs = jax.tree.leaves(prog.abstract), jax.tree.leaves(prog.shardings)
  assert len(leaves) == len(shs)
  return sum(int(np.prod(s.shard_shape(a.shape))) * a.dtype.itemsize for a, s in zip(leaves, shs))


def test_strategies_fill_mesh_axes_and_rules():
  c = common.base_config()
  assert shd.resolve_strategy(c) is c                      # 'custom': axes/rules as written
  c.mesh.strategy = "fsdp"
  r = shd.resolve_strategy(c)
  assert r.mesh.axes == (("data", 1), ("fsdp", -1), ("model", 1)) and c.mesh.strategy == "fsdp"
  assert dict(r.mesh.rules)["mlp"] == "fsdp" and dict(c.mesh.rules)["mlp"] == "model"
  c.mesh.update(strategy="dp_fsdp", fsdp_size=4)
  assert shd.resolve_strategy(c).mesh.axes == (("data", -1), ("fsdp", 4), ("model", 1))
  assert all(axes is None for name, axes in shd.RULE_TABLES["dp"] if name != "batch")
  c.mesh.strategy = "zero3"
  with pytest.raises(ValueError, match="config.mesh.strategy='zero3'"):
    shd.resolve_strategy(c)


def test_fsdp_divides_parameter_and_optimizer_memory_per_device():
  """ALPRO tiny/demo on 8 devices: FSDP holds ~1/8 of DP's parameter + Adam bytes per device
  (exactly 1/8 of every named matrix; biases, norms and pos/cls embeddings stay replicated,
  3% of tiny's parameters, 1.3% of demo's); dp_fsdp with groups of 4: ~1/4."""
  ratios = {}
  for preset in ("tiny", "demo"):
    dp = _bytes_per_device(_alpro_program("dp", preset)[2])
    ratios[preset] = (_bytes_per_device(_alpro_program("fsdp", preset)[2]) / dp,
                      _bytes_per_device(_alpro_program("dp_fsdp", preset, 4)[2]) / dp)
  assert 1 / 8 < ratios["tiny"][0] < 1 / 8 + 0.035 and 1 / 8 < ratios["demo"][0] < 1 / 8 + 0.015
  assert 1 / 4 < ratios["tiny"][1] < 1 / 4 + 0.03 and 1 / 4 < ratios["demo"][1] < 1 / 4 + 0.015
  # The compiled state constructor agrees: its per-device output buffers are the state shards.
  _, mesh, prog = _alpro_program("fsdp")
  with jax.set_mesh(mesh):
    compiled = prog.init.lower().compile().memory_analysis().output_size_in_bytes
  assert abs(compiled - _bytes_per_device(prog)) < 4096
  assert compiled < 0.16 * _bytes_per_device(_alpro_program("dp")[2])
  kernel = ("text", "layers", 0, "mlp", "fc1", "kernel")
  specs = {s: _alpro_program(s)[2].shardings["params"] for s in ("dp", "fsdp")}
  for part in kernel:
    specs = {s: v[part] for s, v in specs.items()}
  assert specs["dp"].spec == P() and specs["fsdp"].spec == P("fsdp")

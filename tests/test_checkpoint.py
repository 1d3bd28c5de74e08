"""vlx.checkpoint: keep-N step folders, sharded restore on another mesh, params-only inits."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import fake_family
from vlx import checkpoint as ckpt
from vlx import optim, steps
from vlx import sharding as shd


def _setup(mesh_axes=(("data", -1), ("fsdp", 1), ("model", 1)), devices=None, width=8):
  c = fake_family.toy_config()
  c.mesh.axes = mesh_axes
  c.model.width = width
  mesh = shd.make_mesh(c.mesh, devices=devices)
  tx, _ = optim.make_optimizer(c)
  graphdef, abstract = steps.abstract_state(fake_family.FAMILY, c, tx)
  sh = steps.state_shardings(abstract, tx, mesh, c.mesh.rules)
  return c, mesh, tx, abstract, sh


def test_save_keep_and_restore_on_another_mesh(tmp_path):
  c, mesh, tx, abstract, sh = _setup((("data", 2), ("fsdp", 4), ("model", 1)))
  state = steps.create_state(fake_family.FAMILY, c, tx, sh)
  mngr = ckpt.make_manager(tmp_path, ckpt_every=2, keep=2)
  for step in (2, 4, 6):
    state = dict(state, step=state["step"] + 2)
    assert ckpt.save(mngr, step, state)
  mngr.wait_until_finished()
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["4", "6"]
  mngr.close()
  # Restore onto a 1-device mesh: values equal, placed in the new shardings.
  _, mesh1, _, abstract1, sh1 = _setup(devices=jax.devices()[:1])
  mngr = ckpt.make_manager(tmp_path, ckpt_every=2, keep=2)
  restored, step = ckpt.restore(mngr, steps.with_shardings(abstract1, sh1))
  mngr.close()
  assert step == 6 and int(restored["step"]) == 6
  k = restored["params"]["video_mlp"]["kernel"][...]
  assert k.sharding.mesh.devices.size == 1
  np.testing.assert_array_equal(k, state["params"]["video_mlp"]["kernel"][...])


def test_interval_policy_skips_off_steps(tmp_path):
  c, mesh, tx, abstract, sh = _setup()
  state = steps.create_state(fake_family.FAMILY, c, tx, sh)
  mngr = ckpt.make_manager(tmp_path, ckpt_every=3, keep=5)
  saved = [s for s in range(1, 7) if ckpt.save(mngr, s, state)]
  mngr.wait_until_finished()
  mngr.close()
  assert saved == [3, 6]


def test_init_from_checkpoint_loads_params_with_matching_shapes(tmp_path):
  c, mesh, tx, abstract, sh = _setup()
  src = steps.create_state(fake_family.FAMILY, c, tx, sh)
  src["params"]["temp"][...] = src["params"]["temp"][...] + 1.0
  mngr = ckpt.make_manager(tmp_path / "src", ckpt_every=1, keep=1)
  ckpt.save(mngr, 5, src, force=True)
  mngr.wait_until_finished()
  mngr.close()
  # A wider model: layers whose shapes changed keep their init, the rest (temp, norm...) load.
  c2, _, tx2, _, sh2 = _setup(width=16)
  c2.seed = 7
  dst = steps.create_state(fake_family.FAMILY, c2, tx2, sh2)
  init = ml_collections.ConfigDict(dict(from_checkpoint=str(tmp_path / "src"),
                                        from_converted="", keep_init=()))
  with pytest.raises(ValueError, match=r"has shape \(\d+, \d+\) in the source but \(16, \d+\)"):
    ckpt.init_from(dst, init)     # an undeclared shape change is an error naming both shapes
  init.keep_init = ("^video_", "^text_", "^word/")
  out = ckpt.init_from(dst, init)
  np.testing.assert_allclose(out["params"]["temp"][...], src["params"]["temp"][...])
  np.testing.assert_array_equal(out["params"]["video_mlp"]["kernel"][...],
                                dst["params"]["video_mlp"]["kernel"][...])
  assert out["params"]["video_mlp"]["kernel"][...].shape == (16, 64)
  with pytest.raises(FileNotFoundError, match="from_checkpoint"):
    ckpt.init_from(dst, ml_collections.ConfigDict(dict(from_checkpoint=str(tmp_path / "nope"),
                                                       from_converted="")))


def test_init_from_converted_uses_the_converter(monkeypatch, tmp_path):
  c, mesh, tx, abstract, sh = _setup()
  state = steps.create_state(fake_family.FAMILY, c, tx, sh)
  other = fake_family.build(c.model, rngs=nnx.Rngs(params=123))
  other.buffer[...] = other.buffer[...] * 3
  calls = []

  def fake_load(path):
    calls.append(path)
    return c.model, nnx.state(other)
  from vlx.convert import store
  monkeypatch.setattr(store, "load_converted", fake_load)
  out = ckpt.init_from(state, ml_collections.ConfigDict(dict(from_checkpoint="",
                                                             from_converted=str(tmp_path))))
  assert calls == [str(tmp_path)]
  np.testing.assert_array_equal(out["params"]["word"]["embedding"][...], other.word.embedding[...])
  np.testing.assert_array_equal(out["other"]["buffer"][...], np.full(4, 3.0))
  # init.reinit: a training run keeps the fresh init of the matching arrays (and only those);
  # --mode eval (training=False) loads them like the rest.
  init = ml_collections.ConfigDict(dict(from_checkpoint="", from_converted=str(tmp_path),
                                        reinit=("^text_out/",)))
  fresh = ckpt.init_from(state, init)
  for name in ("kernel", "bias"):
    np.testing.assert_array_equal(fresh["params"]["text_out"][name][...],
                                  state["params"]["text_out"][name][...])
  assert not np.array_equal(state["params"]["text_out"]["kernel"][...], other.text_out.kernel[...])
  np.testing.assert_array_equal(fresh["params"]["video_out"]["kernel"][...],
                                other.video_out.kernel[...])
  loaded = ckpt.init_from(state, init, training=False)
  np.testing.assert_array_equal(loaded["params"]["text_out"]["kernel"][...],
                                other.text_out.kernel[...])


def test_loading_resizes_declared_tables_by_their_mode():
  """resizable_params {regex: axis} resizes nearest, {regex: (axis, 'linear')} linearly (torch
  F.interpolate formulas); other shape changes stay an error naming the key."""
  from vlx import checkpoint as ck
  from vlx.layers import common as lc
  src = np.arange(12, dtype=np.float32).reshape(3, 4)
  target = {"a": {"pos": jnp.zeros((5, 4))}, "b": {"pos": jnp.zeros((5, 4))}}
  source = {"a/pos": src, "b/pos": src}
  out, loaded = ck._load_into(target, source, "test",
                              resizable={r"^a/": 0, r"^b/": (0, "linear")})
  assert sorted(loaded) == ["a/pos", "b/pos"]
  np.testing.assert_array_equal(np.asarray(out["a"]["pos"]), lc.nearest_resize_1d(src, 5, 0))
  np.testing.assert_allclose(np.asarray(out["b"]["pos"]), lc.linear_resize_1d(src, 5, 0))
  assert not np.allclose(lc.nearest_resize_1d(src, 5, 0), lc.linear_resize_1d(src, 5, 0))
  with pytest.raises(ValueError, match="a/pos has shape"):
    ck._load_into(target, source, "test", resizable={r"^b/": (0, "linear")})

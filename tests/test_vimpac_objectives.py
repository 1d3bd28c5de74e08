"""VIMPAC objectives against the reference fixture ../shared/reference/vimpac/tiny: the block mask
rebuilt from the recorded boxes (bit-exact), the box sampler's bounds and mean mask ratio (spec
§3.2: 14.5 % for L5 16x16, 5 blocks), the NCE logits / loss (eval- and train-mode BatchNorm) and
the (label-smoothed) classification loss from the fixture's tensors, the family objectives on the
converted tiny model with the fixture's mask (mlm_loss, nce_loss, accuracy), torch's BatchNorm
running-statistics update, and one vlx.steps train step carrying those statistics out."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import common as config_common
from tests.conftest import FAST_COMPILE
from vlx import optim, registry, steps
from vlx.convert import engine
from vlx.models.vimpac import convert as vc
from vlx.models.vimpac import model as vm
from vlx.models.vimpac import objectives as vo


@pytest.fixture(scope="module")
def arrays(reference_dir):
  d = reference_dir / "vimpac" / "tiny"
  with np.load(d / "inputs.npz") as i, np.load(d / "outputs.npz") as o:
    return {k: i[k] for k in i.files}, {k: o[k] for k in o.files}


@pytest.fixture(scope="module")
def tiny(reference_dir):
  """The converted tiny pre-training model with dropout 0 (so train=True is deterministic)."""
  source, _, overrides = vc.read_checkpoint(reference_dir / "vimpac" / "tiny")
  res = engine.convert_with(vc, vc.build, "vimpac", source,
                            model_config=dict(overrides, dropout=0.0))
  return engine.require_complete(res, "vimpac tiny").model


def _jit(fn, *static):
  """fn under jit with the fast CPU build (eager ops would compile one by one)."""
  return jax.jit(fn, static_argnums=static, compiler_options=FAST_COMPILE)


def _fixture_mask(inp):
  grid = inp["masked_codes"].shape[1:]
  return vo.mask_from_boxes(jnp.asarray(inp["mlm_block_coords"], jnp.int32), grid)


# -- masking --------------------------------------------------------------------------------------
def test_fixture_boxes_reproduce_the_masked_codes_and_labels(arrays):
  inp, out = arrays

  def run(codes, boxes):
    flat = vo.flatten_clips(codes)
    return (flat,) + vo.apply_mask(flat, vo.mask_from_boxes(boxes, flat.shape[1:]))
  flat, masked, labels, mask = _jit(run)(jnp.asarray(inp["pretrain_codes"], jnp.int32),
                                         jnp.asarray(inp["mlm_block_coords"], jnp.int32))
  np.testing.assert_array_equal(np.asarray(flat), inp["pretrain_flat_codes"])
  np.testing.assert_array_equal(np.asarray(masked), inp["masked_codes"])
  np.testing.assert_array_equal(np.asarray(labels), inp["mlm_labels"])
  np.testing.assert_array_equal(np.asarray(mask), inp["mlm_mask"])
  assert (inp["pretrain_flat_codes"] == vm.PAD_TOKEN_ID).any()     # PAD present, never masked
  np.testing.assert_allclose(float(np.mean(mask)), out["mask_ratio"], rtol=1e-6)


def test_box_sampler_bounds_ratio_and_determinism():
  grid = (5, 16, 16)
  sample = _jit(vo.sample_block_boxes, 1, 2, 3)
  boxes = np.asarray(sample(jax.random.key(3), 4000, 5, grid))
  assert boxes.shape == (4000, 5, 6) and boxes.dtype == np.int32
  for axis, (size, hi) in enumerate(zip(grid, (3, 8, 8))):
    lo_, hi_ = boxes[..., 2 * axis], boxes[..., 2 * axis + 1]
    extent = hi_ - lo_
    assert lo_.min() == 0 and hi_.max() == size and (hi_ <= size).all()
    assert set(np.unique(extent)) == set(range(1, hi + 1))        # inclusive size bounds
  mask = np.asarray(_jit(vo.mask_from_boxes, 1)(boxes, grid))
  assert abs(mask.mean() - 0.145) < 0.007, mask.mean()              # spec §3.2 (paper 14.5)
  b0 = boxes[0, 0]   # the union of boxes: a box's interior is masked, its outside corner maybe
  assert mask[0, b0[0]:b0[1], b0[2]:b0[3], b0[4]:b0[5]].all()
  again = np.asarray(sample(jax.random.key(3), 4000, 5, grid))
  np.testing.assert_array_equal(again, boxes)
  other = np.asarray(sample(jax.random.key(4), 4000, 5, grid))
  assert not np.array_equal(other, boxes)


def test_bernoulli_and_empty_masks_never_touch_pad():
  codes = np.random.default_rng(0).integers(0, 8192, (64, 3, 8, 8))
  codes[:, 2] = vm.PAD_TOKEN_ID
  codes = jnp.asarray(codes, jnp.int32)
  masking = _jit(vo.block_masking, 2)
  masked, labels, mask = masking(codes, jax.random.key(0), -100)   # p = 0.1
  mask = np.asarray(mask)
  assert not mask[:, 2].any()
  assert abs(mask[:, :2].mean() - 0.1) < 0.01
  np.testing.assert_array_equal(np.asarray(masked)[mask], vm.MASK_TOKEN_ID)
  np.testing.assert_array_equal(np.asarray(labels)[mask], np.asarray(codes)[mask])
  np.testing.assert_array_equal(np.asarray(labels)[~mask], vo.IGNORE_INDEX)
  _, _, box_mask = masking(codes, jax.random.key(1), 5)
  assert not np.asarray(box_mask)[:, 2].any() and np.asarray(box_mask).any()
  _, labels0, none = masking(codes, jax.random.key(1), 0)
  assert not np.asarray(none).any()
  assert float(_jit(vo.mlm_loss)(jnp.zeros((64, 3, 8, 8, 5)), labels0)[0]) == 0.0   # no 0 / 0


# -- losses from the fixture's tensors ------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", "_trainbn"])
def test_nce_logits_and_loss(arrays, suffix):
  _, out = arrays
  proj = jnp.asarray(out[f"nce_proj{suffix}"])
  z, la, lb = (np.asarray(t) for t in _jit(vo.nce_logits)(proj))
  b = la.shape[0]
  off = ~np.eye(b, 2 * b, b, dtype=bool)                              # the -1e9 diagonal apart
  np.testing.assert_allclose(la[off], out[f"nce_logits_a{suffix}"][off], atol=1e-5, rtol=1e-5)
  want = out[f"nce_logits_a{suffix}"]
  np.testing.assert_allclose(np.diagonal(la[:, b:]), np.diagonal(want[:, b:]), rtol=1e-6)
  if not suffix:
    np.testing.assert_allclose(z, out["nce_normalized"], atol=1e-6)
    np.testing.assert_allclose(lb[off], out["nce_logits_b"][off], atol=1e-5, rtol=1e-5)
  loss = _jit(vo.nce_loss, 1)
  np.testing.assert_allclose(float(loss(proj, 0.2)), out[f"nce_loss{suffix}"], atol=1e-5)
  # the temperature argument is used (model config nce_temperature)
  assert abs(float(loss(proj, 0.1)) - out[f"nce_loss{suffix}"]) > 1e-3


def test_classification_loss_with_and_without_label_smoothing(arrays):
  inp, out = arrays
  b, views = inp["ft_codes"].shape[:2]
  logits = jnp.asarray(out["ft_logits"].reshape(b, views, -1)[:, 0])
  labels = jnp.asarray(inp["ft_labels"], jnp.int32)
  np.testing.assert_allclose(float(vo.classification_loss(logits, labels)),
                             out["ft_train_loss_view0"], atol=1e-5)
  np.testing.assert_allclose(float(vo.classification_loss(logits, labels, 0.1)),
                             out["ft_train_loss_view0_labelsmooth0.1"], atol=1e-5)


# -- the family objectives on the converted model -------------------------------------------------
def _objectives(model, batch, mask, *, active, train):
  """objectives(...) under jit; also returns the BatchNorm statistics the forward left."""
  graphdef, state = nnx.split(model)

  def run(st, b, m, key):
    mod = nnx.merge(graphdef, st)
    losses, metrics = vo.objectives(mod, b, active=active, rng=key, train=train, mask=m)
    return losses, metrics, nnx.state(mod, nnx.BatchStat)
  with jax.default_matmul_precision("highest"):
    return jax.jit(run, compiler_options=FAST_COMPILE)(state, batch, mask, jax.random.key(0))


@pytest.mark.torch
@pytest.mark.parametrize("train", [False, True])
def test_objectives_reproduce_the_fixture_losses(tiny, arrays, train):
  """Eval: mlm_loss, nce_loss, accuracy, mask ratio. Train (dropout 0): the contrastive head's BN
  on batch statistics gives nce_loss_trainbn and updates the running statistics as torch does
  (momentum 0.1, unbiased variance of the 2B rows)."""
  inp, out = arrays
  batch = {"vq_tokens": jnp.asarray(inp["pretrain_codes"], jnp.int32)}
  losses, metrics, stats = _objectives(tiny, batch, _fixture_mask(inp),
                                       active=frozenset({"mlm", "nce"}), train=train)
  assert list(losses) == ["mlm", "nce"]
  np.testing.assert_allclose(float(losses["mlm"]), out["mlm_loss"], atol=1e-5)
  np.testing.assert_allclose(float(losses["nce"]), out["nce_loss_trainbn" if train else "nce_loss"],
                             atol=1e-5)
  np.testing.assert_allclose(float(metrics["mask_accuracy"]), out["mlm_accuracy_percent"],
                             atol=1e-4)
  np.testing.assert_allclose(float(metrics["mask_ratio"]), out["mask_ratio"], rtol=1e-6)
  bn_before = tiny.cls_head.bns[0]
  mean0, var0 = np.asarray(bn_before.mean[...]), np.asarray(bn_before.var[...])
  mean1 = np.asarray(stats["cls_head"]["bns"][0]["mean"][...])
  var1 = np.asarray(stats["cls_head"]["bns"][0]["var"][...])
  if not train:
    np.testing.assert_array_equal(mean1, mean0)
    np.testing.assert_array_equal(var1, var0)
    return
  h = out["clshead_linear_0_out"].astype(np.float64)                 # BN 0's input, [2B, hid]
  np.testing.assert_allclose(mean1, 0.9 * mean0 + 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(var1, 0.9 * var0 + 0.1 * h.var(0, ddof=1), rtol=1e-5, atol=1e-6)


@pytest.mark.torch
def test_classification_objective_on_the_finetuning_model(reference_dir, arrays):
  """Fine-tuning model (positional tables interpolated, finetune_head.pt): the objective on view
  0 of ft_codes gives the training loss, with and without label smoothing, and top-1 accuracy."""
  from vlx.convert import torch_io  # pylint: disable=import-outside-toplevel
  inp, out = arrays
  d = reference_dir / "vimpac" / "tiny"
  source, _, overrides = vc.read_checkpoint(d)
  sd = {k: v for k, v in source.items() if k.startswith("backbone.")}
  sd.update({k: np.asarray(v) for k, v in torch_io.load_state_dict(d / "finetune_head.pt").items()})
  codes = inp["ft_codes"][:, 0]
  ov = dict(overrides, clip_len=codes.shape[1], frame_size=8 * codes.shape[2])
  model = engine.require_complete(engine.convert_with(vc, vc.build, "vimpac", sd, model_config=ov),
                                  "vimpac tiny fine-tuning").model
  batch = {"vq_tokens": jnp.asarray(codes, jnp.int32),
           "label": jnp.asarray(inp["ft_labels"], jnp.int32)}
  active = frozenset({"classification"})
  losses, metrics, _ = _objectives(model, batch, None, active=active, train=False)
  np.testing.assert_allclose(float(losses["classification"]), out["ft_train_loss_view0"],
                             atol=1e-5)
  logits = out["ft_logits"].reshape(codes.shape[0], -1, out["ft_logits"].shape[-1])[:, 0]
  want = 100.0 * np.mean(logits.argmax(-1) == inp["ft_labels"])
  np.testing.assert_allclose(float(metrics["accuracy"]), want, atol=1e-4)
  model.label_smoothing = 0.1
  losses, _, _ = _objectives(model, batch, None, active=active, train=False)
  np.testing.assert_allclose(float(losses["classification"]),
                             out["ft_train_loss_view0_labelsmooth0.1"], atol=1e-5)


def test_objectives_refuse_wrong_rows_and_names():
  model = nnx.eval_shape(lambda: vm.build(vm.model_config("tiny"), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="unknown VIMPAC objectives"):
    vo.objectives(model, {}, active=frozenset({"itm"}), rng=jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[B, 2, L, H, W\]"):
    vo.objectives(model, {"vq_tokens": jnp.zeros((2, 3, 4, 4), jnp.int32)},
                  active=frozenset({"mlm"}), rng=jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[B, L, H, W\]"):
    vo.objectives(model, {"vq_tokens": jnp.zeros((2, 2, 3, 4, 4), jnp.int32),
                          "label": jnp.zeros((2,), jnp.int32)},
                  active=frozenset({"classification"}), rng=jax.random.key(0))
  with pytest.raises(ValueError, match="rng"):
    vo.objectives(model, {}, active=frozenset({"mlm"}), rng=None, train=True)


# -- one vlx.steps train step ---------------------------------------------------------------------
def _small_config(**kw):
  """A one-layer model of the tiny grid (3, 4, 4): quick to compile."""
  cfg = vm.model_config("tiny")
  cfg.update(layers=1, hidden=64, layout="T", nce_proj_layers=2, nce_proj_hid_dim=16, **kw)
  return cfg


def test_train_step_carries_the_batchnorm_running_statistics(arrays, fast_build):
  """One vlx.steps step (dropout 0, no masking: a deterministic forward): the BN running mean /
  variance leave the step with torch's update from the batch statistics of the 2B clips (momentum
  0.1, unbiased variance); the loss is the NCE loss of the unmasked clips."""
  inp, _ = arrays
  c = config_common.base_config()
  c.model = _small_config(dropout=0.0, mask_blocks=0)
  c.objectives.update(mlm=1.0, nce=1.0)
  fam = registry.Family(name="vimpac_objectives_test", build=vm.build,
                        objectives=vo.objectives, objective_names=vo.OBJECTIVES)
  graphdef, params, other = nnx.split(fast_build(lambda: vm.build(c.model, rngs=nnx.Rngs(0))),
                                      nnx.Param, ...)
  tx, sched = optim.make_optimizer(c)
  state = dict(params=params, other=other, opt_state=tx.init(params),
               step=jnp.zeros((), jnp.int32))
  codes = jnp.asarray(inp["pretrain_codes"], jnp.int32)

  def reference(st):
    m = nnx.merge(graphdef, st["params"], st["other"])
    cls, _ = m(vo.flatten_clips(codes))
    return m.cls_head.linears[0](cls), vo.nce_loss(m.cls_head(cls, train_bn=True))
  h, nce = _jit(reference)(state)
  h = np.asarray(h, np.float64)
  mean0 = np.asarray(other["cls_head"]["bns"][0]["mean"][...])
  var0 = np.asarray(other["cls_head"]["bns"][0]["var"][...])
  step = _jit(steps.make_train_step(fam, c, graphdef, tx, sched))
  new, metrics = step(state, {"vq_tokens": codes})
  bn = new["other"]["cls_head"]["bns"][0]
  np.testing.assert_allclose(np.asarray(bn["mean"][...]), 0.9 * mean0 + 0.1 * h.mean(0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(bn["var"][...]), 0.9 * var0 + 0.1 * h.var(0, ddof=1),
                             rtol=1e-5, atol=1e-6)
  assert float(metrics["mlm_loss"]) == 0.0 and float(metrics["mask_ratio"]) == 0.0
  np.testing.assert_allclose(float(metrics["nce_loss"]), float(nce), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss"]), float(nce), rtol=1e-5)


def test_sharded_batch_gives_the_single_device_losses_and_statistics(fast_build):
  """Rows split over 4 devices: the same mask and dropout draws, NCE negatives from the global
  batch and BatchNorm statistics over all 2B clips (the reference's all-gather / SyncBatchNorm)."""
  cfg = _small_config()
  graphdef, state = nnx.split(fast_build(lambda: vm.build(cfg, rngs=nnx.Rngs(0))))
  codes = jnp.asarray(np.random.default_rng(5).integers(0, 8192, (4, 2, 3, 4, 4)), jnp.int32)

  def run(st, b, key):
    mod = nnx.merge(graphdef, st)
    out = vo.objectives(mod, b, active=frozenset({"mlm", "nce"}), rng=key, train=True)
    return out, nnx.state(mod, nnx.BatchStat)
  fn = _jit(run)
  one = fn(state, {"vq_tokens": codes}, jax.random.key(1))
  mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:4])
  sharded = jax.device_put(codes, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data")))
  many = fn(state, {"vq_tokens": sharded}, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert float(one[0][1]["mask_ratio"]) > 0


def test_head_on_the_masked_positions_only_is_exact():
  """masked_rows keeps every labelled position (no sampled clip exceeds max_masked), so the loss
  and accuracy on the gathered rows equal those over all positions."""
  from vlx.models.vimpac import objectives as ob   # pylint: disable=import-outside-toplevel
  grid, blocks, n = (5, 8, 8), 3, 64
  bound = ob.max_masked(blocks, grid)
  assert bound == 3 * 3 * 4 * 4 < 5 * 8 * 8
  mask = ob.sample_mask(jax.random.key(3), n, blocks, grid)
  assert int(mask.reshape(n, -1).sum(1).max()) <= bound
  codes = jax.random.randint(jax.random.key(4), (n,) + grid, 0, 50)
  _, labels, _ = ob.apply_mask(codes, mask)
  x = jax.random.normal(jax.random.key(5), (n,) + grid + (8,))
  head = jax.random.normal(jax.random.key(6), (8, 50))
  full = ob.mlm_loss(x @ head, labels)
  xs, kept = ob.masked_rows(x, labels, bound)
  assert xs.shape == (n, bound, 8) and int((kept != ob.IGNORE_INDEX).sum()) == int(mask.sum())
  part = ob.mlm_loss(xs @ head, kept)
  np.testing.assert_allclose(np.asarray(part), np.asarray(full), rtol=1e-6)
  assert ob.max_masked(-5, grid) == ob.max_masked(100, grid) == 5 * 8 * 8

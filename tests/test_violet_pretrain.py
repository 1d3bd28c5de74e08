"""VIOLET pre-training: a tiny run through the training loop (losses and accuracies logged, the
dVAE frozen), the objectives against the reference fixture, MVM targets and the data hook."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from configs import violet_pretrain
from conftest import FAST_COMPILE
from vlx import checkpoint as ckpt
from vlx import registry, steps, train
from vlx.logging_utils import read_metrics
from vlx.models.violet import data as violet_data
from vlx.models.violet import dvae_targets, objectives

PRETRAIN_KEYS = ("vtm", "mlm", "mvm")


@pytest.fixture(scope="module")
def tiny_run(tiny_data_dir, tmp_path_factory):
  """configs/violet_pretrain.py:tiny trained 2 steps on the 8 simulated devices."""
  c = violet_pretrain.get_config("tiny")
  c.data.data_dir = tiny_data_dir
  work = str(tmp_path_factory.mktemp("violet_pretrain") / "w")
  train.train_and_evaluate(c, work, compiler_options=FAST_COMPILE)
  return c, work


def test_tiny_run_logs_every_loss_and_accuracy(tiny_run):
  c, work = tiny_run
  rows = read_metrics(work)
  assert sorted(s for s in rows if "train/loss" in rows[s]) == [1, 2]
  for step in (1, 2):
    r = rows[step]
    for name in PRETRAIN_KEYS:
      assert np.isfinite(r[f"train/{name}_loss"]), (step, name)
      assert 0.0 <= r[f"train/{name}_acc"] <= 1.0, (step, name)
    total = sum(r[f"train/{n}_loss"] for n in PRETRAIN_KEYS)
    assert abs(r["train/loss"] - total) < 1e-4 * max(1.0, total)
    # MVM predicts some masked patch every step (blockwise or attended) out of 64 codes
    assert r["train/mvm_loss"] > 1.0


def test_tiny_run_keeps_the_dvae_frozen_and_a_dvae_subtree_loads(tiny_run, fast_build):
  c, work = tiny_run
  family = registry.get("violet")
  fresh = fast_build(lambda: steps.build_model(family, c))
  dvae_targets.prepare_fresh_state(fresh, c)   # as the loop does: the conditioned random dVAE
  from flax import nnx  # pylint: disable=import-outside-toplevel
  init = {"/".join(map(str, k)): np.asarray(v[...])
          for k, v in nnx.to_flat_state(nnx.state(fresh, nnx.Param))}
  final = ckpt.load_params_flat(work)
  dvae = [k for k in init if k.startswith("dvae/")]
  assert dvae and all(k in final for k in dvae)
  # both inits compiled, possibly differently: equal to float rounding (the conditioning adds
  # its own); two AdamW steps at lr 1e-3 would move every weight by ~1e-3
  for k in dvae:
    np.testing.assert_allclose(final[k], init[k], rtol=0, atol=1e-6, err_msg=k)
  moved = [k for k in init if not k.startswith("dvae/")
           and np.abs(final[k] - init[k]).max() > 1e-4]
  assert len(moved) > 10   # the rest trained

  # prepare_fresh_state with model.dvae.converted = a vlx run (it holds dvae/...: the loader
  # strips the prefix) loads exactly its values (the model's own dVAE is first moved by +1)
  c2 = violet_pretrain.get_config("tiny")
  c2.model.dvae.converted = work
  nnx.update(fresh.dvae, jax.tree.map(lambda v: v + 1.0, nnx.state(fresh.dvae, nnx.Param)))
  dvae_targets.prepare_fresh_state(fresh, c2)
  for k, v in nnx.to_flat_state(nnx.state(fresh.dvae, nnx.Param)):
    np.testing.assert_array_equal(np.asarray(v[...]), final["dvae/" + "/".join(map(str, k))])
  c2.model.dvae.vocab_size = 65
  with pytest.raises(ValueError, match="mvm_vocab"):
    dvae_targets.prepare_fresh_state(fresh, c2)


# --- against the reference fixture ---------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture(reference_dir):
  import json  # pylint: disable=import-outside-toplevel
  from vlx.convert import load_state_dict  # pylint: disable=import-outside-toplevel
  from vlx.models.violet import load_fixture  # pylint: disable=import-outside-toplevel
  d = reference_dir / "violet" / "tiny"
  cfg = json.loads((d / "config.json").read_text())
  model = load_fixture.convert_fixture(cfg, "pretrain",
                                       load_state_dict(str(d / "checkpoint.pt"))).model
  x = dict(np.load(d / "inputs.npz"))
  out = dict(np.load(d / "outputs.npz"))
  batch = dict(video=load_fixture.normalize(x["video_pt"]),
               text_ids=jnp.asarray(x["txt_pt"], jnp.int32),
               text_mask=jnp.asarray(x["mask_pt"], jnp.int32),
               vq_tokens=jnp.asarray(x["vq_tokens_pt"], jnp.int32))
  return model, batch, x, out


def test_objectives_with_the_fixture_masks_reproduce_the_reference_losses(fixture, fast_jit):
  model, batch, x, ref = fixture
  masks = dict(mtm_mask=jnp.asarray(x["mtm_mask"], jnp.int32),
               mvm_mask=jnp.asarray(x["mvm_mask"], jnp.int32))

  @fast_jit
  def run(m, batch, masks, neg):
    out = objectives.pretrain_forward(m, batch, active=frozenset(PRETRAIN_KEYS),
                                      rng=jax.random.key(0), train=False, masks=masks,
                                      vtm_neg=neg)
    att = objectives.attention_received(m, batch["video"], batch["text_ids"],
                                        batch["text_mask"])
    return out, att

  out, att = run(model, batch, masks, jnp.asarray(x["vtm_neg"], jnp.int32))
  np.testing.assert_array_equal(np.asarray(out["mtm_labels"]), x["ans_mtm"])
  np.testing.assert_array_equal(np.asarray(out["mvm_labels"]), x["ans_mvm"])
  for key in ("loss_mtm", "loss_mvm", "loss_vtm", "loss_total", "acc_mtm", "acc_mvm",
              "acc_vtm"):
    np.testing.assert_allclose(np.asarray(out[key]), ref[key], rtol=1e-4, atol=1e-4,
                               err_msg=key)
  # the attended branch's weights: get_att on the UNMASKED inputs
  np.testing.assert_allclose(np.asarray(att), ref["att_masking"], rtol=1e-4, atol=1e-4)


def test_objectives_reject_mixed_or_unknown_names(fixture):
  model, batch, _, _ = fixture
  with pytest.raises(ValueError, match="mixes pre-training"):
    objectives.objectives(model, batch, active=frozenset({"mvm", "ret"}),
                          rng=jax.random.key(0), train=False)
  with pytest.raises(ValueError, match="itm"):
    objectives.objectives(model, batch, active=frozenset({"itm"}), rng=jax.random.key(0),
                          train=False)


# --- MVM targets and the data hook -----------------------------------------------------------------
def test_on_the_fly_targets_are_the_dvae_tokens_of_the_raw_clip(fast_build):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vlx.layers import dvae  # pylint: disable=import-outside-toplevel

  class Holder(nnx.Module):
    def __init__(self, rngs):
      self.dvae = dvae.DalleEncoder(n_hid=16, vocab_size=64, rngs=rngs)

  holder = fast_build(lambda: Holder(nnx.Rngs(params=0)))
  raw = jax.random.uniform(jax.random.key(1), (2, 2, 96, 96, 3))
  mean, std = (jnp.asarray(v) for v in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
  video = (raw - mean) / std
  graphdef, state = nnx.split(holder)

  def both(state, video, raw):
    m = nnx.merge(graphdef, state)
    return (dvae_targets.targets(m, {"video": video}, (3, 3)),
            dvae.frame_tokens(m.dvae, raw, 3))

  got, want = jax.jit(both, compiler_options=FAST_COMPILE)(state, video, raw)
  assert got.shape == (2, 2, 3, 3) and len(np.unique(np.asarray(want))) > 1
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  given = jnp.arange(2 * 2 * 9, dtype=jnp.int32).reshape(2, 2, 3, 3)
  np.testing.assert_array_equal(
      np.asarray(dvae_targets.targets(holder, dict(video=video, vq_tokens=given), (3, 3))),
      given)
  with pytest.raises(ValueError, match="vq_tokens"):
    dvae_targets.targets(holder, dict(video=video, vq_tokens=given[:, :1]), (3, 3))
  with pytest.raises(ValueError, match="dvae.enabled"):
    dvae_targets.targets(nnx.Dict(), {"video": video}, (3, 3))


def test_data_hook_gives_the_tokenizer_special_ids():
  c = violet_pretrain.get_config("tiny")
  (hook,) = violet_data.data_hooks(c)
  assert hook.ids == (2, 3, 0, 4)      # [CLS] [SEP] [PAD] [MASK] of the shipped demo vocab
  c.objectives.update(vtm=0.0, mlm=0.0, mvm=0.0)
  assert violet_data.data_hooks(c) == ()
  ids = jnp.asarray([[2, 9, 9, 3, 0]])
  special, mask_id = objectives.text_specials(
      {"text_ids": ids, violet_data.KEY: jnp.asarray([hook.ids])})
  np.testing.assert_array_equal(np.asarray(special), [[2, 3, 0]])
  np.testing.assert_array_equal(np.asarray(mask_id), [4])
  special, mask_id = objectives.text_specials({"text_ids": ids})
  np.testing.assert_array_equal(np.asarray(special), [[101, 102, 0]])
  np.testing.assert_array_equal(np.asarray(mask_id), [103])


@pytest.mark.parametrize("preset", ["", "demo", "tiny"])
def test_presets(preset):
  c = violet_pretrain.get_config(preset)
  assert c.data.train.norm == "imagenet" and c.data.train.resize == "pad_square"
  assert dict(c.objectives) == dict(vtm=1.0, mlm=1.0, mvm=1.0)
  assert c.model.dvae.enabled and c.model.dvae.vocab_size == c.model.mvm_vocab
  assert c.data.train.resolution // 32 >= 3     # blockwise masking needs 3x3 visual tokens
  if preset == "":
    assert c.data.global_batch_size == 48 and c.optim.lr == 2e-5
    assert c.optim.schedule.type == "constant" and c.data.train.max_text_len == 32
    assert {m.split(":")[0].split("/")[0] for m in c.data.train.mixture} == {"webvid", "cc3m",
                                                                         "yt_temporal"}


def test_a_random_dvae_is_conditioned_to_varied_codes(fast_build):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vlx.layers import dvae  # pylint: disable=import-outside-toplevel
  enc = fast_build(lambda: dvae.DalleEncoder(n_hid=16, vocab_size=512, rngs=nnx.Rngs(params=0)))
  rng = np.random.default_rng(0)
  imgs = np.zeros((32, 24, 24, 3), np.float32)   # flat colours with a square, as moving_shapes
  for i in range(32):
    imgs[i] = rng.uniform(0, 1, 3)
    y, x = rng.integers(0, 16, 2)
    imgs[i, y:y + 8, x:x + 8] = rng.uniform(0, 1, 3)
  graphdef, state = nnx.split(enc)
  codes = jax.jit(lambda st, x: dvae.tokens(nnx.merge(graphdef, st), x),
                  compiler_options=FAST_COMPILE)

  def conditioned(st):
    m = nnx.merge(graphdef, st)
    dvae_targets.condition_random(m, 42)
    return nnx.state(m)

  before = np.asarray(codes(state, jnp.asarray(imgs)))
  state = jax.jit(conditioned, compiler_options=FAST_COMPILE)(state)
  after = np.asarray(codes(state, jnp.asarray(imgs)))
  assert len(np.unique(after)) > 2 * len(np.unique(before))
  assert np.bincount(after.ravel()).max() < 0.45 * after.size


@pytest.mark.parametrize("preset", ["", "demo", "tiny"])
def test_tokens_option_reads_the_datasets_vlx_tokenize_writes(preset):
  """`:tokens` names exactly the token datasets `vlx.tokenize --grid resolution/32` writes, reads
  the codes of the sampled frames and runs no dVAE in the step."""
  from vlx.data.tokenize import settings as tok
  plain = violet_pretrain.get_config(preset)
  c = violet_pretrain.get_config(",".join(p for p in (preset, "tokens") if p))
  t, grid = c.data.train, plain.data.train.resolution // 32
  want = tok.output_names(tok.Settings(builder=plain.data.train.builder, split="train",
                                       config=plain.data.train.builder_config, data_dir="D",
                                       grid=grid))
  assert (t.builder, t.builder_config) == want
  for entry, source in zip(t.mixture, plain.data.train.mixture):
    head, _, weight = source.partition(":")
    name, _, config = head.partition("/")
    out, out_config = tok.output_names(tok.Settings(builder=name, config=config, split="train",
                                                    data_dir="D", grid=grid))
    assert entry == f"{out}/{out_config}:{weight}" if out_config else f"{out}:{weight}"
  assert t.inputs.vq_tokens.to_dict() == dict(reader="token_grid", height=grid, width=grid,
                                              align_with="video")
  assert not c.model.dvae.enabled
  registry.get("violet").validate_config(c)

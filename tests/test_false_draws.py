"""The reference's negatives (config.data.train.false_videos / false_texts): the pipeline's
`false_video` / `false_text_*` keys and All-in-one's ITM / irtr losses that read them."""
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath
from flax import nnx

from configs import common
from test_allinone_objectives import _tiny_model
from vlx import config_validation, steps
from vlx.data import modalities, pipeline, seeds, tasks, text_ops, train_stream, video_ops
from vlx.models import allinone
from vlx.models.allinone import data as allinone_data
from vlx.models.allinone import objectives as obj

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
B, T, S, L = 8, 4, 32, 16


def _config(data_dir, **train) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.model.family = "allinone"   # the false draws are All-in-one's data hook
  c.data.update(data_dir=str(data_dir), global_batch_size=B, shuffle_buffer=64,
                tokenizer="moving_shapes")
  c.data.train.update(dict(dict(builder_config="tiny", num_frames=T, resolution=S,
                                max_text_len=L), **train))
  return c


def _take(config, n, start_step=0):
  ds = train_stream._train_dataset(config, process_index=0, process_count=1, start_step=start_step)
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


@pytest.fixture(scope="module")
def draws(tiny_data_dir):
  c = _config(tiny_data_dir, false_videos=2, false_texts=3)
  return c, _take(c, 3)


def test_keys_shapes_determinism_and_resume(draws, tiny_data_dir):
  c, batches = draws
  b = batches[0]
  assert b["false_video"].shape == (B, 2, T, S, S, 3) and b["false_video"].dtype == np.float32
  for k in ("false_text_ids", "false_text_mask"):
    assert b[k].shape == (B, 3, L) and b[k].dtype == np.int32
  # the rest of the batch is what it is without false draws (own streams and seeds)
  plain = _take(_config(tiny_data_dir), 1)[0]
  assert set(b) - set(plain) == set(allinone_data.KEYS)
  for k in plain:
    np.testing.assert_array_equal(b[k], plain[k], err_msg=k)
  resumed = _take(c, 1, start_step=2)[0]      # resume == uninterrupted, false keys included
  for k in batches[2]:
    np.testing.assert_array_equal(resumed[k], batches[2][k], err_msg=k)
  other = _config(tiny_data_dir, false_videos=2, false_texts=3)
  other.seed = 7
  o = _take(other, 1)[0]
  assert not np.array_equal(o["false_text_ids"], b["false_text_ids"])
  assert not np.array_equal(o["false_video"], b["false_video"])
  # draws differ across rows and draw slots (not one clip repeated)
  flat = b["false_video"].reshape(B * 2, -1)
  assert len({row.tobytes() for row in flat}) > B


def test_false_videos_are_preprocessed_clips_of_the_split(draws, tiny_data_dir):
  """Row r, draw f of step 0 is preprocess_clip(some training clip) with the frame seed of
  (seed, example counter r, f); also the same normalisation / size as `video`."""
  c, batches = draws
  builder = pipeline.get_builder("moving_shapes", "tiny", str(tiny_data_dir))
  clips = list(builder.as_dataset(split="train", shuffle_files=False,
                                  decoders={"video": tfds.decode.SkipDecoding()}).map(lambda ex: ex["video"]))
  reader = modalities.make_readers(c.data.train, "t")["video"]
  for row, f in ((0, 0), (3, 1), (7, 0)):
    seed = tf.random.experimental.stateless_fold_in(
        seeds.example_seed(int(c.seed), row, allinone_data.VIDEO_SALT), tf.constant(f, tf.int64))
    got = batches[0]["false_video"][row, f]
    hits = [i for i, clip in enumerate(clips)
            if np.allclose(reader.read(clip, seed, train=True)["video"], got)]
    assert len(hits) == 1, (row, f, hits)


def test_false_texts_are_captions_of_the_split(draws, tiny_data_dir):
  c, batches = draws
  builder = pipeline.get_builder("moving_shapes", "tiny", str(tiny_data_dir))
  caps = [x for ex in tasks.read_features(builder, "train", ("captions",))
          for x in ex["captions"]]
  tok = text_ops.load_tokenizer("moving_shapes")
  ids, mask = text_ops.tokenize(tok, caps, L)
  known = {tuple(r) for r in np.concatenate([ids, mask], -1)}
  for b in batches:
    got = np.concatenate([b["false_text_ids"], b["false_text_mask"]], -1).reshape(-1, 2 * L)
    assert all(tuple(r) in known for r in got)
    assert len({tuple(r) for r in got}) > B      # random captions, not one repeated


def test_text_only_draws_do_not_read_video(tiny_data_dir, monkeypatch):
  builder = pipeline.get_builder("moving_shapes", "tiny", str(tiny_data_dir))
  spec = allinone_data.false_text_stream(builder, "train", "captions").element_spec
  assert set(spec) == {"captions"}              # the video feature is not even parsed
  traced = []
  real = video_ops.preprocess_clip
  monkeypatch.setattr(video_ops, "preprocess_clip",
                      lambda *a, **k: traced.append(1) or real(*a, **k))
  for fv, expected in ((0, 1), (1, 2)):         # the clip's own map (+ the false-video map)
    traced.clear()
    b = _take(_config(tiny_data_dir, false_videos=fv, false_texts=2), 1)[0]
    assert len(traced) == expected and b["false_text_ids"].shape == (B, 2, L)
    assert ("false_video" in b) == bool(fv)


def _fake_builder(name: str, blue: int, caption: str):
  """Clips of 3-5 frames with the blue channel `blue`, every caption `caption`."""
  class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    code_path = epath.Path(__file__)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(
          video=tfds.features.Video((None, None, None, 3), encoding_format="png"),
          captions=tfds.features.Sequence(tfds.features.Text()))))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        video = np.full((3 + i % 3, 16, 16, 3), 10 * i, np.uint8)
        video[..., 2] = blue
        yield str(i), dict(video=video, captions=[caption])

  Fake.name = Fake.__name__ = name
  return Fake


def test_mixture_entries_draw_from_their_own_dataset(tmp_path, monkeypatch):
  caps = {"fdvid_a": "a red circle", "fdvid_b": "a blue square"}
  for i, name in enumerate(caps):
    module = types.ModuleType(f"data_builders.{name}.{name}_dataset_builder")
    module.Builder = _fake_builder(name, 40 + 160 * i, caps[name])
    monkeypatch.setitem(sys.modules, module.__name__, module)  # what get_builder imports
    module.Builder(data_dir=str(tmp_path)).download_and_prepare()
  c = _config(tmp_path, false_videos=1, false_texts=2, mixture=("fdvid_a", "fdvid_b"),
              resolution=16, builder_config="")
  c.data.global_batch_size = 4
  batches = _take(c, 6)
  tok = text_ops.load_tokenizer("moving_shapes")
  seen = set()
  for b in batches:
    assert b["false_video"].shape == (4, 1, T, 16, 16, 3)
    # the false clips (blue channel) and captions are those of the step's dataset
    np.testing.assert_allclose(b["false_video"][..., 2].mean(), b["video"][..., 2].mean(),
                               atol=0.05)
    own = tuple(b["text_ids"][0])
    seen.add(own)
    assert all(tuple(r) == own for r in b["false_text_ids"].reshape(-1, L))
  assert seen == {tuple(text_ops.tokenize(tok, [x], L)[0][0]) for x in caps.values()}
  resumed = _take(c, 1, start_step=5)[0]
  for k in batches[5]:
    np.testing.assert_array_equal(resumed[k], batches[5][k], err_msg=k)


@pytest.mark.parametrize("field", ["false_videos", "false_texts"])
def test_fields_are_checked(tiny_data_dir, field):
  c = _config(tiny_data_dir, **{field: -1})
  with pytest.raises(ValueError, match=f"config.data.train.{field}=-1 must be >= 0"):
    allinone.validate_config(c)
  with pytest.raises(ValueError, match=f"config.data.train.{field}=-1"):
    _take(c, 1)
  c = _config(tiny_data_dir, task="classification", **{field: 2})
  with pytest.raises(ValueError, match=f"config.data.train.{field}=2 needs task 'retrieval'"):
    allinone.validate_config(c)
  with pytest.raises(ValueError, match=f"config.data.train.{field}=2 needs task 'retrieval'"):
    _take(c, 1)


# -- All-in-one losses --------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
  return _tiny_model()


def _batch(b=4, t=3, f_t=5, length=16):
  rs = np.random.RandomState(1)
  ids = rs.randint(5, 128, (b, length)).astype(np.int32)
  mask = (np.arange(length)[None] < rs.randint(4, length, (b, 1))).astype(np.int32)
  f_ids = rs.randint(5, 128, (b, f_t, length)).astype(np.int32)
  f_mask = (np.arange(length) < rs.randint(4, length, (b, f_t, 1))).astype(np.int32)
  return dict(video=rs.randn(b, t, 32, 32, 3).astype(np.float32), text_ids=ids * mask,
              text_mask=mask, false_video=rs.randn(b, 1, t, 32, 32, 3).astype(np.float32),
              false_text_ids=f_ids * f_mask, false_text_mask=f_mask)


def _jit(model, fn):
  """fn(model, *arrays) jitted over the model's state (unoptimised compile: tests)."""
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a), compiler_options=FAST_COMPILE)
  return lambda *a: run(state, *a)


_LOSS_FNS = {}


def _loss(model, batch, weights):
  key = (id(model), tuple(sorted(weights.items())))
  if key not in _LOSS_FNS:  # one jit per weights; retraced only for a new batch structure
    _LOSS_FNS[key] = _jit(model, lambda m, b: steps.weighted_loss(allinone.FAMILY, m, b, weights=weights,
                                                          rng=jax.random.key(3), train=False)[1])
  return _LOSS_FNS[key]({k: jnp.asarray(v) for k, v in batch.items()})


def test_itm_uses_false_video(model):
  batch = _batch()
  weights = dict(itm=1.0, wpa=1.0)
  m = _loss(model, batch, weights)
  # the hand-composed batch: label-0 rows get false_video[:, 0] with its own patch order
  _, k_perm, k_itm, k_neg, _, _ = jax.random.split(jax.random.key(3), 6)
  video, fv = jnp.asarray(batch["video"]), jnp.asarray(batch["false_video"][:, 0])
  labels = obj.itm_labels(k_itm, 4)
  assert 0 < int(labels.sum()) < 4
  perm = obj.random_patch_perm(k_perm, model, video)
  fperm = obj.random_patch_perm(jax.random.fold_in(k_neg, 1), model, fv)
  match = labels == 1
  o = _jit(model, obj.itm_forward)(
      jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"]),
      jnp.where(match[:, None, None, None, None], video, fv),
      jnp.where(match[:, None, None], perm, fperm), labels)
  np.testing.assert_allclose(float(m["itm_loss"]), float(o["itm_loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m["wpa_loss"]), float(o["itm_wpa_loss"]), rtol=1e-5, atol=1e-7)
  changed = dict(batch, false_video=batch["false_video"] * 0.5 + 1.0)
  assert abs(float(_loss(model, changed, weights)["itm_loss"])
             - float(m["itm_loss"])) > 1e-6
  fallback = _loss(model, {k: v for k, v in batch.items() if k != "false_video"}, weights)
  assert abs(float(fallback["itm_loss"]) - float(m["itm_loss"])) > 1e-6


def test_irtr_uses_every_false_text(model):
  batch = _batch(f_t=5)                  # more than the batch could give (B - 1 = 3)
  m = _loss(model, batch, dict(irtr=1.0))
  _, k_perm, _, _, _, _ = jax.random.split(jax.random.key(3), 6)
  video = jnp.asarray(batch["video"])
  ids, mask = jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"])
  perm = obj.random_patch_perm(k_perm, model, video)

  forward = _jit(model, lambda md, i, k, v, p: obj.options_forward(
      md, i, k, v, p, jnp.zeros(4, jnp.int32), "rank"))

  def options(k):  # the positive + the first k false texts
    return forward(
        jnp.concatenate([ids[:, None], jnp.asarray(batch["false_text_ids"][:, :k])], 1),
        jnp.concatenate([mask[:, None], jnp.asarray(batch["false_text_mask"][:, :k])], 1),
        video, perm)

  o = options(5)
  assert o["scores"].shape == (4, 6)
  np.testing.assert_allclose(float(m["irtr_loss"]), float(o["loss"]), rtol=1e-5)
  # not the model's irtr_false_texts (2) nor the batch's B - 1 (3) false texts ...
  assert abs(float(options(3)["loss"]) - float(m["irtr_loss"])) > 0.05
  # ... and without the key the in-batch fallback (irtr_false_texts = 2 other rows) is used
  fallback = _loss(model, {k: v for k, v in batch.items() if not k.startswith("false_text")},
                   dict(irtr=1.0))
  assert abs(float(fallback["irtr_loss"]) - float(m["irtr_loss"])) > 0.05


def test_allinone_presets_draw_the_reference_negatives():
  """Pre-training: draw_false_image=1; retrieval: draw_false_text 15 (MSRVTT-MC training 4)."""
  from configs import (allinone_didemo_ret, allinone_msrvtt_mc, allinone_msrvtt_ret,
                       allinone_pretrain)
  for preset in ("", "demo", "tiny"):
    p = allinone_pretrain.get_config(preset).data.train
    assert (p.false_videos, p.false_texts) == (1, 0)
    for module in (allinone_msrvtt_ret, allinone_didemo_ret):
      r = module.get_config(preset).data.train
      assert (r.false_videos, r.false_texts) == (0, {"": 15, "demo": 3, "tiny": 2}[preset])
      assert allinone_data.false_counts(r, r.task) == (0, r.false_texts)  # validate_config's check
  assert allinone_msrvtt_mc.get_config("").data.train.false_texts == 4
  assert common.base_config().data.train.false_texts == 0   # other families: none drawn

"""Input pipeline: sampling formulas, normalisation, determinism, resume, hosts and sharding."""
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import common
from data_builders.moving_shapes import moving_shapes_dataset_builder as msb
from vlx.data import eval_stream, pipeline, tasks, text_ops, train_stream, video_ops


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  """moving_shapes/tiny, built on first use by the pipeline itself (shared by path)."""
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"
  pipeline.get_builder("moving_shapes", "tiny", str(path))
  return path


def _config(data_dir, **train) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.data.update(data_dir=str(data_dir), global_batch_size=16, shuffle_buffer=64,
                tokenizer="moving_shapes")
  c.data.train.update(dict(builder_config="tiny", num_frames=4, resolution=32, max_text_len=16,
                           **train))
  return c


def _take(ds, n):
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


@pytest.mark.parametrize("vlen,t", [(100, 8), (8, 4), (16, 4), (17, 4), (30, 7), (49, 16)])
def test_uniform_matches_numpy_formula(vlen, t):
  got = video_ops.sample_indices(tf.constant(vlen), t, "uniform").numpy()
  np.testing.assert_array_equal(got, video_ops.uniform_indices_np(vlen, t))
  if vlen == 100:
    np.testing.assert_array_equal(got, [0, 12, 24, 36, 48, 60, 72, 84])


@pytest.mark.parametrize("sampling", ["uniform", "rand", "headtail", "segment_middle",
                                      "segment_rand"])
def test_short_clips_and_images_are_sampled_with_repetition(sampling):
  """A clip with fewer frames than T (1 fps builds, 1-frame images) repeats frames evenly; the
  reference's uniform formula would give frame 0 T times (floor(3 / 8) = 0)."""
  seed = tf.constant([3, 1], tf.int64)
  got = video_ops.sample_indices(tf.constant(3), 8, sampling, seed).numpy()
  if sampling == "headtail":  # 1 frame in the head half, 2 in the tail half
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 1, 1, 2, 2])
  else:
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 1, 1, 2, 2])
  np.testing.assert_array_equal(video_ops.sample_indices(tf.constant(1), 4, sampling, seed), 0)


@pytest.mark.parametrize("vlen", [1, 3, 5, 10, 37, 100, 251])
def test_interior_sampling_is_the_reference_frame_extraction(vlen):
  """VIOLET's extraction (its spec §1): N = n / (S + 1), frames int(N * (i + 1)), i < S."""
  step = vlen / 6
  want = [int(step * (i + 1)) for i in range(5)]
  np.testing.assert_array_equal(video_ops.sample_indices(tf.constant(vlen), 5, "interior"), want)
  assert min(want) >= 0 and max(want) < vlen


def test_rand_and_headtail_sampling():
  seen = set()
  for s in range(50):
    seed = tf.constant([s, 1], tf.int64)
    idx = video_ops.sample_indices(tf.constant(16), 4, "rand", seed).numpy()
    assert len(set(idx)) == 4 and (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < 16
    np.testing.assert_array_equal(idx, video_ops.sample_indices(16, 4, "rand", seed).numpy())
    seen.update(idx.tolist())
    ht = video_ops.sample_indices(tf.constant(15), 4, "headtail", seed).numpy()
    assert (ht[:2] < 7).all() and (ht[2:] >= 7).all() and ht.max() < 15
    assert ht[0] < ht[1] and ht[2] < ht[3]
  assert seen == set(range(16))  # every frame can be drawn
  with pytest.raises(ValueError, match="sampling"):
    video_ops.sample_indices(tf.constant(16), 4, "middle", tf.constant([0, 0], tf.int64))


def test_eval_batches_pixels_order_and_padding(tiny_dir):
  c = _config(tiny_dir)
  ev = ml_collections.ConfigDict(dict(builder="moving_shapes", builder_config="tiny", split="test",
                                      num_frames=4, sampling="uniform", resolution=32,
                                      max_text_len=16))
  batches = list(eval_stream.make_eval_batches(ev, c, batch_size=6))
  assert [b["valid"].sum() for b in batches] == [6, 6, 4]
  last = batches[-1]
  np.testing.assert_array_equal(last["video_index"], [12, 13, 14, 15, -1, -1])
  np.testing.assert_array_equal(last["video"][4], last["video"][0])
  builder = msb.Builder(config="tiny", data_dir=str(tiny_dir))
  raw = list(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)))
  tok = text_ops.load_tokenizer("moving_shapes")
  for b in batches:
    assert b["video"].dtype == np.float32 and b["video"].shape == (6, 4, 32, 32, 3)
    assert b["text_ids"].dtype == np.int32 and b["text_mask"].dtype == np.int32
    for row in np.flatnonzero(b["valid"]):
      ex = raw[b["video_index"][row]]
      pixels = (b["video"][row] * video_ops.CLIP_STD + video_ops.CLIP_MEAN) * 255
      np.testing.assert_allclose(pixels, ex["video"][[0, 2, 4, 6]], atol=1.0)
      words = tok.decode(b["text_ids"][row], skip_special_tokens=True)
      assert words == ex["captions"][0].decode()


def test_train_batch_keys_dtypes_and_normalisation(tiny_dir):
  batch = _take(train_stream._train_dataset(_config(tiny_dir), process_index=0, process_count=1), 1)[0]
  assert sorted(batch) == sorted(tasks.TRAIN_KEYS["retrieval"])
  assert batch["video"].shape == (16, 4, 32, 32, 3) and batch["video"].dtype == np.float32
  for k in ("text_ids", "text_mask", "mlm_text_ids", "mlm_labels"):
    assert batch[k].shape == (16, 16) and batch[k].dtype == np.int32, k
  pixels = (batch["video"] * video_ops.CLIP_STD + video_ops.CLIP_MEAN) * 255
  assert pixels.min() > -1.0 and pixels.max() < 256.0
  assert pixels.max() > 200  # saturated colours survive
  selected = batch["mlm_labels"] != -100
  np.testing.assert_array_equal(batch["mlm_labels"][selected], batch["text_ids"][selected])
  np.testing.assert_array_equal(batch["mlm_text_ids"][~selected], batch["text_ids"][~selected])


def test_crop_keeps_one_window_for_all_frames(tiny_dir):
  batch = _take(train_stream._train_dataset(_config(tiny_dir, crop=24, sampling="headtail"),
                                        process_index=0, process_count=1), 1)[0]
  assert batch["video"].shape == (16, 4, 24, 24, 3)


def test_order_depends_only_on_seed_and_step(tiny_dir):
  c = _config(tiny_dir)
  kw = dict(process_index=0, process_count=1, extra_keys=("video_id",))
  run = _take(train_stream._train_dataset(c, **kw), 7)  # 64 clips / 16 = 4 steps per epoch
  again = _take(train_stream._train_dataset(c, **kw), 7)
  resumed = _take(train_stream._train_dataset(c, start_step=5, **kw), 2)
  for a, b in zip(run, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  for a, b in zip(run[5:], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  epoch0 = np.concatenate([b["video_id"] for b in run[:4]])
  epoch1 = np.concatenate([b["video_id"] for b in run[4:7]])
  assert len(set(epoch0)) == 64  # an epoch visits every clip once
  assert list(epoch0[:48]) != list(epoch1)  # and epochs are shuffled differently
  c.seed = 7
  other = _take(train_stream._train_dataset(c, **kw), 1)[0]
  assert list(other["video_id"]) != list(run[0]["video_id"])


def test_two_processes_read_disjoint_halves(tiny_dir):
  c = _config(tiny_dir)
  ids = []
  for p in range(2):
    batches = _take(train_stream._train_dataset(c, process_index=p, process_count=2,
                                            extra_keys=("video_id",)), 4)
    assert batches[0]["video"].shape[0] == 8
    ids.append(set(np.concatenate([b["video_id"] for b in batches]).tolist()))
  assert len(ids[0]) == len(ids[1]) == 32
  assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == 64


def test_global_arrays_on_2x4_mesh(tiny_dir):
  c = _config(tiny_dir)
  mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  batch = next(train_stream.make_train_iterator(c, mesh, start_step=2))
  local = _take(train_stream._train_dataset(c, process_index=0, process_count=1, start_step=2), 1)[0]
  for k, v in batch.items():
    assert isinstance(v, jax.Array) and v.shape == local[k].shape
    assert v.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    assert len(v.addressable_shards) == 8
    assert all(s.data.shape[0] == 2 for s in v.addressable_shards)
    np.testing.assert_array_equal(np.asarray(v), local[k])


def test_batch_axes_follow_mesh_rules():
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
  assert train_stream.batch_axes(mesh, (("batch", ("data", "fsdp")),)) == ("data",)
  assert train_stream.batch_axes(mesh, (("batch", "model"),)) == ("model",)


def test_unbuilt_dataset_gives_build_command(tmp_path, monkeypatch):
  class Builder:  # stands in for a real-data builder whose files are absent
    def __init__(self, config=None, data_dir=None):
      pass

    def is_prepared(self):
      return False

  module = types.ModuleType("data_builders.fake_videos.fake_videos_dataset_builder")
  module.Builder = Builder
  monkeypatch.setitem(sys.modules, module.__name__, module)
  with pytest.raises(pipeline.DatasetNotBuiltError) as err:
    pipeline.get_builder("fake_videos", "", str(tmp_path))
  assert (f"tfds build data_builders/fake_videos --manual_dir={tmp_path}/downloads/manual "
          f"--data_dir={tmp_path}") in str(err.value)
  with pytest.raises(ValueError, match="no dataset builder"):
    pipeline.get_builder("no_such_dataset", "", str(tmp_path))


def test_eval_views_resample_random_frames(tiny_dir):
  """evals.<name>.view v > 0 folds v into the frame seed: another random sampling of the same
  clips; view 0 is the plain eval, and deterministic sampling ignores the view."""
  c = _config(tiny_dir)

  def videos(sampling, view):
    ev = ml_collections.ConfigDict(dict(builder="moving_shapes", builder_config="tiny",
                                        split="test[:6]", num_frames=3, sampling=sampling,
                                        resolution=32, max_text_len=16, view=view))
    return [b["video"] for b in eval_stream.make_eval_batches(ev, c, batch_size=6)][0]

  v0, v0_again, v1 = (videos("segment_rand", v) for v in (0, 0, 1))
  np.testing.assert_array_equal(v0, v0_again)
  assert np.abs(v0 - v1).max() > 0.1
  np.testing.assert_array_equal(videos("segment_middle", 0), videos("segment_middle", 2))


def test_whole_word_mlm_masking_in_the_training_stream(tiny_dir):
  """data.mlm_masking='whole_word' (All-in-one): round(0.15 * L) positions are chosen per row
  before [CLS]/[SEP]/[PAD] positions drop out, so no row has more; 'token' (ALPRO) gives other
  corruptions of the same captions; bad values are named."""
  c = _config(tiny_dir)
  token = _take(train_stream._train_dataset(c, process_index=0, process_count=1), 3)
  c.data.mlm_masking = "whole_word"
  whole = _take(train_stream._train_dataset(c, process_index=0, process_count=1), 3)
  n = round(0.15 * 16)
  for t, w in zip(token, whole):
    np.testing.assert_array_equal(t["text_ids"], w["text_ids"])     # same captions
    picked = w["mlm_labels"] != -100
    assert picked.sum(axis=1).max() <= n and picked.any()
    assert not (picked & (w["text_mask"] == 0)).any()                # never padding
    np.testing.assert_array_equal(w["mlm_labels"][picked], w["text_ids"][picked])
  assert any((t["mlm_labels"] != w["mlm_labels"]).any() for t, w in zip(token, whole))
  c.data.mlm_masking = "span"
  with pytest.raises(ValueError, match="config.data.mlm_masking='span'"):
    _take(train_stream._train_dataset(c, process_index=0, process_count=1), 1)

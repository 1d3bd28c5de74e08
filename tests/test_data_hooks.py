"""The generic parts of the data package: modality inputs (config `inputs`) and row hooks
(vlx.data.hooks) — a toy hook and a second frames input flow through train and eval batches."""
import dataclasses

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from configs import common
from vlx import config_validation
from vlx.data import eval_stream, modalities, pipeline, tasks, train_stream

B, T, S, L = 8, 2, 32, 16


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"  # shared with the other tests
  pipeline.get_builder("moving_shapes", "tiny", str(path))
  return path


def _config(data_dir, **train):
  c = common.base_config()
  c.data.update(data_dir=str(data_dir), global_batch_size=B, shuffle_buffer=64,
                tokenizer="moving_shapes")
  c.data.train.update(dict(dict(builder_config="tiny", num_frames=T, resolution=S,
                                max_text_len=L), **train))
  return c


def _take(config, n, **kw):
  ds = train_stream._train_dataset(config, process_index=0, process_count=1, **kw)
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


@dataclasses.dataclass(frozen=True)
class ToyHook:
  """Per row: the drawn record number (extra_dataset) and the row's counter; per batch: a sum."""
  keys: tuple = ("drawn", "counter", "video_sum")

  def extra_dataset(self, ctx):
    return tf.data.Dataset.range(ctx.first_example, 10 ** 9).map(lambda k: {"drawn": k * 2})

  def apply(self, row, ctx, counter):
    return {"counter": tf.cast(counter, tf.int64)}

  def finish(self, batch, ctx):
    return {"video_sum": tf.reduce_sum(batch["video"], axis=[1, 2, 3, 4])}


def test_row_hook_keys_alignment_and_resume(tiny_dir):
  c = _config(tiny_dir)
  run = _take(c, 3, hooks=(ToyHook(),))
  plain = _take(c, 1, hooks=())[0]
  b = run[0]
  assert set(b) == set(tasks.TRAIN_KEYS["retrieval"]) | {"drawn", "counter", "video_sum"}
  for k in plain:                      # a hook leaves the other keys unchanged
    np.testing.assert_array_equal(b[k], plain[k])
  for step, batch in enumerate(run):   # element i of extra_dataset joins row first_example + i
    np.testing.assert_array_equal(batch["drawn"], 2 * (step * B + np.arange(B)))
    np.testing.assert_array_equal(batch["counter"], step * B + np.arange(B))
    np.testing.assert_allclose(batch["video_sum"], batch["video"].sum(axis=(1, 2, 3, 4)),
                               rtol=1e-5)
  resumed = _take(c, 1, start_step=2, hooks=(ToyHook(),))[0]
  for k in run[2]:
    np.testing.assert_array_equal(resumed[k], run[2][k])
  with pytest.raises(ValueError, match="already yield"):
    _take(c, 1, hooks=(ToyHook(keys=("video",)),))


def _two_inputs(block):
  block.inputs = ml_collections.ConfigDict(dict(
      video=ml_collections.ConfigDict(dict(reader="frames")),
      small=ml_collections.ConfigDict(dict(reader="frames", num_frames=1, resolution=16))))
  return block


def test_second_input_in_train_and_eval_batches(tiny_dir):
  c = _config(tiny_dir)
  plain = _take(c, 2)
  _two_inputs(c.data.train)
  both = _take(c, 2)
  for p, b in zip(plain, both):
    assert set(b) == set(p) | {"small"} and b["small"].shape == (B, 1, 16, 16, 3)
    for k in p:                        # `video` reads with the seeds it had alone
      np.testing.assert_array_equal(b[k], p[k])
  ev = _two_inputs(common.retrieval_eval(builder="moving_shapes", builder_config="tiny",
                                        num_frames=T, resolution=S, max_text_len=L))
  batches = list(eval_stream.make_eval_batches(ev, c, batch_size=5, process_index=1,
                                               process_count=3))
  for b in batches:
    assert b["small"].shape == (5, 1, 16, 16, 3) and b["video"].shape == (5, T, S, S, 3)
  readers = modalities.make_readers(ev, "evals.x")
  assert {k: s for r in readers.values() for k, s in r.spec().items()} == {
      "video": ((T, S, S, 3), np.float32), "small": ((1, 16, 16, 3), np.float32)}


def test_unknown_reader_is_one_line_error(tiny_dir):
  c = _config(tiny_dir)
  c.data.train.inputs = ml_collections.ConfigDict(dict(
      audio=ml_collections.ConfigDict(dict(reader="no_such_reader"))))
  with pytest.raises(ValueError, match=r"config.data.train.inputs.audio.reader='no_such_reader'"):
    config_validation._validate_train_data(c.data.train)
  with pytest.raises(ValueError, match=r"config.data.train.inputs.audio.reader='no_such_reader'"):
    _take(c, 1)

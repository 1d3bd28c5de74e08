"""All-in-one's data hook (vlx.data.hooks): the reference's dataset negatives.

config.data.train.false_videos F_v / false_texts F_t > 0 (task 'retrieval'; the reference's
draw_false_image / draw_false_text) add `false_video` float32 [B, F_v, T, S, S, C] and
`false_text_ids` / `false_text_mask` int32 [B, F_t, L]: random other examples of the split (may by
chance be the row's own clip, as in the reference), drawn from independent shuffled streams over
the host's share. Draw f of row j is record j * F + f of its stream, its frames / caption seeded
by (seed, global example counter, f): a pure function of (seed, step), resumable by skipping.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import tasks

FIELDS = ("false_videos", "false_texts")   # config.data.train: the reference's draw_false_*
KEYS = ("false_video", "false_text_ids", "false_text_mask")
VIDEO_SALT, TEXT_SALT = 5, 6               # vlx.data.seeds: the stream uses 1-3


def false_counts(t, task: str) -> tuple[int, int]:
  """(false_videos, false_texts) of config.data.train, checked: >= 0, and > 0 only for task
  'retrieval' (the reference draws them for ITM and irtr; absent fields = 0)."""
  out = []
  for field in FIELDS:
    n = int(t.get(field, 0) or 0)
    if n < 0:
      raise ValueError(f"config.data.train.{field}={n} must be >= 0")
    if n and task != "retrieval":
      raise ValueError(f"config.data.train.{field}={n} needs task 'retrieval' (got {task!r}): "
                       "false videos / texts are the negatives of ITM and irtr; set it to 0")
    out.append(n)
  return out[0], out[1]


def false_text_stream(builder, split: str, field: str) -> tf.data.Dataset:
  """The caption feature of `split` alone: video is neither read into the example nor decoded."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=tfds.decode.PartialDecoding({field: True}))
  return ds.map(lambda ex: {field: ex[field]})


def draw_seed(ctx, salt: int, k: tf.Tensor, per_row: int) -> tf.Tensor:
  """The seed of draw k (row k // per_row, draw k % per_row) of a stream."""
  return tf.random.experimental.stateless_fold_in(
      ctx.example_seed(salt, ctx.counter_of(k // per_row)), k % per_row)


@dataclasses.dataclass(frozen=True)
class FalseDraws:
  """Row hook: F_v random clips read as the row's `video`, F_t random captions per row."""
  videos: int
  texts: int

  @property
  def keys(self) -> tuple[str, ...]:
    return (KEYS[:1] if self.videos else ()) + (KEYS[1:] if self.texts else ())

  def extra_dataset(self, ctx) -> tf.data.Dataset:
    """Per row: `false_video` [F_v, ...] (the `video` reader's output) and `false_caption`
    [F_t] (one random caption of each drawn example)."""
    f_v, f_t = self.videos, self.texts
    first = ctx.first_example
    parts = {}
    if f_v:
      reader = ctx.reader_of("video", "config.data.train.false_videos")
      decoder = reader.decoder()
      base = ctx.builder.as_dataset(split=ctx.split, shuffle_files=False,
                                    decoders=tfds.decode.PartialDecoding(
                                        {reader.feature: True},
                                        decoders={reader.feature: decoder} if decoder else None))
      ds = ctx.shuffled(base.map(lambda ex: ex[reader.feature]), VIDEO_SALT, f_v)

      def video(k, encoded):
        return reader.read(encoded, draw_seed(ctx, VIDEO_SALT, k, f_v), train=True)["video"]

      ds = ds.enumerate(start=first * f_v).map(video, num_parallel_calls=tf.data.AUTOTUNE,
                                               deterministic=True)
      parts["false_video"] = ds.batch(f_v, drop_remainder=True)
    if f_t:
      field = ctx.text_field
      ds = ctx.shuffled(false_text_stream(ctx.builder, ctx.split, field), TEXT_SALT, f_t)

      def caption(k, ex):
        return tasks.pick_caption(ex[field], draw_seed(ctx, TEXT_SALT, k, f_t))

      ds = ds.enumerate(start=first * f_t).map(caption, num_parallel_calls=tf.data.AUTOTUNE,
                                               deterministic=True)
      parts["false_caption"] = ds.batch(f_t, drop_remainder=True)
    return tf.data.Dataset.zip(parts)

  def apply(self, row, ctx, counter):
    return {}

  def finish(self, batch, ctx):
    if not self.texts:
      return {}
    b, f, length = ctx.local_batch, self.texts, ctx.max_text_len
    ids, mask = ctx.tokenize(tf.reshape(batch["false_caption"], [-1]))
    return dict(false_text_ids=tf.ensure_shape(tf.reshape(ids, [b, f, length]), [b, f, length]),
                false_text_mask=tf.ensure_shape(tf.reshape(mask, [b, f, length]), [b, f, length]))


def data_hooks(config) -> tuple:
  """Family.data_hooks: the dataset negatives when false_videos / false_texts > 0."""
  t = config.data.train
  counts = false_counts(t, tasks.train_task(t))
  return (FalseDraws(*counts),) if any(counts) else ()

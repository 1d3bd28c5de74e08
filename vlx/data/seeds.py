"""Stateless seeds and shuffled epochs of the training stream: every random choice is a pure
function of (config.seed, a salt, a counter), so training order depends only on (seed, step).

Salts keep the streams apart: `seed * 16 + salt` per example, so a salt is an int in [0, 16).
The stream uses STREAM_SALTS; a family's data hook picks its own unused salts (vlx.data.hooks).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

STREAM_SALTS = dict(example=1, mlm=2, shuffle=3, clips=7)  # the stream's own (clips: task
# asr_clips, vlx.data.asr_clips); hooks use others (< 16)
MAX_INT64 = np.iinfo(np.int64).max


def salt_of(salt: str | int) -> int:
  """A stream salt by name, or an int salt (a hook's own), checked to be in [0, 16)."""
  value = STREAM_SALTS[salt] if isinstance(salt, str) else int(salt)
  if not 0 <= value < 16:
    raise ValueError(f"seed salt {salt!r}={value} must be in [0, 16)")
  return value


def example_seed(seed: int, counter: tf.Tensor, salt: str | int = "example") -> tf.Tensor:
  """int64 [2] stateless seed of one example: (seed * 16 + salt, counter)."""
  return tf.stack([tf.constant(seed, tf.int64) * 16 + salt_of(salt), tf.cast(counter, tf.int64)])


def shuffled_epochs(base: tf.data.Dataset, n: int, *, seed: int, salt: str | int, buffer: int,
                    first: int) -> tf.data.Dataset:
  """`base` (n records) epoch after epoch, each shuffled by (seed, salt, epoch) only, from the
  record `first` on: whole epochs and then records are skipped still encoded."""
  salt = salt_of(salt)

  def epoch(e):
    return base.shuffle(buffer, seed=seed * 1_000_003 + salt + e * 7919,
                        reshuffle_each_iteration=False)

  return tf.data.Dataset.range(first // n, MAX_INT64).flat_map(epoch).skip(first % n)

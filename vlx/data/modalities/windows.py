"""Where a fixed-size window starts inside a variable-length sequence (TF graph ops), and padding.

Shared by the audio, feature-sequence and token-grid readers so that all of them crop the same
way: training draws the start uniformly (stateless, from the row's seed); evaluation takes the
centred or the first window (for evaluation views the stream already passes the v-th temporal
window of the feature, see vlx.data.modalities.base).
"""
from __future__ import annotations

import tensorflow as tf


def window_start(length: tf.Tensor, size: int | tf.Tensor, seed: tf.Tensor, *, train: bool,
                 anchor: str = "center") -> tf.Tensor:
  """int32 start of a `size` window in `length` items (0 when the sequence is not longer).

  train: uniform over [0, length - size] (inclusive) from `seed`; eval: `anchor` ('center' |
  'start').
  """
  delta = tf.maximum(tf.cast(length, tf.int32) - tf.cast(size, tf.int32), 0)
  if train:
    return tf.random.stateless_uniform([], seed, 0, delta + 1, dtype=tf.int32)
  return delta // 2 if anchor == "center" else tf.zeros([], tf.int32)


def crop_or_pad(x: tf.Tensor, start: tf.Tensor, size: int, pad_value=0
                ) -> tuple[tf.Tensor, tf.Tensor]:
  """x[start:start + size] along axis 0, padded at the end with `pad_value` to exactly `size`
  rows, and the int32 [size] mask of real rows."""
  piece = x[start:start + size]
  real = tf.shape(piece)[0]
  pad = [[0, size - real]] + [[0, 0]] * (len(x.shape) - 1)
  out = tf.pad(piece, pad, constant_values=tf.cast(pad_value, x.dtype))
  out = tf.ensure_shape(out, [size] + list(x.shape[1:]))
  return out, tf.sequence_mask(real, size, dtype=tf.int32)

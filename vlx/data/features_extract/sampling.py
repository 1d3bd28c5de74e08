"""Which stored frames give the features: the frame nearest each t = k / features_per_second.

Stored frame i of a clip shows time i / source_fps (from the clip's start). A clip of T frames
lasts T / source_fps seconds and gets N = ceil(T * features_per_second / source_fps) features
(at least 1 for T >= 1; none for an empty clip), at t_k = k / features_per_second < duration;
feature k is frame min(round(t_k * source_fps), T - 1) (halves round up).

The stored frames' rate comes from the builder: its config's `fps` (video builders'
VideoBuilderConfig, moving_shapes), or, for configs that keep every frame (fps 0), each example's
`orig_fps`. Image datasets (one frame a row) need none. Other datasets without either (a
written dataset, a builder without an fps) need `--source_fps`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from vlx.cli import UsageError

PER_EXAMPLE = 0.0   # source_fps value meaning: each example's `orig_fps` feature


def source_fps(builder, flag: float | None) -> float:
  """The stored frames' rate (PER_EXAMPLE: each example's `orig_fps`); `flag` (--source_fps)
  wins. One line naming the flag when nothing says it."""
  if flag is not None:
    if not flag > 0:
      raise UsageError(f"--source_fps={flag}: must be > 0")
    return float(flag)
  fps = getattr(getattr(builder, "builder_config", None), "fps", None)
  if isinstance(fps, (int, float)) and fps > 0:
    return float(fps)
  if isinstance(fps, (int, float)) and fps == 0 and "orig_fps" in builder.info.features:
    return PER_EXAMPLE
  from vlx.data import pipeline  # pylint: disable=import-outside-toplevel
  if pipeline.is_image_dataset(builder):
    return 1.0   # one frame per row: one feature whatever the rate
  raise UsageError(f"--builder {builder.name}: its stored frames' rate is not recorded (no "
                   "config fps); pass --source_fps (frames stored per second)")


def frame_indices(num_frames: int, fps: float, features_per_second: float) -> np.ndarray:
  """int32 [N] stored-frame indices of one clip (numpy twin of `tf_frame_indices`)."""
  if num_frames < 1:
    return np.zeros([0], np.int32)
  n = max(1, int(np.ceil(num_frames * features_per_second / fps - 1e-9)))
  t = np.arange(n, dtype=np.float64) / features_per_second
  return np.minimum(np.floor(t * fps + 0.5), num_frames - 1).astype(np.int32)


def tf_frame_indices(num_frames: tf.Tensor, fps: tf.Tensor, features_per_second: float
                     ) -> tf.Tensor:
  """int32 [N] (see the module docstring) in TF ops; `fps` a float scalar tensor."""
  t_frames = tf.cast(num_frames, tf.float64)
  fps = tf.cast(fps, tf.float64)
  n = tf.cast(tf.math.ceil(t_frames * features_per_second / fps - 1e-9), tf.int32)
  n = tf.where(num_frames > 0, tf.maximum(n, 1), 0)
  t = tf.cast(tf.range(n), tf.float64) / features_per_second
  return tf.cast(tf.minimum(tf.floor(t * fps + 0.5), t_frames - 1.0), tf.int32)

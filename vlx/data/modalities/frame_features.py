"""The `frame_features` reader: stored frames -> a small fixed feature per frame, [T, dim].

A stand-in for pre-computed per-second video features (a feature-input model's `video` input)
when no feature extractor has been run, e.g. for CPU demos on a synthetic frame dataset. It is
deterministic and has no learned weights:

  1. sample `num_frames` frames as the `frames` reader does (its `sampling`; '' = 'rand' in
     training, 'uniform' in evaluation) and resize them to `resolution` px (square);
  2. silhouette: a pixel is foreground when its RGB distance to the frame's per-channel median
     (the background, when objects cover less than half of the frame) exceeds `threshold`
     (0..255 units); the 0/1 map is average-pooled to `grid` x `grid` cells;
  3. per frame t the pooled map m_t and its change m_t - m_{t-1} (zero for the first frame) are
     concatenated and multiplied by a fixed Gaussian matrix [2 * grid^2, dim] (from `seed`,
     scaled by 1 / sqrt(2 * grid^2)).

The silhouette carries shape, size, count, position and motion but NOT colour (every colour
far enough from the background gives the same 1): on a dataset whose audio encodes colour
(moving_shapes: a tone per colour), colour reaches a video+audio model only through the audio,
so retrieval shows whether audio helps.

Config (reader='frame_features'): feature ('video'), key ('video'; mask `<key>_mask`, all ones),
num_frames / sampling / resolution (the block's), grid (8), dim (128), threshold (100.0),
seed (0).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import video_ops
from vlx.data.modalities.fields import Fields


@dataclasses.dataclass(frozen=True)
class FrameFeatures:
  """See the module docstring for the fields."""
  num_frames: int
  resolution: int
  feature: str = "video"
  key: str = "video"
  sampling: str = ""
  grid: int = 8
  dim: int = 128
  threshold: float = 100.0
  seed: int = 0

  @property
  def keys(self) -> tuple[str, ...]:
    return (self.key, self.key + "_mask")

  def decoder(self) -> Any:
    return tfds.decode.SkipDecoding()   # only the sampled frames are decoded

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {self.key: ((self.num_frames, self.dim), np.float32),
            self.key + "_mask": ((self.num_frames,), np.int32)}

  def projection(self) -> np.ndarray:
    """The fixed matrix [2 * grid^2, dim] (float32)."""
    rows = 2 * self.grid * self.grid
    rng = np.random.default_rng(self.seed)
    return (rng.standard_normal((rows, self.dim)) / np.sqrt(rows)).astype(np.float32)

  def silhouettes(self, frames: tf.Tensor) -> tf.Tensor:
    """float32 [T, H, W, 3] in [0, 255] -> pooled foreground maps [T, grid * grid]."""
    t = tf.shape(frames)[0]
    flat = tf.reshape(frames, [t, -1, 3])
    n = tf.shape(flat)[1]
    median = tf.sort(flat, axis=1)[:, n // 2]                       # [T, 3]
    dist = tf.norm(frames - median[:, None, None, :], axis=-1)      # [T, H, W]
    fg = tf.cast(dist > self.threshold, tf.float32)[..., None]
    pooled = tf.image.resize(fg, [self.grid, self.grid], method="area")
    return tf.reshape(pooled, [t, self.grid * self.grid])

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0
           ) -> dict[str, tf.Tensor]:
    del view  # the stream passes the view's temporal window as `encoded`
    sampling = self.sampling or ("rand" if train else "uniform")
    idx = video_ops.sample_indices(tf.shape(encoded)[0], self.num_frames, sampling, seed)
    frames = video_ops.resize(video_ops.decode_frames(tf.gather(encoded, idx)), self.resolution)
    maps = self.silhouettes(frames)
    change = tf.concat([tf.zeros_like(maps[:1]), maps[1:] - maps[:-1]], axis=0)
    feats = tf.concat([maps, change], axis=-1) @ tf.constant(self.projection())
    feats = tf.ensure_shape(feats, [self.num_frames, self.dim])
    return {self.key: feats, self.key + "_mask": tf.ones([self.num_frames], tf.int32)}


def from_config(cfg: Any, where: str) -> FrameFeatures:
  """FrameFeatures from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  d = FrameFeatures(num_frames=1, resolution=1)
  sampling = cfg.get("sampling", "") or ""
  if sampling and sampling not in video_ops.SAMPLINGS:
    raise f.error("sampling", f"{sampling!r} is not one of {video_ops.SAMPLINGS}")
  return FrameFeatures(
      num_frames=f.int("num_frames", 0, low=1), resolution=f.int("resolution", 0, low=1),
      feature=f.str("feature", d.feature), key=f.str("key", d.key), sampling=sampling,
      grid=f.int("grid", d.grid, low=1), dim=f.int("dim", d.dim, low=1),
      threshold=f.float("threshold", d.threshold, low=0.0), seed=f.int("seed", d.seed, low=0))

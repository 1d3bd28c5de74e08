"""Feature-sequence reader: pre-computed per-time-step features [N, D] -> `features` [max_len, D].

Follows the video input of shared/reference/eao/spec.md section 4 ("Video",
dataset/utils.py: create_video_features, strategy 'clip'): features at a fixed rate (1 per
second), the first `n_video_tokens` kept (12 in pre-training), zero padded, mask = 1 for real
steps, optionally L2-normalised per step. Builders store the sequence as the float32 TFDS feature
`features` [N, D] (vlx.data.builder_base.Streams.features_dim); N varies per clip.

select (not `sampling`: an input inherits its data block's frame `sampling`):
  'window'   train: a random contiguous window of max_len steps; eval: the first max_len steps
             (spec strategy 'clip') of the feature, or of the view's temporal window
  'uniform'  max_len steps spread over the whole sequence, one per equal segment (the frame
             sampler's 'segment_rand' in training, 'segment_middle' in eval); sequences of at most
             max_len steps are kept whole
Shorter sequences are zero padded; `<key>_mask` int32 [max_len] marks the real steps; an empty
sequence gives zeros and an all-zero mask.

Config (reader='features'): feature ('features'), key ('features'), dim (required: the stored D,
checked), max_len (required), select ('window'), normalize (False: L2 per step).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from vlx.data import video_ops
from vlx.data.errors import DataConfigError
from vlx.data.modalities import windows
from vlx.data.modalities.fields import Fields

SELECTS = ("window", "uniform")


@dataclasses.dataclass(frozen=True)
class FeaturesReader:
  """See the module docstring for the fields."""
  dim: int
  max_len: int
  feature: str = "features"
  key: str = "features"
  select: str = "window"
  normalize: bool = False

  @property
  def keys(self) -> tuple[str, ...]:
    return (self.key, self.key + "_mask")

  def decoder(self) -> Any:
    return None

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {self.key: ((self.max_len, self.dim), np.float32),
            self.key + "_mask": ((self.max_len,), np.int32)}

  def _checked(self, encoded: tf.Tensor) -> tf.Tensor:
    x = tf.cast(tf.convert_to_tensor(encoded), tf.float32)
    where = f"{self.feature}: stored features"
    if x.shape.rank is not None and x.shape.rank != 2:
      raise DataConfigError(f"{where} have shape {x.shape}, expected [N, {self.dim}]")
    stored = x.shape[-1]
    if stored is not None:
      if stored != self.dim:
        raise DataConfigError(f"{where} have D={stored} but the reader's dim is {self.dim}")
      return x
    check = tf.debugging.assert_equal(tf.shape(x)[-1], self.dim,
                                      message=f"{where}: D differs from config dim "
                                              f"{self.dim}")
    with tf.control_dependencies([check]):
      return tf.ensure_shape(tf.identity(x), [None, self.dim])

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0
           ) -> dict[str, tf.Tensor]:
    del view  # evaluation views arrive as the view's temporal window of `encoded`
    x = self._checked(encoded)
    n = tf.shape(x)[0]
    if self.select == "uniform":
      idx = tf.cond(
          n > self.max_len,
          lambda: video_ops.sample_indices(
              n, self.max_len, "segment_rand" if train else "segment_middle", seed),
          lambda: tf.range(self.max_len, dtype=tf.int32))
      idx = tf.boolean_mask(idx, idx < n)  # short sequences: all n steps
      x = tf.gather(x, idx)
      start = tf.zeros([], tf.int32)
    else:
      start = windows.window_start(n, self.max_len, seed, train=train, anchor="start")
    out, mask = windows.crop_or_pad(x, start, self.max_len)
    if self.normalize:
      out = tf.math.l2_normalize(out, axis=-1)  # zero rows stay zero
    return {self.key: out, self.key + "_mask": mask}


def from_config(cfg: Any, where: str) -> FeaturesReader:
  """FeaturesReader from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  reader = FeaturesReader(
      dim=f.int("dim", 0), max_len=f.int("max_len", 0),
      feature=f.str("feature", "features"), key=f.str("key", "features"),
      select=f.str("select", "window", SELECTS), normalize=f.bool("normalize", False))
  if reader.dim < 1:
    raise f.error("dim", f"the stored feature size D is required (>= 1), got {reader.dim}")
  if reader.max_len < 1:
    raise f.error("max_len", f"steps per row are required (>= 1), got {reader.max_len}")
  return reader

"""The `frame_tokens` reader: stored frames -> a grid of colour codes, read like a token grid.

A stand-in for dVAE tokens (vlx.data.modalities.token_grid) that needs no tokenised dataset: CPU
demos and tests train token models on a frames dataset (e.g. moving_shapes) directly. Each
frame the clip takes is decoded (video_ops.decode_frames, as the `frames` reader), resized to
(grid * 8) x (grid * 8) (video_ops.resize 'square', antialiased bilinear), its pixels rounded to
integers and split into 8 x 8 patches; each patch's mean colour is quantised to `levels` per
channel, q_c = floor(mean_c * levels / 256) (exactly, from the integer patch sums), and its code
is id = q_r * levels^2 + q_g * levels + q_b (< levels^3). The codes are not a learned
vocabulary: they only give a model something spatially and temporally coherent to predict.

Clips, stride, padding, clips / test_clips and evaluation views are exactly TokenGridReader's
(frames are picked from the stored frames before decoding, so only the clip's frames are
decoded); a frames dataset has one spatial view, so spatial_views must be 0. Set pad_id outside
[0, levels^3) (e.g. the model's PAD id): the default 0 is also a colour code.

Config (reader='frame_tokens'): feature ('video'), key ('vq_tokens'; the mask is 'vq_mask'),
num_frames (the block's), grid (required; codes per side), levels (4), stride (1), pad_id (0),
clips (0), test_clips (1).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import video_ops
from vlx.data.modalities import token_grid
from vlx.data.modalities.fields import Fields

PATCH = 8   # pixels per code side, as the dVAE's downsampling


@dataclasses.dataclass(frozen=True)
class FrameTokens(token_grid.TokenGridReader):
  """Encoded frames [N] -> colour codes sampled as TokenGridReader (height = width = grid)."""
  feature: str = "video"
  levels: int = 4

  def decoder(self) -> Any:
    return tfds.decode.SkipDecoding()   # picked before decoding: only the clip's frames decoded

  def _checked(self, encoded: tf.Tensor) -> tf.Tensor:
    return tf.ensure_shape(tf.convert_to_tensor(encoded), [None])

  def _frames(self, picked: tf.Tensor) -> tf.Tensor:
    return frame_codes(video_ops.decode_frames(picked), self.height, self.levels)


def frame_codes(frames: tf.Tensor, grid: int, levels: int) -> tf.Tensor:
  """uint8 [T, h, w, 3] frames -> int32 [T, grid, grid] colour codes (the module docstring)."""
  side = grid * PATCH
  pixels = tf.cast(tf.round(video_ops.resize(frames, side, "square")), tf.int32)
  patches = tf.reshape(pixels, [-1, grid, PATCH, grid, PATCH, 3])
  sums = tf.reduce_sum(patches, axis=[2, 4])                         # [T, grid, grid, 3]
  q = tf.minimum(sums * levels // (256 * PATCH * PATCH), levels - 1)
  codes = q[..., 0] * levels * levels + q[..., 1] * levels + q[..., 2]
  return tf.ensure_shape(codes, [None, grid, grid])


def from_config(cfg: Any, where: str) -> FrameTokens:
  """FrameTokens from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  grid = f.int("grid", 0)
  reader = FrameTokens(
      num_frames=f.int("num_frames", 0), height=grid, width=grid,
      feature=f.str("feature", "video"), key=f.str("key", "vq_tokens"),
      stride=f.int("stride", 1, low=1), pad_id=f.int("pad_id", 0),
      levels=f.int("levels", 4, low=2), **token_grid.view_fields(f))
  if reader.levels > 256:
    raise f.error("levels", f"must be <= 256 (8-bit colour channels), got {reader.levels}")
  if grid < 1:
    raise f.error("grid", f"required (>= 1 codes per side), got {grid}")
  if reader.num_frames < 1:
    raise f.error("num_frames", f"required (>= 1), got {reader.num_frames}")
  if reader.spatial_views:
    raise f.error("spatial_views", f"must be 0 (a frames feature holds one spatial view), got "
                  f"{reader.spatial_views}")
  if cfg.get("align_with", "") if hasattr(cfg, "get") else "":
    raise f.error("align_with", "not supported by frame_tokens (read the frames themselves)")
  return reader

"""Stored JPEG frames -> the float32 [T, P, P, 3] pixels in [0, 1] the dVAE encodes (TF ops, host).

Variable-size frames are brought to one size here, on the host, so the device sees fixed-shape
batches (one compile). 'pad' is VIOLET's str2img (violet spec §1): zeros on both sides of the
short axis, (long - short) // 2 each, then a bilinear resize to P x P (a residual odd pixel is
squashed, as the reference's Resize([P, P])). 'crop' is VIMPAC's video2token view (vimpac spec
§1): short side -> `short`, long side int(long * short / short_side_before), a P x P window at
int(f * (size - P) / 2) (f = 0 top/left, 1 center, 2 bottom/right), optionally flipped.
Resizes are bilinear with antialiasing (PIL's and ffmpeg's downscales average too).
"""
from __future__ import annotations

import tensorflow as tf

from vlx.data import video_ops
from vlx.data.tokenize.settings import CROP_AT, Settings


def pad_to_square(frames: tf.Tensor) -> tf.Tensor:
  """[T, H, W, C] -> zero-padded by (long - short) // 2 on both sides of the short axis."""
  h, w = tf.shape(frames)[1], tf.shape(frames)[2]
  dh = tf.maximum(w - h, 0) // 2
  dw = tf.maximum(h - w, 0) // 2
  return tf.pad(frames, [[0, 0], [dh, dh], [dw, dw], [0, 0]])


def _resize(frames: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  out = tf.image.resize(tf.cast(frames, tf.float32), size, method="bilinear", antialias=True)
  return tf.clip_by_value(out, 0.0, 255.0)


def resize_short(frames: tf.Tensor, short: int) -> tf.Tensor:
  """Short side -> `short` (aspect kept, long side truncated)."""
  hw = tf.shape(frames)[1:3]
  lo = tf.reduce_min(hw)
  return _resize(frames, tf.maximum(hw * short // lo, short))


def crop_window(resized: tf.Tensor, out: int, where: str) -> tf.Tensor:
  """The `out` x `out` window of [T, H, W, C] at int(f * (size - out) / 2) (f of `where`)."""
  size = tf.shape(resized)[1:3]
  f = CROP_AT[where]
  top = f * (size[0] - out) // 2
  left = f * (size[1] - out) // 2
  return resized[:, top:top + out, left:left + out, :]


def crop_view(frames: tf.Tensor, short: int, out: int, crop_at: str) -> tf.Tensor:
  """Short side -> `short` (aspect kept, long side truncated), then the `out` window at crop_at."""
  return crop_window(resize_short(frames, short), out, crop_at)


def pixels(encoded: tf.Tensor, s: Settings) -> tf.Tensor:
  """[T] encoded frames -> float32 [T, P, P, 3] in [0, 1] (P = s.pixels)."""
  frames = video_ops.decode_frames(encoded)
  p = s.pixels
  if s.fit == "pad":
    out = _resize(pad_to_square(frames), tf.constant([p, p]))
  else:
    out = crop_view(frames, s.resized_short, p, s.crop_at)
  if s.hflip:
    out = out[:, :, ::-1, :]
  return tf.ensure_shape(out / 255.0, [None, p, p, 3])


def view_pixels(encoded: tf.Tensor, s: Settings) -> tf.Tensor:
  """[T] encoded frames -> float32 [T * V, P, P, 3] in [0, 1]: the V views of `s.view_list`
  (`--views`) of each frame, frame-major (row t * V + v = view v of frame t). Each view's pixels
  are those `pixels` gives for the single-view run of that view (same ops, same order); frames
  are decoded once and resized once per short side."""
  frames = video_ops.decode_frames(encoded)
  p = s.pixels
  resized = {}
  out = []
  for view in s.view_list:
    if view.short_side not in resized:
      resized[view.short_side] = resize_short(frames, view.short_side)
    crop = crop_window(resized[view.short_side], p, view.crop_at)
    out.append(crop[:, :, ::-1, :] if view.hflip else crop)
  stacked = tf.stack(out, axis=1)
  return tf.ensure_shape(tf.reshape(stacked, [-1, p, p, 3]) / 255.0, [None, p, p, 3])

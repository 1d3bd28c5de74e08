"""ALPRO's data hook (vlx.data.hooks): PEM crops (spec §5.4) on retrieval training rows.

With config.model.pem, every training row also gets `crop_video` float32 [T, S, S, C] (the clip
with the pixels outside one random patch-aligned box at raw 0) and `mpm_mask` float32 [S/p, S/p]
(1 = patch outside the box), p = config.model.video.patch_size. The box is drawn from its own
seed stream (salt ERASE_SALT), so the other keys do not change with model.pem.
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

from vlx.data import tasks
from vlx.data.video_ops import normalize

KEYS = ("crop_video", "mpm_mask")
ERASE_SALT = 4   # vlx.data.seeds: the stream uses 1-3


# ALPRO's random_erase (spec §5.4): area fraction and aspect ranges of the PEM box.
ERASE_AREA = (0.3, 0.5)
ERASE_ASPECT = (0.3, 1 / 0.3)
# Candidate boxes drawn at once; the first that fits is taken (= the reference's retry loop).
# About 13% of draws fit at 224/16, so none fitting has probability ~1e-16.
ERASE_TRIES = 256


def erase_box(height: int, width: int, patch_size: int, seed: tf.Tensor,
              tries: int = ERASE_TRIES) -> tf.Tensor:
  """int32 [4] = (top, left, h, w) of a patch-aligned box, ALPRO's `random_erase` draw.

  Per try: s ~ U(0.3, 0.5)·H·W pixels, r ~ U(0.3, 1/0.3), w = int(sqrt(s/r)) (along the width),
  h = int(sqrt(s·r)), left ~ randint(0, W), top ~ randint(0, H); all four rounded down to a
  multiple of `patch_size`; kept if the box fits. Unlike the reference, an empty box (w or h
  rounded down to 0, possible only when H/p or W/p is small, e.g. 32/16) is also rejected: it
  would leave PEM nothing to pool. The tries are drawn together (stateless, from `seed`); if none
  fits, the first is clamped into the frame.
  """
  for name, size in (("height", height), ("width", width)):
    if size % patch_size or size < patch_size:
      raise ValueError(f"PEM crop: frame {name} {size} is not a positive multiple of the patch "
                       f"size {patch_size} (config.model.video.patch_size)")
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
  area = tf.random.stateless_uniform([tries], seeds[0], *ERASE_AREA, dtype=tf.float64)
  area *= float(height * width)
  aspect = tf.random.stateless_uniform([tries], seeds[1], *ERASE_ASPECT, dtype=tf.float64)
  w = tf.cast(tf.floor(tf.sqrt(area / aspect)), tf.int32)
  h = tf.cast(tf.floor(tf.sqrt(area * aspect)), tf.int32)
  left = tf.random.stateless_uniform([tries], seeds[2], 0, width, dtype=tf.int32)
  top = tf.random.stateless_uniform([tries], seeds[3], 0, height, dtype=tf.int32)
  w, h, left, top = (x - x % patch_size for x in (w, h, left, top))
  fits = (left + w <= width) & (top + h <= height) & (w > 0) & (h > 0)
  first = tf.reduce_min(tf.where(fits, tf.range(tries), tries))

  def chosen():
    return tf.stack([top[first], left[first], h[first], w[first]])

  def clamped():
    w0 = tf.clip_by_value(w[0], patch_size, width)
    h0 = tf.clip_by_value(h[0], patch_size, height)
    return tf.stack([tf.minimum(top[0], height - h0), tf.minimum(left[0], width - w0), h0, w0])

  return tf.cond(first < tries, chosen, clamped)


def pem_crop(video: tf.Tensor, box: tf.Tensor, patch_size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Normalised [T, H, W, C] clip and a (top, left, h, w) box -> (crop_video, mpm_mask).

  crop_video: the clip with every pixel outside the box set to raw 0 (so -mean/std after
  normalisation), the same box in every frame. mpm_mask: float32 [H/p, W/p], 1 for patches
  outside the box, 0 inside (exact: the box is patch-aligned).
  """
  shape = video.shape
  height, width = int(shape[1]), int(shape[2])
  top, left, h, w = tf.unstack(box)

  def inside(coords, start, size):
    return (coords >= start) & (coords < start + size)

  pixels = (inside(tf.range(height), top, h)[:, None] & inside(tf.range(width), left, w)[None, :])
  fill = normalize(tf.zeros([1, 1, 1, int(shape[3])]))
  crop = tf.where(pixels[None, :, :, None], video, fill)
  rows = tf.range(height // patch_size) * patch_size
  cols = tf.range(width // patch_size) * patch_size
  patches = inside(rows, top, h)[:, None] & inside(cols, left, w)[None, :]
  return crop, 1.0 - tf.cast(patches, tf.float32)


@dataclasses.dataclass(frozen=True)
class PemCrops:
  """Row hook: `crop_video` / `mpm_mask` of the row's `video` (PEM, spec §5.4)."""
  patch_size: int
  keys: tuple[str, ...] = KEYS

  def extra_dataset(self, ctx):
    return None

  def apply(self, row, ctx, counter):
    video = row["video"]
    box = erase_box(int(video.shape[1]), int(video.shape[2]), self.patch_size,
                    ctx.example_seed(ERASE_SALT, counter))
    crop, mask = pem_crop(video, box, self.patch_size)
    return dict(crop_video=crop, mpm_mask=mask)

  def finish(self, batch, ctx):
    return {}


def pem_patch_size(config) -> int:
  """The PEM box grid (config.model.video.patch_size) when config.model.pem and the training task
  is retrieval, else 0."""
  model = config.get("model", None)
  if model is None or not model.get("pem", False) or tasks.train_task(config.data.train) != \
      "retrieval":
    return 0
  video = model.get("video", None)
  patch = int(video.get("patch_size", 0)) if video is not None else 0
  if patch <= 0:
    raise ValueError("config.model.pem is True but config.model.video.patch_size is not set: "
                     "the PEM crop boxes are snapped to the patch grid")
  return patch


def data_hooks(config) -> tuple:
  """Family.data_hooks: the PEM crops when config.model.pem (retrieval training)."""
  patch = pem_patch_size(config)
  return (PemCrops(patch),) if patch else ()

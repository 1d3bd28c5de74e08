"""ALPRO's training augmentations (spec §7) as stateless TF ops on float32 [T, H, W, 3] in [0, 255].

`config.data.train.augment` (video datasets) / `image_augment` (image datasets) pick one of
mixture.AUGMENTS:
* 'temporal_randaug': TemporalConsistentRandomAugment(N=2, M=5) of WebVid pre-training and QA
  fine-tuning: N *distinct* ops from TEMPORAL_OPS, each always applied, the same ops and magnitudes
  on every frame of the clip.
* 'image_randaug': CC3M's RandomResizedCrop(size, scale 0.2-1, ratio 3/4-4/3, bicubic) +
  horizontal flip (p 0.5) + RandomAugment(N=2, M=7) over IMAGE_OPS (drawn with replacement, each
  applied with probability 0.5); it replaces the resize and crop of the clip.

Magnitudes follow the reference's level-to-argument table (MAX_LEVEL 10): enhance factor
`M/10·1.8 + 0.1` (Contrast, Brightness, Sharpness; exactly 1.0 = no change at M=5), shear
`M/10·0.3`, translate `M/10·10` pixels, rotate `M/10·30` degrees counter-clockwise about
(W/2, H/2), always in the positive direction; geometric ops fill with grey 128 and interpolate
bilinearly. The reference works on uint8 with OpenCV; these ops stay in float32 (clipped to
[0, 255], no uint8 truncation), so pixels differ by rounding, not by transform. Every random
choice comes from the `seed` argument (stateless), so a resumed run augments identically.
"""
from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

MAX_LEVEL = 10
TRANSLATE_CONST = 10          # pixels at MAX_LEVEL
FILL = 128.0                  # the reference's replace value (grey)
TEMPORAL_N, TEMPORAL_M = 2, 5
IMAGE_N, IMAGE_M = 2, 7
TEMPORAL_OPS = ("Identity", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                "TranslateX", "TranslateY", "Rotate", "HorizontalFlip")
IMAGE_OPS = ("Identity", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
             "TranslateY", "Rotate")
RRC_SCALE, RRC_RATIO, RRC_TRIES = (0.2, 1.0), (3 / 4, 4 / 3), 10
# Luma weights the reference's Contrast applies to channels 0, 1, 2 of its RGB frames.
_CONTRAST_WEIGHTS = (0.114, 0.587, 0.299)


def magnitudes(level: float) -> dict[str, float]:
  """The op arguments at `level` (the reference's level_to_args table)."""
  r = level / MAX_LEVEL
  return dict(enhance=r * 1.8 + 0.1, shear=r * 0.3, translate=r * TRANSLATE_CONST,
              rotate=r * 30.0)


def _clip(x: tf.Tensor) -> tf.Tensor:
  return tf.clip_by_value(x, 0.0, 255.0)


def _affine(frames: tf.Tensor, transform: list) -> tf.Tensor:
  """Applies one output->input affine map [a0, a1, a2, b0, b1, b2] to every frame."""
  t = tf.cast(tf.stack([*transform, 0.0, 0.0]), tf.float32)
  n = tf.shape(frames)[0]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=frames, transforms=tf.tile(t[None], [n, 1]), output_shape=tf.shape(frames)[1:3],
      fill_value=tf.constant(FILL), interpolation="BILINEAR", fill_mode="CONSTANT")


def contrast(frames: tf.Tensor, factor: float) -> tf.Tensor:
  """Per frame: (x - m)·factor + m, m = the luma-weighted mean of the frame."""
  means = tf.reduce_mean(frames, axis=[1, 2])                      # [T, 3]
  m = tf.reduce_sum(means * tf.constant(_CONTRAST_WEIGHTS), -1)     # [T]
  m = m[:, None, None, None]
  return _clip((frames - m) * factor + m)


def brightness(frames: tf.Tensor, factor: float) -> tf.Tensor:
  return _clip(frames * factor)


def sharpness(frames: tf.Tensor, factor: float) -> tf.Tensor:
  """Blends with the 3x3 smoothing [[1,1,1],[1,5,1],[1,1,1]]/13 inside a 1-pixel border (the
  border keeps its pixels, as the reference)."""
  k = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(k[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(frames, kernel, [1, 1, 1, 1], "VALID")
  inner = frames[:, 1:-1, 1:-1, :]
  delta = smooth + factor * (inner - smooth) - inner
  return _clip(frames + tf.pad(delta, [[0, 0], [1, 1], [1, 1], [0, 0]]))


def shear_x(frames: tf.Tensor, s: float) -> tf.Tensor:
  return _affine(frames, [1.0, -s, 0.0, 0.0, 1.0, 0.0])     # output (x, y) <- input (x - s·y, y)


def shear_y(frames: tf.Tensor, s: float) -> tf.Tensor:
  return _affine(frames, [1.0, 0.0, 0.0, -s, 1.0, 0.0])


def _shift(frames: tf.Tensor, pixels: int, axis: int) -> tf.Tensor:
  """Content moved towards index 0 by a whole number of pixels, grey fill (= the bilinear
  warp at an integer offset, several times faster on CPU)."""
  n = tf.minimum(pixels, tf.shape(frames)[axis])
  kept = tf.gather(frames, tf.range(n, tf.shape(frames)[axis]), axis=axis)
  fill_shape = tf.tensor_scatter_nd_update(tf.shape(frames), [[axis]], [n])
  return tf.concat([kept, tf.fill(fill_shape, FILL)], axis)


def translate_x(frames: tf.Tensor, pixels: float) -> tf.Tensor:
  """Content moves left by `pixels`."""
  if float(pixels).is_integer() and pixels >= 0:
    return _shift(frames, int(pixels), 2)
  return _affine(frames, [1.0, 0.0, pixels, 0.0, 1.0, 0.0])


def translate_y(frames: tf.Tensor, pixels: float) -> tf.Tensor:
  """Content moves up by `pixels`."""
  if float(pixels).is_integer() and pixels >= 0:
    return _shift(frames, int(pixels), 1)
  return _affine(frames, [1.0, 0.0, 0.0, 0.0, 1.0, pixels])


def rotate(frames: tf.Tensor, degrees: float) -> tf.Tensor:
  """Counter-clockwise (as displayed) about (W/2, H/2), OpenCV's getRotationMatrix2D."""
  a, b = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
  hw = tf.cast(tf.shape(frames)[1:3], tf.float32)
  cy, cx = hw[0] / 2, hw[1] / 2
  return _affine(frames, [a, -b, cx - a * cx + b * cy, b, a, cy - b * cx - a * cy])


def horizontal_flip(frames: tf.Tensor) -> tf.Tensor:
  return tf.reverse(frames, axis=[2])


def _op(name: str, level: float) -> Callable[[tf.Tensor], tf.Tensor]:
  m = magnitudes(level)
  table = {
      "Identity": lambda x: x,
      "Contrast": lambda x: contrast(x, m["enhance"]),
      "Brightness": lambda x: brightness(x, m["enhance"]),
      "Sharpness": lambda x: sharpness(x, m["enhance"]),
      "ShearX": lambda x: shear_x(x, m["shear"]),
      "ShearY": lambda x: shear_y(x, m["shear"]),
      "TranslateX": lambda x: translate_x(x, m["translate"]),
      "TranslateY": lambda x: translate_y(x, m["translate"]),
      "Rotate": lambda x: rotate(x, m["rotate"]),
      "HorizontalFlip": horizontal_flip,
  }
  return table[name]


def apply_op(frames: tf.Tensor, index: tf.Tensor, ops: tuple[str, ...], level: float) -> tf.Tensor:
  """frames with ops[index] at `level` (index a scalar tensor)."""
  branches = [(lambda f=_op(name, level): f(frames)) for name in ops]
  return tf.switch_case(tf.cast(index, tf.int32), branches)


def temporal_randaug(frames: tf.Tensor, seed: tf.Tensor, n: int = TEMPORAL_N,
                     level: float = TEMPORAL_M, ops: tuple[str, ...] = TEMPORAL_OPS) -> tf.Tensor:
  """N distinct ops (random order), all applied, identical for every frame."""
  order = tf.argsort(tf.random.stateless_uniform([len(ops)], seed))[:n]
  for i in range(n):
    frames = apply_op(frames, order[i], ops, level)
  return frames


def random_augment(frames: tf.Tensor, seed: tf.Tensor, n: int = IMAGE_N,
                   level: float = IMAGE_M, ops: tuple[str, ...] = IMAGE_OPS) -> tf.Tensor:
  """N ops drawn with replacement, each applied with probability 0.5 (RandomAugment)."""
  s_ops, s_apply = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  picks = tf.random.stateless_uniform([n], s_ops, 0, len(ops), dtype=tf.int32)
  apply = tf.random.stateless_uniform([n], s_apply) < 0.5
  for i in range(n):
    frames = tf.cond(apply[i], lambda x=frames, j=picks[i]: apply_op(x, j, ops, level),
                     lambda x=frames: x)
  return frames


def resized_crop_box(height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor,
                     scale: tuple[float, float] = RRC_SCALE,
                     ratio: tuple[float, float] = RRC_RATIO,
                     tries: int = RRC_TRIES) -> tf.Tensor:
  """int32 (top, left, h, w) of RandomResizedCrop: up to `tries` draws of area fraction ~ U(scale)
  and log-uniform aspect ~ ratio, the first that fits; else the centre crop clamped to `ratio`."""
  seeds = tf.random.experimental.stateless_split(seed, 4)
  hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = hf * wf * tf.random.stateless_uniform([tries], seeds[0], *scale)
  aspect = tf.exp(tf.random.stateless_uniform([tries], seeds[1], math.log(ratio[0]),
                                               math.log(ratio[1])))
  w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = tf.reduce_min(tf.where(fits, tf.range(tries), tries))
  u_top = tf.random.stateless_uniform([tries], seeds[2])
  u_left = tf.random.stateless_uniform([tries], seeds[3])

  def drawn():
    hh, ww = h[first], w[first]
    top = tf.cast(tf.floor(u_top[first] * tf.cast(height - hh + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(u_left[first] * tf.cast(width - ww + 1, tf.float32)), tf.int32)
    return tf.stack([tf.minimum(top, height - hh), tf.minimum(left, width - ww), hh, ww])

  def centre():
    in_ratio = wf / hf
    ww = tf.where(in_ratio > ratio[1], tf.cast(tf.round(hf * ratio[1]), tf.int32), width)
    hh = tf.where(in_ratio < ratio[0], tf.cast(tf.round(wf / ratio[0]), tf.int32), height)
    return tf.stack([(height - hh) // 2, (width - ww) // 2, hh, ww])

  return tf.cond(first < tries, drawn, centre)


def random_resized_crop(frames: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """The same RandomResizedCrop box for every frame, resized to size x size (bicubic)."""
  shape = tf.shape(frames)
  top, left, h, w = tf.unstack(resized_crop_box(shape[1], shape[2], seed))
  crop = frames[:, top:top + h, left:left + w, :]
  out = tf.image.resize(crop, [size, size], method="bicubic", antialias=True)
  return tf.ensure_shape(_clip(out), [None, size, size, 3])


def image_randaug(frames: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """CC3M's transform on decoded frames of any size -> [T, size, size, 3] (one draw per clip)."""
  s_crop, s_flip, s_aug = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  frames = random_resized_crop(tf.cast(frames, tf.float32), size, s_crop)
  flip = tf.random.stateless_uniform([], s_flip) < 0.5
  frames = tf.cond(flip, lambda: horizontal_flip(frames), lambda: frames)
  return random_augment(frames, s_aug)

"""Frame sampling and per-clip video preprocessing as TF ops (run inside tf.data).

Sampling follows ALPRO (spec §7): `rand` = sorted random frames without replacement, `headtail` =
half from each half of the clip, `uniform` = numpy's integer arange `[0, s, 2s, ...]` with
s = floor(vlen / T). Randomness comes only from stateless ops, so a clip's frames depend on its
seed alone (the pipeline derives seeds from (config.seed, example counter)).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

SAMPLINGS = ("rand", "headtail", "uniform")
# CLIP pixel statistics (ALPRO's ImageNorm, spec §7), RGB.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def uniform_indices_np(vlen: int, num_frames: int) -> np.ndarray:
  """The reference formula ALPRO uses (first `num_frames` entries)."""
  return np.arange(0, vlen, vlen / num_frames, dtype=int)[:num_frames]


def _spread(lo: tf.Tensor, n: tf.Tensor, num: int) -> tf.Tensor:
  """`num` indices spread over [lo, lo + n) with repeats; the fallback when n < num."""
  return lo + tf.range(num, dtype=tf.int32) * n // num


def _sorted_sample(lo: tf.Tensor, n: tf.Tensor, num: int, seed: tf.Tensor) -> tf.Tensor:
  """Sorted `num` distinct indices from [lo, lo + n) (random order = argsort of uniforms)."""
  def draw():
    order = tf.argsort(tf.random.stateless_uniform([n], seed))[:num]
    return lo + tf.sort(tf.cast(order, tf.int32))
  return tf.cond(n >= num, draw, lambda: _spread(lo, n, num))


def sample_indices(vlen: tf.Tensor, num_frames: int, sampling: str,
                   seed: tf.Tensor | None = None) -> tf.Tensor:
  """int32 [num_frames] frame indices into a clip of `vlen` frames."""
  vlen = tf.cast(vlen, tf.int32)
  if sampling == "uniform":
    return tf.range(num_frames, dtype=tf.int32) * (vlen // num_frames)
  if seed is None:
    raise ValueError(f"sampling={sampling!r} needs a seed")
  if sampling == "rand":
    return _sorted_sample(tf.constant(0), vlen, num_frames, seed)
  if sampling == "headtail":
    half, head_n = vlen // 2, num_frames // 2
    seeds = tf.random.experimental.stateless_split(seed, 2)
    head = _sorted_sample(tf.constant(0), half, head_n, seeds[0])
    tail = _sorted_sample(half, vlen - half, num_frames - head_n, seeds[1])
    return tf.concat([head, tail], 0)
  raise ValueError(f"unknown frame sampling {sampling!r}; expected one of {SAMPLINGS} "
                   "(config.data.train.sampling / evals.<name>.sampling)")


def decode_frames(encoded: tf.Tensor) -> tf.Tensor:
  """[T] JPEG/PNG strings -> uint8 [T, H, W, 3]."""
  return tf.map_fn(lambda x: tf.io.decode_image(x, channels=3, expand_animations=False),
                   encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def resize(frames: tf.Tensor, resolution: int) -> tf.Tensor:
  """Square resize (aspect ignored, as ALPRO's decord reader), float32 in [0, 255]."""
  frames = tf.cast(frames, tf.float32)
  out = tf.image.resize(frames, (resolution, resolution), method="bilinear", antialias=True)
  return tf.clip_by_value(out, 0.0, 255.0)


def random_crop(frames: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """The same random `size`x`size` window for every frame of [T, H, W, C]."""
  shape = tf.shape(frames)
  top = tf.random.stateless_uniform([], seed, 0, shape[1] - size + 1, dtype=tf.int32)
  left = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1),
                                     0, shape[2] - size + 1, dtype=tf.int32)
  return frames[:, top:top + size, left:left + size, :]


def normalize(frames: tf.Tensor) -> tf.Tensor:
  """[0, 255] pixels -> (x / 255 - mean) / std with the CLIP statistics."""
  mean = tf.constant(CLIP_MEAN, tf.float32)
  std = tf.constant(CLIP_STD, tf.float32)
  return (tf.cast(frames, tf.float32) / 255.0 - mean) / std


def preprocess_clip(encoded: tf.Tensor, *, num_frames: int, sampling: str, resolution: int,
                    crop: int = 0, seed: tf.Tensor | None = None) -> tf.Tensor:
  """Encoded frames [N] -> normalised float32 [T, R, R, 3] (or [T, crop, crop, 3]).

  Frames are sampled before decoding, so only the T chosen frames are decoded.
  """
  if crop and crop > resolution:
    raise ValueError(f"crop={crop} is larger than resolution={resolution}")
  if seed is not None:
    frame_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  else:
    frame_seed = crop_seed = None
  idx = sample_indices(tf.shape(encoded)[0], num_frames, sampling, frame_seed)
  frames = resize(decode_frames(tf.gather(encoded, idx)), resolution)
  if crop:
    if crop_seed is None:
      raise ValueError("a random crop needs a seed")
    frames = random_crop(frames, crop, crop_seed)
  out = normalize(frames)
  size = crop or resolution
  return tf.ensure_shape(out, [num_frames, size, size, 3])

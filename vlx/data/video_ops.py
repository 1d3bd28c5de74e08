"""Frame sampling and per-clip video preprocessing as TF ops (run inside tf.data).

Sampling follows ALPRO (spec §7): `rand` = sorted random frames without replacement, `headtail` =
half from each half of the clip, `uniform` = numpy's integer arange `[0, s, 2s, ...]` with
s = floor(vlen / T); and All-in-one (its spec §2): the clip cut into T equal segments, one frame
per segment, `segment_rand` (random in the segment) or `segment_middle` (its middle); and VIOLET's
frame extraction (its spec §1): `interior` = frames floor(vlen * (i + 1) / (T + 1)), i < T, evenly
spread with both ends excluded. A clip with
fewer frames than T (builders store 1 fps; an image is a 1-frame clip) is sampled with repetition,
spread evenly over its frames. Randomness comes only from stateless ops, so a clip's frames depend
on its seed alone (the pipeline derives seeds from (config.seed, example counter)).

Spatially, `resize='square'` squashes each frame to resolution x resolution (ALPRO's decord reader)
and `resize='short_side'` keeps the aspect ratio (short side -> resolution) and crops a square;
`resize='pad_square'` zero-pads the short side (half each side) to a square, then resizes (VIOLET's
str2img, its spec §1);
`crop` then takes a random (training) or centred (evaluation) crop x crop window.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from vlx.data import augment as aug
from vlx.data.mixture import AUGMENTS

SAMPLINGS = ("rand", "headtail", "uniform", "segment_rand", "segment_middle", "interior")
RESIZES = ("square", "short_side", "pad_square")
# CLIP pixel statistics (ALPRO's ImageNorm, spec §7), RGB.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# (mean, std) per config `norm` name; 'imagenet' = All-in-one's a100 transform.
NORMS = {"clip": (CLIP_MEAN, CLIP_STD),
         "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


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
  if sampling == "uniform":  # the reference formula; a clip shorter than T: spread with repeats
    return tf.cond(vlen >= num_frames,
                   lambda: tf.range(num_frames, dtype=tf.int32) * (vlen // num_frames),
                   lambda: _spread(tf.constant(0), vlen, num_frames))
  if sampling == "interior":  # int(vlen / (T + 1) * (i + 1)) as the reference, in float64
    step = tf.cast(vlen, tf.float64) / float(num_frames + 1)
    idx = tf.cast(tf.floor(step * tf.range(1, num_frames + 1, dtype=tf.float64)), tf.int32)
    return tf.minimum(idx, tf.maximum(vlen - 1, 0))
  if sampling in ("segment_rand", "segment_middle"):
    return _segment_indices(vlen, num_frames, sampling == "segment_rand", seed)
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


def _segment_indices(vlen: tf.Tensor, num: int, random: bool,
                     seed: tf.Tensor | None) -> tf.Tensor:
  """One frame per segment [b_i, b_{i+1}), b_i = floor(i * vlen / T). As the All-in-one reference,
  the segment's last frame is never drawn: random = uniform in [b_i, b_{i+1} - 1) (b_i for a
  segment of < 2 frames), middle = (b_i + b_{i+1} - 1) // 2; clamped into the clip."""
  bounds = tf.range(num + 1, dtype=tf.int32) * vlen // num
  lo, hi = bounds[:-1], tf.maximum(bounds[1:] - 1, bounds[:-1])
  if random:
    if seed is None:
      raise ValueError("sampling='segment_rand' needs a seed")
    u = tf.random.stateless_uniform([num], seed, dtype=tf.float32)
    idx = lo + tf.cast(tf.floor(u * tf.cast(tf.maximum(hi - lo, 1), tf.float32)), tf.int32)
    idx = tf.minimum(idx, tf.maximum(hi - 1, lo))
  else:
    idx = (lo + hi) // 2
  return tf.clip_by_value(idx, 0, tf.maximum(vlen - 1, 0))


def temporal_window(encoded: tf.Tensor, view: int, num_views: int) -> tf.Tensor:
  """Frames [floor(v·N/V), floor((v+1)·N/V)) of an [N] clip (>= 1 frame): the v-th of V evenly
  spread evaluation views; the frames are then sampled inside the window."""
  n = tf.shape(encoded)[0]
  lo = view * n // num_views
  hi = tf.maximum((view + 1) * n // num_views, lo + 1)
  return encoded[tf.minimum(lo, n - 1):hi]


def decode_frames(encoded: tf.Tensor) -> tf.Tensor:
  """[T] JPEG/PNG strings -> uint8 [T, H, W, 3]."""
  return tf.map_fn(lambda x: tf.io.decode_image(x, channels=3, expand_animations=False),
                   encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def resize(frames: tf.Tensor, resolution: int, mode: str = "square",
           antialias: bool = True) -> tf.Tensor:
  """float32 in [0, 255]. 'square': to resolution x resolution (aspect ignored, as ALPRO's decord
  reader); 'short_side': aspect kept, the shorter side becomes `resolution`. `antialias` widens
  the bilinear kernel when shrinking; it is ~60 % of a 224² training read's time per frame
  (README "Throughput"), so training may turn it off (config.data.train.antialias=False)."""
  frames = tf.cast(frames, tf.float32)
  if mode == "square":
    size = tf.constant([resolution, resolution], tf.int32)
  elif mode == "pad_square":   # black bars: (long - short) // 2 on each side, then squash
    h, w = tf.shape(frames)[1], tf.shape(frames)[2]
    ph, pw = tf.maximum(w - h, 0) // 2, tf.maximum(h - w, 0) // 2
    frames = tf.pad(frames, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    size = tf.constant([resolution, resolution], tf.int32)
  elif mode == "short_side":
    hw = tf.cast(tf.shape(frames)[1:3], tf.float32)
    size = tf.cast(tf.round(hw * (resolution / tf.reduce_min(hw))), tf.int32)
    size = tf.maximum(size, resolution)  # the short side exactly `resolution`
  else:
    raise ValueError(f"unknown resize {mode!r}; expected one of {RESIZES} "
                     "(config.data.train.resize / evals.<name>.resize)")
  out = tf.image.resize(frames, size, method="bilinear", antialias=antialias)
  return tf.clip_by_value(out, 0.0, 255.0)


def center_crop(frames: tf.Tensor, size: int) -> tf.Tensor:
  """The centred `size`x`size` window of every frame of [T, H, W, C]."""
  shape = tf.shape(frames)
  top, left = (shape[1] - size) // 2, (shape[2] - size) // 2
  return frames[:, top:top + size, left:left + size, :]


def random_crop(frames: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """The same random `size`x`size` window for every frame of [T, H, W, C]."""
  shape = tf.shape(frames)
  top = tf.random.stateless_uniform([], seed, 0, shape[1] - size + 1, dtype=tf.int32)
  left = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1),
                                     0, shape[2] - size + 1, dtype=tf.int32)
  return frames[:, top:top + size, left:left + size, :]


def normalize(frames: tf.Tensor, norm: str = "clip") -> tf.Tensor:
  """[0, 255] pixels -> (x / 255 - mean) / std with the NORMS[norm] statistics (CLIP default)."""
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; expected one of {tuple(NORMS)} "
                     "(config.data.train.norm / evals.<name>.norm)")
  mean = tf.constant(NORMS[norm][0], tf.float32)
  std = tf.constant(NORMS[norm][1], tf.float32)
  return (tf.cast(frames, tf.float32) / 255.0 - mean) / std


def preprocess_clip(encoded: tf.Tensor, *, num_frames: int, sampling: str, resolution: int,
                    crop: int = 0, seed: tf.Tensor | None = None, resize_mode: str = "square",
                    norm: str = "clip", center: bool = False, augment: str = "",
                    antialias: bool = True) -> tf.Tensor:
  """Encoded frames [N] (any size, any N >= 1) -> normalised float32 [T, S, S, 3], S = crop or
  resolution. Crops are random (from `seed`) unless `center` (evaluation).

  Frames are sampled before decoding, so only the T chosen frames are decoded. `augment`
  (training, vlx.data.augment): 'temporal_randaug' runs after the resize and crop,
  'image_randaug' replaces them (RandomResizedCrop to S); both before the normalisation, from
  their own seed stream (the frames and crop do not change with `augment`).
  """
  if crop and crop > resolution:
    raise ValueError(f"crop={crop} is larger than resolution={resolution}")
  if augment not in AUGMENTS:
    raise ValueError(f"unknown augment {augment!r}; expected one of {AUGMENTS} "
                     "(config.data.train.augment / image_augment)")
  if augment and seed is None:
    raise ValueError(f"augment={augment!r} needs a seed")
  if seed is not None:
    frame_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    aug_seed = tf.random.experimental.stateless_fold_in(seed, 0x617567)  # 'aug'
  else:
    frame_seed = crop_seed = aug_seed = None
  idx = sample_indices(tf.shape(encoded)[0], num_frames, sampling, frame_seed)
  size = crop or resolution
  if augment == "image_randaug":
    out = normalize(aug.image_randaug(decode_frames(tf.gather(encoded, idx)), size, aug_seed),
                    norm)
    return tf.ensure_shape(out, [num_frames, size, size, 3])
  frames = resize(decode_frames(tf.gather(encoded, idx)), resolution, resize_mode, antialias)
  if crop or resize_mode not in ("square", "pad_square"):
    if center:
      frames = center_crop(frames, size)
    else:
      if crop_seed is None:
        raise ValueError("a random crop needs a seed")
      frames = random_crop(frames, size, crop_seed)
  if augment == "temporal_randaug":
    frames = aug.temporal_randaug(frames, aug_seed)
  out = normalize(frames, norm)
  return tf.ensure_shape(out, [num_frames, size, size, 3])

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
  'first'    the first max_len steps in training and evaluation (spec strategy 'clip', which the
             reference also trains with)
  'nearest' / 'max_pool'  the spec's long-video strategies (evaluation configs *_nearest /
             *_max): when the (last part's) sequence is longer than max_len, each part on its own
             is max-pooled with kernel = stride = floor(n / max_len) ('max_pool', when that
             kernel is > 1), nearest-resampled to exactly max_len steps, L2-normalised (normalize)
             and concatenated; shorter sequences are read as 'first'
Shorter sequences are zero padded; `<key>_mask` int32 [max_len] marks the real steps; an empty
sequence gives zeros and an all-zero mask.

Config (reader='features'): feature ('features'), key ('features'), dim (required: the stored D,
checked), max_len (required), select ('window'), normalize (False: L2 per step).

Several stored features as one sequence (spec section 4, create_video_features 'clip' with 2D
and 3D features): parts (e.g. ('features_2d', 'features_3d')) and dims (their stored D, e.g.
(2048, 2048); optional: without it each part's stored static D is used, checked to sum to dim)
instead of feature / dim. Each part is nearest-resampled to the LAST part's length (torch's
interpolate 'nearest': step i reads floor(i * float32(n / m)), n -> m steps), L2-normalised per
step separately when normalize is set (the spec's setting), and the parts are concatenated along
D ([2D | 3D], dim = sum(dims)); then the window / padding / mask above. If any part is empty the
row is empty (zeros, mask 0), as in the reference. The streams hand such a reader the tuple of
its `stored_features` (vlx.data.modalities.encoded_input).
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

SELECTS = ("window", "uniform", "first", "nearest", "max_pool")


@dataclasses.dataclass(frozen=True)
class FeaturesReader:
  """See the module docstring for the fields."""
  dim: int
  max_len: int
  feature: str = "features"
  key: str = "features"
  select: str = "window"
  normalize: bool = False
  parts: tuple[str, ...] = ()     # several stored features read as one sequence (see above)
  dims: tuple[int, ...] = ()      # their stored D, one per part (dim = sum)

  @property
  def keys(self) -> tuple[str, ...]:
    return (self.key, self.key + "_mask")

  @property
  def stored_features(self) -> tuple[str, ...]:
    """The TFDS features this reader reads (`feature`, or every part)."""
    return tuple(self.parts) or (self.feature,)

  def decoder(self) -> Any:
    return None

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {self.key: ((self.max_len, self.dim), np.float32),
            self.key + "_mask": ((self.max_len,), np.int32)}

  def _checked(self, encoded: tf.Tensor, feature: str = "", dim: int | None = 0) -> tf.Tensor:
    """float32 [N, dim] (dim None: a part's own static D, unchecked)."""
    feature, dim = feature or self.feature, (self.dim if dim == 0 else dim)
    x = tf.cast(tf.convert_to_tensor(encoded), tf.float32)
    where = f"{feature}: stored features"
    if dim is None:
      if x.shape.rank is not None and x.shape.rank != 2:
        raise DataConfigError(f"{where} have shape {x.shape}, expected [N, D]")
      return x
    if x.shape.rank is not None and x.shape.rank != 2:
      raise DataConfigError(f"{where} have shape {x.shape}, expected [N, {dim}]")
    stored = x.shape[-1]
    if stored is not None:
      if stored != dim:
        raise DataConfigError(f"{where} have D={stored} but the reader's dim is {dim}")
      return x
    check = tf.debugging.assert_equal(tf.shape(x)[-1], dim,
                                      message=f"{where}: D differs from config dim "
                                              f"{dim}")
    with tf.control_dependencies([check]):
      return tf.ensure_shape(tf.identity(x), [None, dim])

  def _part_list(self, encoded) -> list[tf.Tensor]:
    """The stored parts, each float32 [N_i, D_i], checked (see the module docstring)."""
    if isinstance(encoded, dict):
      encoded = [encoded[p] for p in self.parts]
    if len(encoded) != len(self.parts):
      raise DataConfigError(f"{self.key}: got {len(encoded)} stored features for the parts "
                            f"{self.parts}")
    xs = [self._checked(e, p, d) for e, p, d in
          zip(encoded, self.parts, self.dims or [None] * len(self.parts))]
    if not self.dims:  # no per-part dims: the stored static D of each part, summing to dim
      stored = [x.shape[-1] for x in xs]
      if None in stored or sum(stored) != self.dim:
        raise DataConfigError(f"{self.key}: stored parts {dict(zip(self.parts, stored))} do not "
                              f"sum to the reader's dim {self.dim} (or set dims per part)")
    return xs

  def _joined(self, xs: list[tf.Tensor]) -> tf.Tensor:
    """The parts as one [M, sum(dims)] sequence (see the module docstring)."""
    m = tf.shape(xs[-1])[0]
    empty = tf.reduce_any(tf.stack([tf.equal(tf.shape(x)[0], 0) for x in xs]))
    out = []
    for x in xs:  # a zero row appended: an empty part gathers it (the row is emptied below)
      padded = tf.concat([x, tf.zeros([1, x.shape[1]], x.dtype)], 0)
      x = tf.gather(padded, nearest_indices(tf.shape(x)[0], m))
      out.append(tf.math.l2_normalize(x, axis=-1) if self.normalize else x)
    x = tf.concat(out, axis=-1)
    return tf.cond(empty, lambda: x[:0], lambda: x)

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0
           ) -> dict[str, tf.Tensor]:
    del view  # evaluation views arrive as the view's temporal window of `encoded`
    xs = self._part_list(encoded) if self.parts else [self._checked(encoded)]
    if self.select in ("nearest", "max_pool"):
      nonempty = tf.reduce_all(tf.stack([tf.shape(x)[0] > 0 for x in xs]))
      x = tf.cond(tf.logical_and(tf.shape(xs[-1])[0] > self.max_len, nonempty),
                  lambda: self._resampled(xs),
                  lambda: self._joined(xs) if self.parts else xs[0])
    else:
      x = self._joined(xs) if self.parts else xs[0]
    n = tf.shape(x)[0]
    if self.select in ("first", "nearest", "max_pool"):
      start = tf.zeros([], tf.int32)
    elif self.select == "uniform":
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
    if self.normalize and not self.parts:  # parts: normalised each on its own in _joined
      out = tf.math.l2_normalize(out, axis=-1)  # zero rows stay zero
    return {self.key: out, self.key + "_mask": mask}


  def _resampled(self, xs: list[tf.Tensor]) -> tf.Tensor:
    """'nearest' / 'max_pool' of a sequence longer than max_len: every part on its own pooled
    (max_pool, kernel floor(n_i / max_len) > 1), resampled to max_len steps and normalised."""
    out = []
    for x in xs:
      n = tf.shape(x)[0]
      if self.select == "max_pool":
        k = tf.maximum(n // self.max_len, 1)
        rows = n // k
        pooled = tf.reduce_max(tf.reshape(x[:rows * k], [rows, k, x.shape[-1]]), axis=1)
        x = tf.cond(k > 1, lambda p=pooled: p, lambda x=x: x)
        n = tf.shape(x)[0]
      x = tf.gather(x, nearest_indices(n, tf.constant(self.max_len)))
      out.append(tf.math.l2_normalize(x, axis=-1) if self.normalize else x)
    return tf.concat(out, axis=-1)


def nearest_indices(n: tf.Tensor, m: tf.Tensor) -> tf.Tensor:
  """int32 [m]: the source step of each of m steps resampled from n (torch's 'nearest':
  min(floor(i * float32(n / m)), n - 1), float32 arithmetic as torch's CPU kernel); n = 0 gives
  zeros (an empty part empties the row anyway)."""
  scale = tf.cast(n, tf.float32) / tf.cast(tf.maximum(m, 1), tf.float32)
  idx = tf.cast(tf.floor(tf.cast(tf.range(m), tf.float32) * scale), tf.int32)
  return tf.clip_by_value(idx, 0, tf.maximum(n - 1, 0))


def _names(f: Fields, name: str) -> tuple[str, ...]:
  value = f._get(name, ())
  value = (value,) if isinstance(value, str) else value
  if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
    raise f.error(name, f"expected a tuple of TFDS feature names, got {value!r}")
  return tuple(value)


def _ints(f: Fields, name: str) -> tuple[int, ...]:
  value = f._get(name, ())
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
    raise f.error(name, f"expected a tuple of positive integers, got {value!r}")
  return tuple(value)


def from_config(cfg: Any, where: str) -> FeaturesReader:
  """FeaturesReader from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  parts, dims = _names(f, "parts"), _ints(f, "dims")
  if dims and len(parts) != len(dims):
    raise f.error("dims", f"one stored D per part is required: parts={parts}, dims={dims}")
  reader = FeaturesReader(
      dim=sum(dims) if dims else f.int("dim", 0), max_len=f.int("max_len", 0),
      feature=f.str("feature", "features"), key=f.str("key", "features"),
      select=f.str("select", "window", SELECTS), normalize=f.bool("normalize", False),
      parts=parts, dims=dims)
  if dims and f._get("dim", 0) not in (0, reader.dim):
    raise f.error("dim", f"{f._get('dim', 0)} differs from sum(dims)={reader.dim} of the parts")
  if reader.dim < 1:
    raise f.error("dim", f"the stored feature size D is required (>= 1), got {reader.dim}")
  if reader.max_len < 1:
    raise f.error("max_len", f"steps per row are required (>= 1), got {reader.max_len}")
  return reader

"""Token-grid reader: a stored grid of discrete codes [T, H, W] -> `vq_tokens` [num_frames, H, W].

Follows shared/reference/vimpac/spec.md section 1 (video2token storage and
video_token_dataset_fps.py clip sampling): per-frame dVAE code maps (int16 on disk, H = W =
frame_size / 8), a clip is `num_frames` frames taken every `stride`-th stored frame:
  delta = max((T + stride - 1) - num_frames * stride, 0)
  train: start uniform in [0, delta] (inclusive); eval: start = 0 (the spec's uniform test clip
  0 of 1; for evaluation views the stream passes the v-th temporal window of the grid, and the
  clip starts at that window's first frame, where the spec would take int(delta * k / (n - 1)));
  frames tokens[start : start + num_frames * stride : stride], right-padded to num_frames with
  `pad_id` (VIMPAC's PAD_TOKEN_ID is 8193: set pad_id there; the generic default is 0).
`<key>_mask` int32 [num_frames] marks the real frames (an empty grid: all pad, mask 0).

`align_with` (a frames input's prefix, e.g. 'video'; '' = off): the tokens of exactly the frames
that input samples (MVM targets, VIOLET spec §5.5), for a token dataset holding both (python -m
vlx.tokenize): the reader then reads with that input's seed (`seed_of`) and its num_frames and
sampling (make_readers copies them), and picks the frames with video_ops.sample_indices as
video_ops.preprocess_clip does; stride must be 1 and the mask is all ones (clips shorter than
num_frames repeat frames, as the frames reader does).

Config (reader='token_grid'): feature ('vq_tokens'), key ('vq_tokens'; the mask is 'vq_mask'),
num_frames, height, width (required; height / width are checked against the stored grid),
stride (1), pad_id (0), align_with (''). An input inherits its data block's fields: num_frames
defaults to the block's.
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


@dataclasses.dataclass(frozen=True)
class TokenGridReader:
  """See the module docstring for the fields."""
  num_frames: int
  height: int
  width: int
  feature: str = "vq_tokens"
  key: str = "vq_tokens"
  stride: int = 1
  pad_id: int = 0
  align_with: str = ""
  sampling: str = ""     # align_with only: the aligned frames input's sampling

  @property
  def seed_of(self) -> str:
    """The input whose seed this reader reads with ('' = its own)."""
    return self.align_with

  def aligned(self, readers: dict, where: str) -> "TokenGridReader":
    """This reader with the num_frames / sampling of the frames input it aligns with."""
    target = readers.get(self.align_with)
    if target is None or not hasattr(target, "sampling"):
      raise DataConfigError(f"{where}.align_with={self.align_with!r}: not a frames input of the "
                            f"block (inputs: {sorted(readers)})")
    return dataclasses.replace(self, num_frames=target.num_frames, sampling=target.sampling)

  @property
  def mask_key(self) -> str:
    return "vq_mask" if self.key == "vq_tokens" else self.key + "_mask"

  @property
  def keys(self) -> tuple[str, ...]:
    return (self.key, self.mask_key)

  def decoder(self) -> Any:
    return None

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {self.key: ((self.num_frames, self.height, self.width), np.int32),
            self.mask_key: ((self.num_frames,), np.int32)}

  def _checked(self, encoded: tf.Tensor) -> tf.Tensor:
    x = tf.cast(tf.convert_to_tensor(encoded), tf.int32)
    if x.shape.rank is not None and x.shape.rank != 3:
      raise DataConfigError(f"{self.feature}: stored token grid has shape {x.shape}, expected [T, H, W]")
    for axis, want, name in ((1, self.height, "height"), (2, self.width, "width")):
      have = x.shape[axis]
      if have is not None and have != want:
        raise DataConfigError(f"{self.feature}: stored grid {name} is {have} but the reader's {name} "
                         f"is {want}")
      if have is None:
        check = tf.debugging.assert_equal(tf.shape(x)[axis], want,
                                          message=f"{self.feature}: grid {name} != {want}")
        with tf.control_dependencies([check]):
          x = tf.identity(x)
    return tf.ensure_shape(x, [None, self.height, self.width])

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0
           ) -> dict[str, tf.Tensor]:
    del view  # evaluation views arrive as the view's temporal window of `encoded`
    x = self._checked(encoded)
    if self.align_with:
      return self._read_aligned(x, seed, train)
    n, s = tf.shape(x)[0], self.stride
    # delta over the stride-expanded length (T + s - 1) as the spec's get_start_end_idx.
    start = windows.window_start(n + s - 1, self.num_frames * s, seed, train=train,
                                 anchor="start")
    picked = x[start:start + self.num_frames * s:s]
    out, mask = windows.crop_or_pad(picked, tf.zeros([], tf.int32), self.num_frames,
                                    pad_value=self.pad_id)
    return {self.key: out, self.mask_key: mask}

  def _read_aligned(self, x: tf.Tensor, seed: tf.Tensor, train: bool) -> dict[str, tf.Tensor]:
    """The frames video_ops.preprocess_clip samples with the same seed (its frame_seed)."""
    frame_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))[0]
    sampling = self.sampling or ("rand" if train else "uniform")
    idx = video_ops.sample_indices(tf.shape(x)[0], self.num_frames, sampling, frame_seed)
    out = tf.ensure_shape(tf.gather(x, idx), [self.num_frames, self.height, self.width])
    return {self.key: out, self.mask_key: tf.ones([self.num_frames], tf.int32)}


def from_config(cfg: Any, where: str) -> TokenGridReader:
  """TokenGridReader from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  align_with = (cfg.get("align_with", "") if hasattr(cfg, "get") else "") or ""
  reader = TokenGridReader(
      num_frames=f.int("num_frames", 0), height=f.int("height", 0),
      width=f.int("width", 0), feature=f.str("feature", "vq_tokens"),
      key=f.str("key", "vq_tokens"), stride=f.int("stride", 1, low=1),
      pad_id=f.int("pad_id", 0), align_with=align_with)
  if not isinstance(align_with, str):
    raise f.error("align_with", f"expected an input name such as 'video', got {align_with!r}")
  if reader.align_with and reader.stride != 1:
    raise f.error("stride", f"must be 1 with align_with={reader.align_with!r}")
  for name in ("num_frames", "height", "width"):
    if getattr(reader, name) < 1:
      raise f.error(name, f"required (>= 1), got {getattr(reader, name)}")
  return reader

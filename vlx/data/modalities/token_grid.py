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

Views and clips (spec §1.5-1.7; all three 0 / 0 / 1 by default = the behaviour above):
  clips (0): 0 = one clip, no clip axis. n >= 1: a leading axis of n clips, `<key>` [n,
    num_frames, H, W] and the mask [n, num_frames]; train: n independent uniform starts (the
    spec's long-range pre-training pairs, §1.6); eval: the uniform clips below.
  spatial_views (0): 0 = the stored grid is [T, H, W]. S >= 1: it is [S, T, H, W] (S stored
    spatial views of a video, python -m vlx.tokenize --views); train: one of the S views,
    uniform from the row's seed (§1.7); eval: view v reads spatial view v // test_clips.
  test_clips (1): uniform temporal clips per spatial view in evaluation. Eval view v reads clip
    k = v % test_clips starting at int(delta * k / max(test_clips - 1, 1)), i.e. views are
    crop-major then temporal (§1.7). With clips = n the view's n clips are the uniform clips
    k * n + j (j < n) of n * test_clips.
  A reader with spatial_views, test_clips > 1 or clips reads whole views (`reads_whole_views`):
  the evaluation stream passes it the whole feature and view=v, and evals.<name>.num_views must
  be `num_views` = max(S, 1) * test_clips.

`align_with` (a frames input's prefix, e.g. 'video'; '' = off): the tokens of exactly the frames
that input samples (MVM targets, VIOLET spec §5.5), for a token dataset holding both (python -m
vlx.tokenize): the reader then reads with that input's seed (`seed_of`) and its num_frames and
sampling (make_readers copies them), and picks the frames with video_ops.sample_indices as
video_ops.preprocess_clip does; stride must be 1 and the mask is all ones (clips shorter than
num_frames repeat frames, as the frames reader does); clips, spatial_views and test_clips keep
their defaults.

Config (reader='token_grid'): feature ('vq_tokens'), key ('vq_tokens'; the mask is 'vq_mask'),
num_frames, height, width (required; height / width are checked against the stored grid),
stride (1), pad_id (0), clips (0), spatial_views (0), test_clips (1), align_with (''). An input
inherits its data block's fields: num_frames defaults to the block's.
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
  clips: int = 0
  spatial_views: int = 0
  test_clips: int = 1

  @property
  def seed_of(self) -> str:
    """The input whose seed this reader reads with ('' = its own)."""
    return self.align_with

  @property
  def reads_whole_views(self) -> bool:
    """Evaluation views come from `view` over the whole feature (vlx.data.eval_stream), not from
    temporal windows cut by the stream: the default reader keeps the windows."""
    return bool(self.clips or self.spatial_views or self.test_clips > 1)

  @property
  def num_views(self) -> int:
    """The evaluation views of a video (reads_whole_views): spatial views x temporal clips."""
    return max(self.spatial_views, 1) * self.test_clips

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
    lead = (self.clips,) if self.clips else ()
    return {self.key: (lead + (self.num_frames, self.height, self.width), np.int32),
            self.mask_key: (lead + (self.num_frames,), np.int32)}

  def _checked(self, encoded: tf.Tensor) -> tf.Tensor:
    """The stored grid as int32 [T, H, W] ([S, T, H, W] with spatial_views), shapes checked."""
    x = tf.cast(tf.convert_to_tensor(encoded), tf.int32)
    views = self.spatial_views
    rank = 4 if views else 3
    if x.shape.rank is not None and x.shape.rank != rank:
      layout = "[S, T, H, W] (spatial_views=%d)" % views if views else "[T, H, W]"
      raise DataConfigError(f"{self.feature}: stored token grid has shape {x.shape}, expected "
                            f"{layout}")
    checks = [(rank - 2, self.height, "height"), (rank - 1, self.width, "width")]
    if views:
      checks.append((0, views, "spatial_views"))
    for axis, want, name in checks:
      have = x.shape[axis]
      if have is not None and have != want:
        what = "view count" if name == "spatial_views" else name
        raise DataConfigError(f"{self.feature}: stored grid {what} is {have} but the reader's "
                              f"{name} is {want}")
      if have is None:
        check = tf.debugging.assert_equal(tf.shape(x)[axis], want,
                                          message=f"{self.feature}: grid {name} != {want}")
        with tf.control_dependencies([check]):
          x = tf.identity(x)
    return tf.ensure_shape(x, [views] * bool(views) + [None, self.height, self.width])

  def _frames(self, picked: tf.Tensor) -> tf.Tensor:
    """int32 [m, H, W] code maps of the m picked stored frames (here: the frames themselves;
    frame_tokens computes them from decoded frames)."""
    return picked

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0
           ) -> dict[str, tf.Tensor]:
    # view: the evaluation view (reads_whole_views); otherwise the stream passes the view's
    # temporal window as `encoded` and view 0's clip of it is read.
    x = self._checked(encoded)
    if self.align_with:
      return self._read_aligned(x, seed, train)
    if self.spatial_views:
      view_seed, seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
      chosen = (tf.random.stateless_uniform([], view_seed, 0, self.spatial_views, dtype=tf.int32)
                if train else view // self.test_clips)
      x = tf.gather(x, chosen)
    clips = [self._clip(x, start) for start in self._starts(tf.shape(x)[0], seed, train, view)]
    if not self.clips:
      return {self.key: clips[0][0], self.mask_key: clips[0][1]}
    return {self.key: tf.stack([c[0] for c in clips]),
            self.mask_key: tf.stack([c[1] for c in clips])}

  def _starts(self, n: tf.Tensor, seed: tf.Tensor, train: bool, view: int) -> list[tf.Tensor]:
    """int32 start of each clip: delta over the stride-expanded length (T + s - 1) as the
    spec's get_start_end_idx; train uniform in [0, delta], eval the uniform test clips."""
    s, size = self.stride, self.num_frames * self.stride
    if not self.clips and train:
      return [windows.window_start(n + s - 1, size, seed, train=True)]
    delta = tf.maximum(n + s - 1 - size, 0)
    count = max(self.clips, 1)
    if train:   # independent draws (spec §1.6: no distance bound between the clips)
      return tf.unstack(tf.random.stateless_uniform([count], seed, 0, delta + 1, dtype=tf.int32))
    total = count * self.test_clips
    first = (view % self.test_clips) * count
    return [delta * (first + j) // max(total - 1, 1) for j in range(count)]

  def _clip(self, x: tf.Tensor, start: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Frames x[start : start + num_frames * stride : stride] as codes, PAD-padded, and mask."""
    s = self.stride
    picked = self._frames(x[start:start + self.num_frames * s:s])
    return windows.crop_or_pad(picked, tf.zeros([], tf.int32), self.num_frames,
                               pad_value=self.pad_id)

  def _read_aligned(self, x: tf.Tensor, seed: tf.Tensor, train: bool) -> dict[str, tf.Tensor]:
    """The frames video_ops.preprocess_clip samples with the same seed (its frame_seed)."""
    frame_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))[0]
    sampling = self.sampling or ("rand" if train else "uniform")
    idx = video_ops.sample_indices(tf.shape(x)[0], self.num_frames, sampling, frame_seed)
    out = tf.ensure_shape(tf.gather(x, idx), [self.num_frames, self.height, self.width])
    return {self.key: out, self.mask_key: tf.ones([self.num_frames], tf.int32)}


def view_fields(f: Fields) -> dict[str, int]:
  """clips / spatial_views / test_clips of a reader config (shared with frame_tokens)."""
  return dict(clips=f.int("clips", 0, low=0), spatial_views=f.int("spatial_views", 0, low=0),
              test_clips=f.int("test_clips", 1, low=1))


def from_config(cfg: Any, where: str) -> TokenGridReader:
  """TokenGridReader from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  align_with = (cfg.get("align_with", "") if hasattr(cfg, "get") else "") or ""
  reader = TokenGridReader(
      num_frames=f.int("num_frames", 0), height=f.int("height", 0),
      width=f.int("width", 0), feature=f.str("feature", "vq_tokens"),
      key=f.str("key", "vq_tokens"), stride=f.int("stride", 1, low=1),
      pad_id=f.int("pad_id", 0), align_with=align_with, **view_fields(f))
  if not isinstance(align_with, str):
    raise f.error("align_with", f"expected an input name such as 'video', got {align_with!r}")
  if reader.align_with and reader.stride != 1:
    raise f.error("stride", f"must be 1 with align_with={reader.align_with!r}")
  if reader.align_with:
    for name, default in (("clips", 0), ("spatial_views", 0), ("test_clips", 1)):
      if getattr(reader, name) != default:
        raise f.error(name, f"must be {default} with align_with={reader.align_with!r}")
  for name in ("num_frames", "height", "width"):
    if getattr(reader, name) < 1:
      raise f.error(name, f"required (>= 1), got {getattr(reader, name)}")
  return reader

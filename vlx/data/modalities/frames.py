"""The `frames` reader: stored JPEG/PNG frames -> a normalised clip, video_ops.preprocess_clip.

It reads the block's frame fields (num_frames, sampling, resolution, crop, resize, norm, augment,
antialias);
sampling '' means 'rand' when training and 'uniform' when evaluating; evaluation crops are centred
and never augmented.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import video_ops
from vlx.data.errors import DataConfigError


@dataclasses.dataclass(frozen=True)
class Frames:
  """Encoded frames [N] (any size, N >= 1) -> float32 [T, S, S, 3] under `keys[0]`."""
  feature: str
  keys: tuple[str, ...]
  num_frames: int
  sampling: str          # '' = the default of the mode (train 'rand', eval 'uniform')
  resolution: int
  crop: int = 0
  resize_mode: str = "square"
  norm: str = "clip"
  augment: str = ""      # training only
  antialias: bool = True  # the bilinear resize's antialiasing (off: ~2x faster reads)

  @property
  def size(self) -> int:
    """S, the side of the frames it yields."""
    return self.crop or self.resolution

  def decoder(self) -> Any:
    return tfds.decode.SkipDecoding()   # sampled before decoding: only T frames are decoded

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool,
           view: int = 0) -> dict[str, tf.Tensor]:
    del view  # the stream passes the view's temporal window as `encoded`
    kw = dict(num_frames=self.num_frames, resolution=self.resolution, crop=self.crop,
              resize_mode=self.resize_mode, norm=self.norm, antialias=self.antialias,
              sampling=self.sampling or ("rand" if train else "uniform"))
    if train:
      clip = video_ops.preprocess_clip(encoded, seed=seed, augment=self.augment, **kw)
    else:
      clip = video_ops.preprocess_clip(encoded, seed=seed, center=True, **kw)
    return {self.keys[0]: clip}

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {self.keys[0]: ((self.num_frames, self.size, self.size, 3), np.float32)}


def from_config(cfg, where: str) -> Frames:
  """The reader of a block's frame fields, checked (errors name `where`.<field>)."""
  sampling = cfg.get("sampling", "") or ""
  reader = Frames(feature=cfg.get("feature", "video") or "video",
                  keys=(cfg.get("key", "video") or "video",),
                  num_frames=int(cfg.num_frames), sampling=sampling,
                  resolution=int(cfg.resolution), crop=int(cfg.get("crop", 0) or 0),
                  resize_mode=cfg.get("resize", "square") or "square",
                  norm=cfg.get("norm", "clip") or "clip", augment=cfg.get("augment", "") or "",
                  antialias=bool(cfg.get("antialias", True)))
  for field, value, allowed in (("sampling", sampling or "rand", video_ops.SAMPLINGS),
                                ("resize", reader.resize_mode, video_ops.RESIZES),
                                ("norm", reader.norm, tuple(video_ops.NORMS))):
    if value not in allowed:
      raise DataConfigError(f"{where}.{field}={value!r}: expected one of {allowed}")
  if reader.num_frames < 1 or reader.resolution < 1:
    raise DataConfigError(f"{where}: num_frames={reader.num_frames} and resolution="
                     f"{reader.resolution} must be >= 1")
  if reader.crop > reader.resolution:
    raise DataConfigError(f"{where}.crop={reader.crop} is larger than {where}.resolution="
                     f"{reader.resolution}")
  return reader

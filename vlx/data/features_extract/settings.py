"""What a feature-extraction run is (source, rate, tower) and where its outputs go.

Two runs may share a work folder (resume) only when their `fingerprint()` is equal: shards of
another rate, tower or dtype would silently mix otherwise.
"""
from __future__ import annotations

import dataclasses

from vlx.cli import UsageError

OUT_SUFFIX = "_clip"
FEATURE = "clip_features"
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Settings:
  """One extraction run; see vlx.data.features_extract for the meaning of the fields."""
  builder: str
  config: str
  split: str
  data_dir: str
  features_per_second: float = 1.0
  source_fps: float = 0.0      # the stored frames' rate; 0 = each example's `orig_fps`
  feature: str = "video"       # the source's frames feature
  keep_frames: bool = False
  shard_size: int = 1000
  batch: int = 64              # frames per device batch (fixed: one compile)
  dtype: str = "float32"
  tower: str = ""              # a description of the weights (file digest or random init)
  out_builder: str = ""
  out_config: str | None = None

  def __post_init__(self):
    if not self.features_per_second > 0:
      raise UsageError(f"--features_per_second={self.features_per_second}: must be > 0")
    if self.source_fps < 0:
      raise UsageError(f"--source_fps={self.source_fps}: must be > 0")
    for name in ("shard_size", "batch"):
      if getattr(self, name) < 1:
        raise UsageError(f"--{name}={getattr(self, name)}: must be >= 1")
    if self.dtype not in DTYPES:
      raise UsageError(f"--dtype={self.dtype!r}: expected one of {DTYPES}")

  def rate_tag(self) -> str:
    """'' at one feature per second, else e.g. '2fps' or '0p5fps' (part of the config name)."""
    if self.features_per_second == 1:
      return ""
    return f"{self.features_per_second:g}fps".replace(".", "p")

  def fingerprint(self) -> dict:
    """What the shard files depend on (not the split, batch, or whether frames are kept)."""
    return dict(builder=self.builder, config=self.config, feature=self.feature,
                features_per_second=float(self.features_per_second),
                source_fps=float(self.source_fps), shard_size=self.shard_size, dtype=self.dtype,
                tower=self.tower)


def output_names(s: Settings) -> tuple[str, str]:
  """(builder name, config name; '' = none) of the feature dataset."""
  name = s.out_builder or s.builder + OUT_SUFFIX
  if s.out_config is not None:
    return name, s.out_config
  return name, "_".join(p for p in (s.config, s.rate_tag()) if p)

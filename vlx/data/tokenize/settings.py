"""What a tokenization run is (source, view, encoder) and where its outputs go.

Two runs may share a work folder (resume) only when their `fingerprint()` is equal: the shard
files of another view, grid, dtype or encoder would silently mix otherwise.
"""
from __future__ import annotations

import dataclasses
import json
import os

from vlx.cli import UsageError
from vlx.data.tokenize import views as views_lib

FITS = ("pad", "crop")
CROP_AT = {"top": 0, "center": 1, "bottom": 2}  # VIMPAC's crop offset factor f (int(f*(r-o)/2))
OUT_SUFFIX = "_vq"
VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class Settings:
  """One tokenization run; see vlx.data.tokenize for the meaning of the fields."""
  builder: str
  config: str
  split: str
  data_dir: str
  grid: int = 7
  fit: str = "pad"
  short_side: int = 0        # crop: the resized short side (0 = grid * 8)
  crop_at: str = "center"
  hflip: bool = False
  views: str = ""            # crop: several views per record (views.py); '' = the one above
  feature: str = "video"     # the encoded frames feature of the source
  keep_frames: bool = True
  shard_size: int = 1000
  batch: int = 64            # frames per device batch (fixed: one compile)
  dtype: str = "float32"
  encoder: str = ""          # a description of the weights (converted dir or random init)
  out_builder: str = ""
  out_config: str | None = None

  def __post_init__(self):
    if self.fit not in FITS:
      raise UsageError(f"--fit={self.fit!r}: expected one of {FITS}")
    if self.crop_at not in CROP_AT:
      raise UsageError(f"--crop_at={self.crop_at!r}: expected one of {tuple(CROP_AT)}")
    for name in ("grid", "shard_size", "batch"):
      if getattr(self, name) < 1:
        raise UsageError(f"--{name}={getattr(self, name)}: must be >= 1")
    if self.dtype not in ("float32", "bfloat16"):
      raise UsageError(f"--dtype={self.dtype!r}: expected float32 or bfloat16")
    if self.views:
      self._check_views()

  def _check_views(self) -> None:
    views_lib.parse(self.views, self.grid)  # a bad SPEC: its one-line error first
    if self.fit != "crop":
      raise UsageError(f"--views={self.views!r} needs --fit crop (got --fit {self.fit})")
    fixed = [f"--{k}" for k, v in (("short_side", self.short_side != 0),
                                   ("crop_at", self.crop_at != "center"),
                                   ("hflip", self.hflip)) if v]
    if fixed:
      raise UsageError(f"--views={self.views!r} sets the views itself; drop {', '.join(fixed)}")

  @property
  def view_list(self) -> tuple[views_lib.View, ...]:
    """The views of one record, in order (one: this run's single view, when `views` is '')."""
    if self.views:
      return views_lib.parse(self.views, self.grid)
    return (views_lib.View(self.hflip, self.crop_at, self.resized_short),)

  @property
  def pixels(self) -> int:
    """Side of the frames the encoder sees (the dVAE downsamples by 8)."""
    return self.grid * 8

  @property
  def resized_short(self) -> int:
    return self.short_side or self.pixels

  def view_tag(self) -> str:
    """'' for VIOLET's default view (pad, grid 7), else e.g. 'g16_crop160top_flip'."""
    if self.fit == "pad" and self.grid == 7 and not self.hflip:
      return ""
    if self.views:
      return f"g{self.grid}_{views_lib.canonical(self.views)}"
    tag = f"g{self.grid}_{self.fit}"
    if self.fit == "crop":
      tag += f"{self.resized_short}{self.crop_at}"
    return tag + ("_flip" if self.hflip else "")

  def fingerprint(self) -> dict:
    """What the shard files depend on (not the split, batch, or which frames are kept); `views`
    only when set (the shards of single-view runs keep their settings.json)."""
    views = dict(views=views_lib.canonical(self.views)) if self.views else {}
    return dict(**views, builder=self.builder, config=self.config, grid=self.grid, fit=self.fit,
                short_side=self.resized_short if self.fit == "crop" else 0,
                crop_at=self.crop_at if self.fit == "crop" else "", hflip=self.hflip,
                feature=self.feature, shard_size=self.shard_size, dtype=self.dtype,
                encoder=self.encoder)


def output_names(s: Settings) -> tuple[str, str]:
  """(builder name, config name; '' = none) of the token dataset."""
  name = s.out_builder or s.builder + OUT_SUFFIX
  if s.out_config is not None:
    return name, s.out_config
  return name, "_".join(p for p in (s.config, s.view_tag()) if p)


def data_root(s: Settings) -> str:
  return os.path.expanduser(s.data_dir)


def work_root(data_dir: str, name: str, config: str) -> str:
  """D/<name>.work/<config or _>: the shard folders (one per split) of a derived dataset."""
  return os.path.join(os.path.expanduser(data_dir), name + ".work", config or "_")


def work_dir(s: Settings, split: str | None = None) -> str:
  """D/<out>.work/<config or _>/<split>: the shard files of one split."""
  return os.path.join(work_root(s.data_dir, *output_names(s)), split or s.split)


def write_json_atomic(path: str, value) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, path)

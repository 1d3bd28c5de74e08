"""`--views SPEC`: several crop views of every video tokenized into one record.

SPEC is '_'-joined parts, each naming one axis of the view grid (an absent axis keeps its single
default: no flip, the center crop, short side grid*8):
  flip2   horizontal flip 0, then 1
  crop3   the grid*8 crop at top, center, bottom (crop offsets as `--crop_at`)
  center  the center crop only (the crop axis with one view)
  scale2  short side grid*8, then int(grid*8 * 160 / 128) (the larger resize before the crop)
e.g. `flip2_crop3_scale2` = 12 views, `crop3_scale2` = 6, `crop3` = 3, `center` = 1 (the views
of VIMPAC's fine-tuning and test sets, vimpac spec §1.7). Views are ordered flip-major, then crop,
then scale: view index = (flip * crops + crop) * scales + scale. Parts may be given in any order;
names use the canonical one (flip, crop, scale), so `crop3_flip2` is `flip2_crop3`.
"""
from __future__ import annotations

import dataclasses

from vlx.cli import UsageError

# part -> (axis, values); an axis is given by at most one part
PARTS = {
    "flip2": ("flip", (False, True)),
    "crop3": ("crop", ("top", "center", "bottom")),
    "center": ("crop", ("center",)),
    "scale2": ("scale", (128, 160)),  # short side = grid*8 * value / 128
}
AXES = ("flip", "crop", "scale")
DEFAULTS = {"flip": (False,), "crop": ("center",), "scale": (128,)}


@dataclasses.dataclass(frozen=True)
class View:
  """One crop view: `short_side` px short side, the crop at `crop_at`, flipped if `hflip`."""
  hflip: bool
  crop_at: str
  short_side: int

  def describe(self) -> str:
    return f"hflip={int(self.hflip)} crop_at={self.crop_at} short_side={self.short_side}"


def _parts(spec: str) -> dict[str, str]:
  """{axis: part} of a SPEC; a one-line UsageError names what is wrong."""
  if not spec:
    raise UsageError("--views='': give a SPEC of '_'-joined parts, e.g. flip2_crop3_scale2")
  out = {}
  for part in spec.split("_"):
    if part not in PARTS:
      raise UsageError(f"--views={spec!r}: unknown part {part!r}; expected '_'-joined parts of "
                       f"{sorted(PARTS)}, e.g. flip2_crop3_scale2")
    axis = PARTS[part][0]
    if axis in out:
      raise UsageError(f"--views={spec!r}: {out[axis]!r} and {part!r} both set the {axis} views; "
                       "give one")
    out[axis] = part
  return out


def canonical(spec: str) -> str:
  """The SPEC with its parts in view order (flip, crop, scale): the name of the views."""
  parts = _parts(spec)
  return "_".join(parts[a] for a in AXES if a in parts)


def parse(spec: str, grid: int) -> tuple[View, ...]:
  """The views of SPEC for `grid` codes per side (frames of grid*8 px), in record order."""
  parts = _parts(spec)
  axes = {a: PARTS[parts[a]][1] if a in parts else DEFAULTS[a] for a in AXES}
  base = grid * 8
  return tuple(View(hflip=f, crop_at=c, short_side=int(base * s / 128))
               for f in axes["flip"] for c in axes["crop"] for s in axes["scale"])

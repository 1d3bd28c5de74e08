"""Numpy renderer for moving_shapes: frames, object placement and the audio track.

Sizes and speeds are fractions of the frame so every resolution shows the same clip; they are chosen
so that two large fast objects moving diagonally still fit side by side for the whole clip, and a
fast object moves about half the frame (a few pixels per sampled frame even at 32x32, 4 frames).
"""
from __future__ import annotations

import math

import numpy as np

from data_builders.moving_shapes import captions as cap

SIZE_FRACTION = {"small": 0.24, "large": 0.36}     # bounding extent of one object / frame side
TRAVEL_FRACTION = {"slow": 0.25, "fast": 0.45}     # distance travelled over the clip / frame side
_DIAG = 1 / math.sqrt(2)
VELOCITY = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
            "up_left": (-_DIAG, -_DIAG), "up_right": (_DIAG, -_DIAG),
            "down_left": (-_DIAG, _DIAG), "down_right": (_DIAG, _DIAG)}
BACKGROUND_RGB = {"black": (0, 0, 0), "gray": (90, 90, 90), "white": (255, 255, 255)}
# Colour -> tone frequency (Hz), major thirds from C4: the audio track encodes the colour.
PITCH = {c: 261.63 * 2 ** (4 * i / 12) for i, c in enumerate(cap.COLOURS)}


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside-test in coordinates normalised by the object radius (|u|,|v| <= 1 is the box)."""
  au, av = np.abs(u), np.abs(v)
  if shape == "circle":
    return u * u + v * v <= 1.0
  if shape == "square":
    return (au <= 0.85) & (av <= 0.85)
  if shape == "diamond":
    return au + av <= 1.0
  if shape == "triangle":  # apex up, flat base
    return (v <= 0.8) & (au <= (v + 1.0) / 1.8 * 0.95)
  if shape == "cross":
    return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
  if shape == "star":  # five points, radius between 0.45 and 1 by angle
    angle = np.mod(np.arctan2(u, -v), 2 * np.pi / 5) / (2 * np.pi / 5)
    radius = 0.45 + 0.55 * np.abs(1.0 - 2.0 * angle)
    return np.sqrt(u * u + v * v) <= radius
  if shape == "ring":
    rho2 = u * u + v * v
    return (rho2 <= 1.0) & (rho2 >= 0.5 ** 2)
  raise ValueError(f"unknown shape {shape!r}; expected one of {cap.SHAPES}")


def start_positions(a: cap.Attributes, rng: np.random.Generator) -> np.ndarray:
  """Start centres [num_objects, 2] (x, y, frame fractions) keeping all objects in frame.

  Two objects sit side by side perpendicular to the motion, so they never overlap.
  """
  r = SIZE_FRACTION[a.size] / 2
  travel = np.array(VELOCITY[a.direction]) * TRAVEL_FRACTION[a.speed]
  perp = np.array([-VELOCITY[a.direction][1], VELOCITY[a.direction][0]])
  if a.num_objects == 1:
    offsets = np.zeros((1, 2))
  else:
    gap = 2 * r * rng.uniform(1.1, 1.2)
    offsets = np.stack([perp * gap / 2, -perp * gap / 2])
  lo = r - np.minimum(travel, 0.0) - offsets.min(0)
  hi = 1.0 - r - np.maximum(travel, 0.0) - offsets.max(0)
  if np.any(lo > hi):
    raise AssertionError(f"no room for {a}: lo={lo} hi={hi}")
  middle = lo + (hi - lo) * rng.uniform(size=2)
  return middle[None] + offsets


def background(name: str, resolution: int, rng: np.random.Generator) -> np.ndarray:
  """A [H, W, 3] uint8 background; 'noisy' is static dark noise in blocks of 1/8 of the frame.

  Blocks (not per-pixel noise) keep the JPEG frames small and survive downscaling.
  """
  if name == "noisy":
    block = max(resolution // 8, 1)
    cells = rng.integers(0, 70, size=(-(-resolution // block),) * 2 + (3,), dtype=np.uint8)
    return np.repeat(np.repeat(cells, block, 0), block, 1)[:resolution, :resolution]
  return np.broadcast_to(np.array(BACKGROUND_RGB[name], np.uint8),
                         (resolution, resolution, 3)).copy()


def render_clip(a: cap.Attributes, *, num_frames: int, resolution: int,
                rng: np.random.Generator) -> np.ndarray:
  """[T, H, W, 3] uint8 frames of `a`; moves linearly from the start to start + travel."""
  starts = start_positions(a, rng)
  bg = background(a.background, resolution, rng)
  r = SIZE_FRACTION[a.size] / 2
  travel = np.array(VELOCITY[a.direction]) * TRAVEL_FRACTION[a.speed]
  grid = (np.arange(resolution) + 0.5) / resolution
  xs, ys = grid[None, :], grid[:, None]
  colour = np.array(cap.COLOURS[a.colour], np.uint8)
  frames = np.empty((num_frames, resolution, resolution, 3), np.uint8)
  for t in range(num_frames):
    frac = t / max(num_frames - 1, 1)
    mask = np.zeros((resolution, resolution), bool)
    for start in starts:
      cx, cy = start + travel * frac
      mask |= shape_mask(a.shape, (xs - cx) / r, (ys - cy) / r)
    frames[t] = np.where(mask[..., None], colour, bg)
  return frames


def render_audio(a: cap.Attributes, *, num_samples: int, sample_rate: int,
                 rng: np.random.Generator) -> np.ndarray:
  """Mono float32 tone whose pitch encodes the colour (louder for two objects), plus faint noise."""
  t = np.arange(num_samples) / sample_rate
  f = PITCH[a.colour]
  amp = 0.3 * a.num_objects
  tone = amp * (np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t))
  fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02) if num_samples > 1 else 1.0
  return (tone * fade + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)

"""Training dataset mixtures (ALPRO's MetaLoader) without TensorFlow: entry syntax and step draws.

`config.data.train.mixture` is a tuple of entries `'builder'`, `'builder/config'`, either with an
optional `':weight'` (a positive number, default 1): e.g. `("webvid", "cc3m:0.5")`. Every training
step draws ONE entry with probability weight / sum(weights), so a batch comes from one dataset
(all-video or all-image). The draw is a hash of (config.seed, step) only: every host draws the same
entry, and a run resumed at step k sees exactly the batches of an uninterrupted one (each entry's
reader restarts at the number of batches it served before k, `served_before`). Empty = just
data.train.builder / builder_config.

Also the augmentation names (`config.data.train.augment` / `image_augment`), so config validation
can check them without importing TensorFlow.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

AUGMENTS = ("", "temporal_randaug", "image_randaug")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_CONFIG = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SALT = 0x6D69787475726521  # 'mixture!': the draws' own stream
_MASK = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class Entry:
  builder: str
  builder_config: str = ""
  weight: float = 1.0

  @property
  def name(self) -> str:
    return self.builder + (f"/{self.builder_config}" if self.builder_config else "")


def _bad(where: str, value, why: str) -> ValueError:
  return ValueError(f"{where}={value!r}: {why}; expected 'builder', 'builder/config', either "
                    "with an optional ':weight' (a positive number), e.g. 'cc3m:0.5'")


def parse_entry(text, where: str = "config.data.train.mixture[0]") -> Entry:
  """'builder[/config][:weight]' -> Entry; a ValueError naming `where` otherwise."""
  if not isinstance(text, str) or not text.strip():
    raise _bad(where, text, "not a non-empty string")
  body, _, weight_text = text.strip().partition(":")
  weight = 1.0
  if weight_text:
    try:
      weight = float(weight_text)
    except ValueError:
      raise _bad(where, text, f"weight {weight_text!r} is not a number") from None
    if not np.isfinite(weight) or weight <= 0:
      raise _bad(where, text, f"weight {weight_text!r} must be > 0")
  builder, _, config = body.partition("/")
  if not _NAME.match(builder):
    raise _bad(where, text, f"builder name {builder!r} is not [A-Za-z0-9_]+")
  if "/" in body and not _CONFIG.match(config):
    raise _bad(where, text, f"builder config {config!r} is empty or has odd characters")
  return Entry(builder, config, weight)


def parse(train) -> list[Entry]:
  """The entries of config.data.train (its mixture, else [builder/builder_config])."""
  raw = train.get("mixture", ()) or ()
  if isinstance(raw, str):
    raise ValueError(f"config.data.train.mixture={raw!r}: expected a tuple of entries, e.g. "
                     f"('webvid', 'cc3m:0.5'), not a string")
  if not raw:
    return [Entry(train.builder, train.get("builder_config", "") or "")]
  entries = [parse_entry(e, f"config.data.train.mixture[{i}]") for i, e in enumerate(raw)]
  names = [e.name for e in entries]
  for i, n in enumerate(names):
    if n in names[:i]:
      raise ValueError(f"config.data.train.mixture[{i}]={raw[i]!r}: dataset {n!r} is listed "
                       "twice; give one entry a weight instead")
  return entries


def check_augment(value, where: str) -> str:
  if value not in AUGMENTS:
    raise ValueError(f"{where}={value!r}: expected one of {AUGMENTS}")
  return value


def _mix64(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser on uint64 arrays (wrap-around arithmetic)."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def draws(seed: int, weights: Sequence[float], start: int, stop: int) -> np.ndarray:
  """int64 [stop - start]: the entry trained at each step in [start, stop); depends only on
  (seed, step) and the weights."""
  w = np.asarray(weights, np.float64)
  if w.ndim != 1 or not len(w) or (w <= 0).any():
    raise ValueError(f"mixture weights {list(weights)} must be positive")
  cum = np.cumsum(w) / w.sum()
  with np.errstate(over="ignore"):
    key = _mix64(np.asarray([(int(seed) * 0x9E3779B97F4A7C15 + _SALT) & _MASK], np.uint64))
    x = _mix64(np.arange(start, stop, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03) + key)
  u = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)        # [0, 1)
  return np.minimum(np.searchsorted(cum, u, side="right"), len(w) - 1).astype(np.int64)


def served_before(seed: int, weights: Sequence[float], start_step: int,
                  chunk: int = 1 << 20) -> np.ndarray:
  """int64 [len(weights)]: batches each entry served in steps [0, start_step)."""
  counts = np.zeros(len(weights), np.int64)
  for lo in range(0, int(start_step), chunk):
    counts += np.bincount(draws(seed, weights, lo, min(lo + chunk, start_step)),
                          minlength=len(weights))
  return counts

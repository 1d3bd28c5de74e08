"""Padding rows of host-side (numpy) evaluation batches: one rule for the eval stream, the eval
drivers and test fakes. Padding rows repeat the batch's first row (zeros when it has none), carry
valid=False and -1 in the index keys, so every consumer can drop them."""
from __future__ import annotations

import numpy as np

INDEX_KEYS = ("video_index", "example_index", "view_index")  # -1 on padding rows


def pad_rows(batch: dict[str, np.ndarray], multiple: int,
             at_least: int = 0) -> dict[str, np.ndarray]:
  """`batch` with its rows filled up to the smallest multiple of `multiple` (> 0) that is >= its
  rows and `at_least`. Adds 'valid' (all True) if absent."""
  n = len(next(iter(batch.values())))
  batch = dict(batch)
  if "valid" not in batch:
    batch["valid"] = np.ones(n, bool)
  pad = max(-(-max(n, at_least, 1) // multiple) * multiple - n, 0)
  if not pad:
    return batch
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if k == "valid":
      fill = np.zeros(pad, bool)
    elif k in INDEX_KEYS:
      fill = np.full(pad, -1, v.dtype)
    elif n:
      fill = np.repeat(v[:1], pad, axis=0)
    else:
      fill = np.zeros((pad,) + v.shape[1:], v.dtype)
    out[k] = np.concatenate([v, fill])
  return out

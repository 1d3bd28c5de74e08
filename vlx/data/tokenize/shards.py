"""The resumable part: codes of consecutive source examples, one atomically written file per shard.

Shard k holds source examples [k * shard_size, (k + 1) * shard_size) of the split:
  shard-KKKKK.npz = tokens int16 [sum T, g, g] (frames of the examples in order; with `--views`
  [sum T, V, g, g]: the V views of each frame), lengths int32 [n] (T per example), source_index
  int64 [n].
A shard file exists only once complete (temp file + os.replace); a killed run leaves at most a
stray temp file, ignored and overwritten. `settings.json` beside the shards records the run's
fingerprint: a different one is refused (pass --overwrite).
"""
from __future__ import annotations

import glob
import json
import os
import shutil
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.cli import UserError
from vlx.data.tokenize import frames as frames_lib
from vlx.data.tokenize.settings import Settings, write_json_atomic

SETTINGS = "settings.json"


class WorkDirMismatch(UserError):
  """The work folder holds shards made with other settings."""


def shard_path(folder: str, k: int) -> str:
  return os.path.join(folder, f"shard-{k:05d}.npz")


def num_shards(num_examples: int, shard_size: int) -> int:
  return -(-num_examples // shard_size)


def prepare(folder: str, s, num_examples: int, overwrite: bool) -> None:
  """Creates the work folder, or checks that its shards were made with the same settings (`s`:
  any settings object with `fingerprint() -> dict`, e.g. a tokenize Settings)."""
  want = dict(s.fingerprint(), num_examples=int(num_examples))
  path = os.path.join(folder, SETTINGS)
  if overwrite and os.path.isdir(folder):
    shutil.rmtree(folder)
  if os.path.isfile(path):
    with open(path) as f:
      have = json.load(f)
    if have != want:
      diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
      changes = ", ".join(f"{k}: {have.get(k)!r} -> {want.get(k)!r}" for k in diff)
      raise WorkDirMismatch(f"{folder} holds shards made with other settings ({changes}); pass "
                            "--overwrite to start again, or another --out_builder")
    return
  os.makedirs(folder, exist_ok=True)
  write_json_atomic(path, want)


def done(folder: str, k: int) -> bool:
  return os.path.isfile(shard_path(folder, k))


def write_arrays(folder: str, k: int, arrays: dict[str, np.ndarray]) -> None:
  """Shard k as one .npz of `arrays`, atomically (temp file + rename). Derived datasets store
  `lengths` int32 [n] (rows of their per-example arrays, concatenated in example order) and
  `source_index` int64 [n]; optionally `source_frames` int32 [n] (frames of each source example,
  checked when packing; `lengths` is checked when absent)."""
  path = shard_path(folder, k)
  tmp = f"{path}.tmp{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def write(folder: str, k: int, tokens: np.ndarray, lengths: np.ndarray,
          source_index: np.ndarray) -> None:
  write_arrays(folder, k, dict(tokens=tokens.astype(np.int16), lengths=lengths.astype(np.int32),
                               source_index=source_index.astype(np.int64)))


def load(folder: str, k: int) -> dict[str, np.ndarray]:
  with np.load(shard_path(folder, k)) as z:
    return {key: z[key] for key in z.files}


def clean_temp(folder: str) -> None:
  """Removes the temp files a killed run left behind."""
  for path in glob.glob(os.path.join(folder, "*.tmp*")):
    try:
      os.remove(path)
    except OSError:
      pass


def packed(clips: Iterator[np.ndarray], batch: int, lengths: list[int]
           ) -> Iterator[tuple[np.ndarray, int]]:
  """(rows [batch, ...], real rows in it): the rows of consecutive clips (arrays [n_i, ...] of
  one row shape) packed into fixed-size batches, the last one zero-padded (one compiled shape).
  Appends each clip's row count to `lengths`."""
  buf, fill = None, 0
  for clip in clips:
    lengths.append(len(clip))
    if buf is None and len(clip):
      buf = np.zeros((batch,) + clip.shape[1:], clip.dtype)
    pos = 0
    while pos < len(clip):
      take = min(batch - fill, len(clip) - pos)
      buf[fill:fill + take] = clip[pos:pos + take]
      fill, pos = fill + take, pos + take
      if fill == batch:
        yield buf.copy(), batch
        fill = 0
  if fill:
    buf[fill:] = 0
    yield buf.copy(), fill


def apply(batches: Iterator[tuple[np.ndarray, int]], fn: Callable,
          on_first_batch: Callable[[np.ndarray, np.ndarray], None] | None = None
          ) -> list[np.ndarray]:
  """fn(batch)[:real] of every batch. The device works on batch k while the host prepares batch
  k + 1 (jax dispatch is asynchronous)."""
  out, pending = [], None
  for rows, real in batches:
    result = fn(rows)
    if on_first_batch is not None:
      on_first_batch(rows[:real], result)
      on_first_batch = None
    if pending is not None:
      out.append(np.asarray(pending[0])[:pending[1]])
    pending = (result, real)
  if pending is not None:
    out.append(np.asarray(pending[0])[:pending[1]])
  return out


def pixel_batches(builder: tfds.core.DatasetBuilder, split: str, lo: int, hi: int, s: Settings,
                  lengths: list[int]) -> Iterator[tuple[np.ndarray, int]]:
  """(pixels float32 [batch, P, P, 3], real frames in it) over source examples [lo, hi): frames
  of consecutive examples packed into fixed-size batches (the last one zero-padded), decoded and
  resized on the host in parallel. Appends each example's frame count to `lengths`. With
  `s.views`: the V views of every frame (frames_lib.view_pixels), V rows per frame (V * T
  appended)."""
  ds = builder.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False,
                          decoders={s.feature: tfds.decode.SkipDecoding()})
  to_pixels = frames_lib.view_pixels if s.views else frames_lib.pixels
  ds = ds.map(lambda ex: to_pixels(ex[s.feature], s),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(4)
  yield from packed(ds.as_numpy_iterator(), s.batch, lengths)


def compute(builder, split: str, lo: int, hi: int, s: Settings, fn: Callable,
            on_first_batch: Callable[[np.ndarray, np.ndarray], None] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int16 [sum T, g, g] (with `s.views`: [sum T, V, g, g]), lengths int32 [hi - lo])
  of source examples [lo, hi)."""
  counts = []
  out = apply(pixel_batches(builder, split, lo, hi, s, counts), fn, on_first_batch)
  v = len(s.view_list) if s.views else 1
  lengths = np.asarray(counts, np.int32) // v
  if len(lengths) != hi - lo:
    raise RuntimeError(f"read {len(lengths)} examples of {split}[{lo}:{hi}], expected {hi - lo}")
  g = s.grid
  tokens = np.concatenate(out) if out else np.zeros([0, g, g], np.int32)
  if tokens.shape[1:] != (g, g) or len(tokens) != int(lengths.sum()) * v:
    raise RuntimeError(f"codes of shape {tokens.shape} for {int(lengths.sum()) * v} frames; the "
                       f"encoder should give [N, {g}, {g}] for {s.pixels}-px frames")
  if s.views:
    tokens = tokens.reshape(-1, v, g, g)
  return tokens.astype(np.int16), lengths

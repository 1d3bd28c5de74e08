"""The driver: source split -> shard files (resumable) -> the TFDS token dataset.

`compute_shards` is the resumable loop of any derived dataset (tokens here, per-second features
in vlx.data.features_extract); `tokenize_split` plugs the dVAE into it."""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable

import numpy as np

from vlx.cli import UsageError
from vlx.data import pipeline
from vlx.data.tokenize import shards, writer
from vlx.data.tokenize.encoder import Encoder
from vlx.data.tokenize.settings import Settings, data_root, output_names, work_root
from vlx.logging_utils import format_eta

log = logging.getLogger(__name__)


class StopAfter(Exception):
  """Raised by the `stop_after_shards` test hook: the run stops as if killed."""


def _splits(s) -> list[str]:
  return [p.strip() for p in s.split.split(",") if p.strip()]


def _check_source(builder, s: Settings) -> None:
  for sp in _splits(s):
    if "[" in sp or "+" in sp:
      raise pipeline.SplitError(f"--split={sp!r}: give whole splits, comma-separated (a token "
                                "dataset keeps every example of a split)")
    pipeline.check_split(builder, sp, "--split")
  if s.feature not in builder.info.features:
    raise UsageError(f"--feature={s.feature!r}: dataset {builder.name!r} has no such "
                     f"feature; it has {sorted(builder.info.features.keys())}")
  writer.output_features(builder, s)  # a token dataset as the source: one line, before encoding


def open_source(s: Settings):
  """The source dataset's builder, checked: built, with the asked splits and frames feature."""
  source = pipeline.get_builder(s.builder, s.config, data_root(s))
  _check_source(source, s)
  return source


def _finished_splits(s, source, root: str) -> dict[str, str]:
  """{split: shard folder} of every split under `root` whose shards are all written with this
  run's settings (`s`: fingerprint() and shard_size)."""
  out = {}
  for sp in sorted(source.info.splits.keys()):
    folder = os.path.join(root, sp)
    settings = os.path.join(folder, shards.SETTINGS)
    if not os.path.isfile(settings):
      continue
    with open(settings) as f:
      have = json.load(f)
    n = source.info.splits[sp].num_examples
    if have != dict(s.fingerprint(), num_examples=n):
      log.warning("%s: shards of %s were made with other settings; not packed", root, sp)
      continue
    if all(shards.done(folder, k) for k in range(shards.num_shards(n, s.shard_size))):
      out[sp] = folder
  return out


# (arrays of source examples [lo, hi) of a split: `lengths` and the added arrays; frames read)
ShardFn = Callable[[str, int, int], tuple[dict, int]]


def compute_shards(s, source, name: str, config: str, compute: ShardFn, *,
                   overwrite: bool = False, worker: tuple[int, int] = (0, 1),
                   stop_after_shards: int | None = None,
                   echo: Callable[[str], None] = print) -> dict[str, str] | None:
  """The resumable part of a derived dataset name/config of `source`: every shard of the splits
  of `s.split` not written yet (those of this worker) is computed with `compute(split, lo, hi)`
  and written atomically with its `source_index`. Returns {split: shard folder} of the finished
  splits when every asked split is finished, else None (other workers' shards missing). `s`:
  split, data_dir, shard_size and fingerprint() (a tokenize Settings or alike)."""
  root = work_root(s.data_dir, name, config)
  todo = []
  for sp in _splits(s):
    n = source.info.splits[sp].num_examples
    folder = os.path.join(root, sp)
    shards.prepare(folder, s, n, overwrite)
    shards.clean_temp(folder)
    todo += [(sp, folder, k, n) for k in range(shards.num_shards(n, s.shard_size))
             if k % worker[1] == worker[0] and not shards.done(folder, k)]
  total = sum(min((k + 1) * s.shard_size, n) - k * s.shard_size for _, _, k, n in todo)
  echo(f"{name}/{config or 'default'}: {len(todo)} shard(s) to compute ({total} examples) into "
       f"{root}")
  done_examples, computed, frames, t0 = 0, 0, 0, time.time()
  for sp, folder, k, n in todo:
    lo, hi = k * s.shard_size, min((k + 1) * s.shard_size, n)
    arrays, read = compute(sp, lo, hi)
    shards.write_arrays(folder, k, dict(arrays, source_index=np.arange(lo, hi, dtype=np.int64)))
    done_examples, computed, frames = done_examples + hi - lo, computed + 1, frames + read
    seconds = max(time.time() - t0, 1e-9)
    eta = (total - done_examples) * seconds / done_examples
    echo(f"{sp} shard {k + 1}/{shards.num_shards(n, s.shard_size)}: {done_examples}/{total} "
         f"examples ({100.0 * done_examples / max(total, 1):.1f}%), {frames / seconds:.1f} "
         f"frames/s, ETA {format_eta(eta)}")
    if stop_after_shards is not None and computed >= stop_after_shards:
      raise StopAfter(f"stopped after {computed} shard(s)")
  ready = _finished_splits(s, source, root)
  waiting = [sp for sp in _splits(s) if sp not in ready]
  if waiting:
    echo(f"worker {worker[0]}/{worker[1]} done; splits {waiting} still have shards of other "
         "workers: run the same command without --worker_index once they finish to write the "
         "dataset")
    return None
  return ready


def tokenize_split(s: Settings, encoder: Encoder, *, overwrite: bool = False,
                   worker: tuple[int, int] = (0, 1), stop_after_shards: int | None = None,
                   on_first_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
                   echo: Callable[[str], None] = print):
  """Tokenizes every split of `s.split` (comma-separated), then writes the token dataset with
  all finished splits; returns its builder. `stop_after_shards`: the test hook of a kill (raises
  StopAfter once that many shards were computed in this call). `on_first_batch(pixels, codes)`
  sees the first batch (the bf16 vs fp32 comparison). `worker` (index, count): this process
  encodes only shards k with k % count == index (several machines sharing D); the dataset is
  written by the run that finds every shard done (None is returned otherwise)."""
  if encoder.vocab_size > np.iinfo(np.int16).max + 1:
    raise ValueError(f"vocabulary {encoder.vocab_size} does not fit int16 codes")
  source = open_source(s)
  name, config = output_names(s)
  first = [on_first_batch]

  def compute(sp: str, lo: int, hi: int) -> tuple[dict, int]:
    tokens, lengths = shards.compute(source, sp, lo, hi, s, encoder.fn, first[0])
    first[0] = None
    encoded = int(np.prod(tokens.shape[:-2]))  # frames x views
    return dict(tokens=tokens.astype(np.int16), lengths=lengths.astype(np.int32)), encoded

  ready = compute_shards(s, source, name, config, compute, overwrite=overwrite, worker=worker,
                         stop_after_shards=stop_after_shards, echo=echo)
  if ready is None:
    return None
  metadata = dict(s.fingerprint(), source_version=str(source.info.version),
                  is_image=pipeline.is_image_dataset(source),
                  vq_tokens="int16 [T, grid, grid] dVAE codes per stored frame",
                  source_index="position of the example in the source split")
  if s.views:  # the view list, in record order (vlx.data.tokenize.views)
    metadata.update(vq_tokens="int16 [V, T, grid, grid] dVAE codes per view and stored frame",
                    num_views=len(s.view_list),
                    view_list=[v.describe() for v in s.view_list])
  built = writer.write(source, s, name, config, ready, metadata)
  echo(f"wrote {name}/{config or 'default'} in {built.data_dir}: "
       f"{ {k: v.num_examples for k, v in built.info.splits.items()} }")
  return built

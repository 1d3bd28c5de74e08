"""Sharded, resumable frame extraction into the frame cache, for corpora too big for one build.

  python -m vlx.data.extract_frames --builder webvid --config 10M --manual_dir DIR \\
      --cache /big/disk/vlx_frames --num_shards 64 --shard_index 7 [--workers 16]

decodes the videos of shard 7 of 64 (all splits) exactly as the TFDS build would, and writes one
cache file per clip atomically (temp file + rename). A killed run loses at most the clips in
flight: re-running the same command skips every clip already cached. Shards are disjoint (a
clip's shard is a hash of its cache entry), so any number of machines can run them side by side
on a shared disk. Then build as usual with the cache:
  VLX_FRAME_CACHE=/big/disk/vlx_frames python -m vlx.data.pipeline --builder webvid --config 10M ...
which only packs cached JPEGs into TFRecords (videos never cached are decoded then).
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import tempfile
import time
from typing import Sequence

import tensorflow_datasets as tfds

from vlx.data import builder_base, frame_cache


def run_split_generators(builder: str, config: str = "", manual_dir: str = "",
                         consume=None) -> list:
  """Runs data_builders/<builder>'s split generators under builder_base.collect_records(consume):
  the records are exactly those a build would decode; no TFDS files are written. Without
  `consume`, returns [(builder name, split, config, records)]."""
  module = importlib.import_module(f"data_builders.{builder}.{builder}_dataset_builder")
  tmp = tempfile.mkdtemp(prefix="vlx_extract_")
  try:
    b = module.Builder(config=config or None, data_dir=tmp)
    manual = manual_dir or os.path.join(os.path.expanduser(tfds.core.constants.DATA_DIR),
                                        "downloads", "manual")
    dl = tfds.download.DownloadManager(
        download_dir=tmp, manual_dir=manual, dataset_name=b.name,
        manual_dir_instructions=getattr(b, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or "-")
    with builder_base.collect_records(consume) as got:
      # pylint: disable=protected-access
      gens = b._split_generators(dl)
      if not isinstance(gens, dict):  # the older list-of-SplitGenerator API
        gens = {g.name: b._generate_examples(**g.gen_kwargs) for g in gens}
      # pylint: enable=protected-access
      for gen in gens.values():
        for _ in gen:
          raise RuntimeError(f"{builder}: _generate_examples yielded an example without "
                             "builder_base.generate_examples; extract_frames cannot see its videos")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return got


def shard_of(entry: str, num_shards: int) -> int:
  """Stable shard of a cache entry (its name is a sha1 hex digest)."""
  name = os.path.basename(entry).split(".", 1)[0]
  return int(name[:12], 16) % num_shards


def extract(builder: str, *, cache: str, config: str = "", manual_dir: str = "",
            num_shards: int = 1, shard_index: int = 0, workers: int | None = None,
            splits: Sequence[str] = (), max_videos: int = 0) -> dict:
  """Decodes shard `shard_index` of `num_shards` into `cache`; returns counts.

  max_videos > 0 stops after that many newly decoded clips (tests use it to simulate a kill).
  """
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"--shard_index {shard_index} must be in [0, --num_shards={num_shards})")
  todo: dict = {}  # decode settings -> records of this shard still to decode
  seen: set[str] = set()
  counts = dict(clips=0, already_cached=0, decoded=0, missing=0, corrupt=0)

  def consume(_, split, cfg, records):
    if splits and split not in splits:
      return
    s = builder_base.decode_settings(cfg, cache)
    for r in records:  # streamed: only this shard's records are kept
      entry = frame_cache.entry_path(s.cache, r.video_path, r.start, r.end)
      if shard_of(entry, num_shards) != shard_index or entry in seen:
        continue
      seen.add(entry)
      counts["clips"] += 1
      if frame_cache.is_fresh(entry, r.video_path):
        counts["already_cached"] += 1
      else:
        todo.setdefault(s, []).append(r)

  run_split_generators(builder, config, manual_dir, consume)
  t0, done, left = time.time(), 0, max_videos or None
  total = sum(len(v) for v in todo.values())
  for s, recs in todo.items():
    recs = recs[:left] if left is not None else recs
    for _, (status, _) in builder_base.map_records(recs, s, workers):
      counts["decoded" if status == "ok" else status] += 1
      done += 1
      if done % 500 == 0:
        print(f"  {done}/{total} clips ({done / (time.time() - t0):.1f}/s)", flush=True)
    if left is not None:
      left -= len(recs)
      if left <= 0:
        break
  counts["seconds"] = round(time.time() - t0, 2)
  return counts


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--builder", required=True, help="a data_builders/<name>")
  p.add_argument("--config", default="", help="builder config (default: the builder's first)")
  p.add_argument("--manual_dir", default="", help="where the dataset's files are")
  p.add_argument("--cache", required=True, help="the frame cache folder (VLX_FRAME_CACHE)")
  p.add_argument("--num_shards", type=int, default=1)
  p.add_argument("--shard_index", type=int, default=0)
  p.add_argument("--workers", type=int, default=None, help="decode processes (default: cores)")
  p.add_argument("--splits", default="", help="comma-separated splits (default: all)")
  p.add_argument("--max_videos", type=int, default=0, help="stop after this many new clips")
  a = p.parse_args(argv)
  counts = extract(a.builder, cache=a.cache, config=a.config, manual_dir=a.manual_dir,
                   num_shards=a.num_shards, shard_index=a.shard_index, workers=a.workers,
                   splits=[s for s in a.splits.split(",") if s], max_videos=a.max_videos)
  print(f"{a.builder}{'/' + a.config if a.config else ''} shard {a.shard_index}/{a.num_shards}: "
        f"{counts['clips']} clips, {counts['already_cached']} already cached, {counts['decoded']} "
        f"decoded, {counts['missing']} missing, {counts['corrupt']} corrupt "
        f"in {counts['seconds']} s -> {a.cache}", flush=True)


if __name__ == "__main__":
  main()

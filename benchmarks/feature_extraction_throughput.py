"""CLIP image-tower throughput (`python -m vlx.extract_features`'s device part): frames/s.

  python benchmarks/feature_extraction_throughput.py                 # ViT-B/32, 224 px, batch 32
  python benchmarks/feature_extraction_throughput.py --batch 64 --dtypes float32,bfloat16 \
      --repeats 3 --preset ViT-B/32

The release ViT-B/32 image tower (87.8 M parameters) with random weights (the speed does not
depend on them) on 224 px pixels, jitted once per batch shape as the tool runs it (the tool's
`tower.fn`: CLIP normalisation + tower). Also prints the largest |bf16 - fp32| feature
difference relative to the fp32 feature norm on the same frames. "Per core" divides by the CPU
cores the process may use (the CPU backend's thread pool); on an accelerator it is per device.
Host-side cost (JPEG decode of the sampled frames + bicubic resize) is not included: it runs in
parallel on tf.data. Prints one JSON object per dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlx.data.features_extract import tower as tower_lib  # noqa: E402


def cores() -> int:
  if jax.default_backend() != "cpu":
    return jax.device_count()
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="ViT-B/32", help=f"one of {sorted(tower_lib.PRESETS)}")
  p.add_argument("--batch", type=int, default=32, help="frames per call")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--repeats", type=int, default=2, help="timed calls per dtype")
  args = p.parse_args()
  reference = None
  for dtype in args.dtypes.split(","):
    t = time.perf_counter()
    tw = tower_lib.random_tower(args.preset, dtype, seed=0)
    init_s = time.perf_counter() - t
    pixels = np.random.RandomState(0).rand(args.batch, tw.size, tw.size, 3).astype(np.float32)
    t = time.perf_counter()
    feats = np.asarray(tw.fn(pixels))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.repeats):
      feats = np.asarray(tw.fn(pixels))
    seconds = (time.perf_counter() - t) / args.repeats
    row = dict(backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
               cores=cores(), preset=args.preset, dtype=dtype, batch=args.batch,
               frame_px=tw.size, init_s=round(init_s, 2), first_call_s=round(compile_s, 2),
               call_s=round(seconds, 3), frames_per_s=round(args.batch / seconds, 1),
               frames_per_s_per_core=round(args.batch / seconds / cores(), 1))
    if reference is None:
      reference = feats
    else:
      row["max_rel_diff_vs_first"] = float(np.abs(feats - reference).max()
                                           / np.linalg.norm(reference, axis=-1).mean())
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()

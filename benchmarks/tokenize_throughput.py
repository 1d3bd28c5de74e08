"""dVAE tokenizer throughput (`python -m vlx.tokenize`'s device part): tokens/s and per core.

  python benchmarks/tokenize_throughput.py                       # release encoder, 56 px frames
  python benchmarks/tokenize_throughput.py --batches 8,32 --dtypes float32,bfloat16 --repeats 2

The release DALL-E encoder size (n_hid 256, 2 blocks per group, vocab 8192: 53.8 M parameters)
with random weights (the speed does not depend on them) on VIOLET's 56 px frames (7 x 7 = 49
codes each), jitted once per batch shape as the tool runs it. Frames are smooth random images
(low-frequency noise), the same for every dtype, so the bf16 line also gives how many codes
differ from fp32 on them (with random weights: trained weights have other logit margins).
"Per core" divides by the CPU cores the process may use (os.sched_getaffinity), the CPU
backend's thread pool; on an accelerator it is per device. Prints one JSON object per setting.
Host-side cost (JPEG decode + pad + resize) is not included: it runs in parallel on tf.data.
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

from vlx.data.tokenize import encoder  # noqa: E402


def smooth_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
  """[n, size, size, 3] in [0, 1]: bilinear upsampling of 8 x 8 random colours."""
  rs = np.random.RandomState(seed)
  coarse = rs.rand(n, 8, 8, 3).astype(np.float32)
  fine = jax.image.resize(coarse, (n, size, size, 3), "bilinear")
  return np.clip(np.asarray(fine), 0.0, 1.0)


def cores() -> int:
  if jax.default_backend() != "cpu":
    return jax.device_count()
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--grid", type=int, default=7, help="codes per side (frames of grid*8 px)")
  p.add_argument("--batches", default="8,32", help="frames per call, comma-separated")
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--repeats", type=int, default=2, help="timed calls per setting")
  p.add_argument("--n_hid", type=int, default=256)
  p.add_argument("--vocab_size", type=int, default=8192)
  args = p.parse_args()
  size = args.grid * 8
  batches = [int(b) for b in args.batches.split(",")]
  frames = smooth_frames(max(batches), size)
  fp32_codes: dict[int, np.ndarray] = {}
  n_cores = cores()
  for dtype in args.dtypes.split(","):
    t = time.perf_counter()
    enc = encoder.random_encoder(dtype, 0, n_hid=args.n_hid, vocab_size=args.vocab_size)
    init_s = time.perf_counter() - t
    for b in batches:
      x = frames[:b]
      t = time.perf_counter()
      codes = np.asarray(enc.fn(x))
      compile_s = time.perf_counter() - t
      t = time.perf_counter()
      for _ in range(args.repeats):
        codes = np.asarray(enc.fn(x))
      seconds = (time.perf_counter() - t) / args.repeats
      tokens = b * args.grid * args.grid
      row = dict(backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
                 cores=n_cores, dtype=dtype, batch=b, frame_px=size, grid=args.grid,
                 n_hid=args.n_hid, vocab=args.vocab_size, init_s=round(init_s, 2),
                 first_call_s=round(compile_s, 2), call_s=round(seconds, 3),
                 frames_per_s=round(b / seconds, 2), tokens_per_s=round(tokens / seconds, 1),
                 tokens_per_s_per_core=round(tokens / seconds / n_cores, 1))
      if dtype == "float32":
        fp32_codes[b] = codes
      elif b in fp32_codes:
        diff = int((fp32_codes[b] != codes).sum())
        row.update(codes_differing_from_fp32=diff, codes_compared=int(codes.size),
                   differing_pct=round(100.0 * diff / codes.size, 2))
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()

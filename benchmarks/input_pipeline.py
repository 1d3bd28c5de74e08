"""Input throughput: moving_shapes build speed (videos/s) and training pipeline speed (clips/s).

  python benchmarks/input_pipeline.py [--config default] [--data_dir DIR] [--steps 50]

Builds the dataset into a fresh temporary folder (unless --data_dir holds it already), then times
global batches of the demo setting (4 frames, 32x32, rand sampling, batch 32) on one CPU device.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from configs import common  # noqa: E402
from vlx.data import pipeline  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--config", default="default", help="moving_shapes builder config")
  p.add_argument("--data_dir", default="", help="reuse a built dataset (else a temp dir)")
  p.add_argument("--steps", type=int, default=50)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--resolution", type=int, default=32)
  p.add_argument("--frames", type=int, default=4)
  args = p.parse_args()
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="moving_shapes_")

  t0 = time.perf_counter()
  builder = pipeline.get_builder("moving_shapes", args.config, data_dir)
  build_s = time.perf_counter() - t0
  total = sum(s.num_examples for s in builder.info.splits.values())
  if not args.data_dir:
    print(f"build  {args.config}: {total} videos in {build_s:.1f} s = "
          f"{total / build_s:.0f} videos/s")

  c = common.base_config()
  c.data.update(data_dir=data_dir, global_batch_size=args.batch, tokenizer="moving_shapes")
  c.data.train.update(builder_config=args.config, num_frames=args.frames,
                      resolution=args.resolution, sampling="rand", max_text_len=40)
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:1])
  it = pipeline.make_train_iterator(c, mesh)
  jax.block_until_ready(next(it))  # start-up (first batch) is not timed
  t0 = time.perf_counter()
  for _ in range(args.steps):
    jax.block_until_ready(next(it))
  dt = time.perf_counter() - t0
  print(f"train pipeline ({args.frames}x{args.resolution}^2, batch {args.batch}): "
        f"{args.steps * args.batch / dt:.0f} clips/s ({dt / args.steps * 1e3:.1f} ms/batch)")


if __name__ == "__main__":
  main()

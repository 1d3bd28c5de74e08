"""Input throughput: dataset build speed (videos/s) and training-read speed (clips/s).

  python benchmarks/input_pipeline.py [--parts build,moving_shapes,video_text,allinone_demo]
      [--videos 16] [--workers 1] [--steps 20] [--batch 8] [--frames 8] [--resolution 224]
      [--false_videos 0,1] [--antialias 1,0] [--data_dir DIR]

* build: `vlx.data.builder_base.generate_examples` over `--videos` generated 320x240, 10-s mp4s
  (25 fps, vlx.data.testing.write_video), each decoded `--rounds` times, with the builders'
  default decode (1 fps, short side 256, JPEG): videos/s with `--workers` processes, and per core.
* moving_shapes: builds moving_shapes (`--ms_config`, default `default`) unless --data_dir holds
  it, then times training batches (decode, sampling, resize, normalisation, tokenization, MLM)
  at --frames x --resolution^2 (and the demo setting 4 x 32^2).
* video_text: builds the `video_text/captions` builder (2 fps, short side 256) over the generated
  videos, then times training batches the same way.
* allinone_demo (not in the default parts): the training input of `allinone_pretrain:demo`
  (moving_shapes `--ms_config`, 3 x 64^2, batch 32, MLM) once per value of `--false_videos`
  (config.data.train.false_videos: the ITM negatives drawn from the dataset), e.g. 0,1.
Training batches are timed after the first (start-up) batch, on one CPU device.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from configs import allinone_pretrain, common  # noqa: E402
from vlx.data import builder_base, pipeline, testing, train_stream  # noqa: E402

CAPTIONS = ("a red circle moves left", "two blue squares move up quickly",
            "a small green star on a black background")


def write_videos(folder: pathlib.Path, n: int, seconds: float = 10.0, fps: int = 25) -> list:
  """n generated 320x240 mp4s of `seconds` s (different content per seed)."""
  paths = []
  for i in range(n):
    path = folder / f"clip{i:04d}.mp4"
    if not path.exists():
      testing.write_video(path, num_frames=int(seconds * fps), height=240, width=320, fps=fps,
                          seed=i)
    paths.append(path)
  return paths


def bench_build(paths: list, workers: int, rounds: int) -> None:
  """generate_examples over the videos `rounds` times (as one record list, distinct keys)."""
  config = builder_base.VideoBuilderConfig(name="bench", fps=1.0, short_side=256)
  records = [builder_base.VideoRecord(key=f"{p.stem}-{r}", video_path=str(p),
                                      fields={"video_id": p.stem})
             for r in range(rounds) for p in paths]
  t0 = time.perf_counter()
  frames = sum(len(ex["video"]) for _, ex in builder_base.generate_examples(
      records, config, builder_name="bench", split="train", num_workers=workers))
  dt = time.perf_counter() - t0
  n = len(records)
  print(f"build: {n} videos (320x240, 10 s, 25 fps mp4 -> 1 fps, short side 256, JPEG; "
        f"{frames} frames) in {dt:.1f} s with {workers} worker(s) = {n / dt:.2f} "
        f"videos/s ({n / dt / workers:.2f} videos/s per core)")


def bench_read(data_dir: str, builder: str, builder_config: str, *, frames: int,
               resolution: int, batch: int, steps: int, antialias: tuple[bool, ...] = (True,)
               ) -> None:
  """Training reads of the builder, once per `antialias` value (config.data.train.antialias)."""
  for aa in antialias:
    c = common.base_config()
    c.data.update(data_dir=data_dir, global_batch_size=batch, tokenizer="moving_shapes")
    c.data.train.update(builder=builder, builder_config=builder_config, num_frames=frames,
                        resolution=resolution, sampling="rand", max_text_len=40, antialias=aa)
    clips = time_train_input(c, f"{builder}/{builder_config} ({frames}x{resolution}^2, batch "
                             f"{batch}, antialias={aa})", steps)
    print(f"  = {clips * frames / (os.cpu_count() or 1):.0f} frames/s per core "
          f"({os.cpu_count()} cores)")


def time_train_input(c, label: str, steps: int) -> float:
  """clips/s of make_train_iterator(c) on one CPU device, after the first batch."""
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:1])
  it = train_stream.make_train_iterator(c, mesh)
  jax.block_until_ready(next(it))  # start-up (first batch) is not timed
  t0 = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(next(it))
  dt = time.perf_counter() - t0
  batch = c.data.global_batch_size
  print(f"train read {label}: {steps * batch / dt:.1f} clips/s ({dt / steps * 1e3:.0f} "
        f"ms/batch)")
  return steps * batch / dt


def bench_allinone_demo(data_dir: str, ms_config: str, false_videos: list[int],
                        steps: int) -> None:
  """allinone_pretrain:demo's training input with each false_videos value."""
  for fv in false_videos:
    c = allinone_pretrain.get_config("demo")
    c.data.data_dir = data_dir
    c.data.train.update(builder_config="" if ms_config == "default" else ms_config,
                        false_videos=fv)
    t = c.data.train
    time_train_input(c, f"allinone_pretrain:demo ({t.num_frames}x{t.resolution}^2, batch "
                     f"{c.data.global_batch_size}, false_videos={fv})", steps)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--parts", default="build,moving_shapes,video_text")
  p.add_argument("--videos", type=int, default=16, help="generated videos (build, video_text)")
  p.add_argument("--workers", type=int, default=1, help="decode processes of the build")
  p.add_argument("--rounds", type=int, default=4, help="times the build decodes each video")
  p.add_argument("--ms_config", default="default", help="moving_shapes builder config")
  p.add_argument("--data_dir", default="", help="reuse built datasets (else a temp dir)")
  p.add_argument("--steps", type=int, default=20)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--resolution", type=int, default=224)
  p.add_argument("--frames", type=int, default=8)
  p.add_argument("--false_videos", default="0,1", help="allinone_demo: values to time")
  p.add_argument("--antialias", default="1,0",
                 help="moving_shapes / video_text 224² reads: config.data.train.antialias "
                      "values to time (1 = the default antialiased resize)")
  args = p.parse_args()
  parts = set(args.parts.split(","))
  root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="vlx_input_bench_"))
  videos = root / "manual" / "clips"
  read = dict(frames=args.frames, resolution=args.resolution, batch=args.batch, steps=args.steps,
              antialias=tuple(bool(int(x)) for x in args.antialias.split(",")))
  if parts & {"build", "video_text"}:
    t0 = time.perf_counter()
    paths = write_videos(videos, args.videos)
    print(f"wrote {len(paths)} test videos in {time.perf_counter() - t0:.1f} s")
  if "build" in parts:
    bench_build(paths, args.workers, args.rounds)
  if "moving_shapes" in parts:
    ms_dir = str(root / "moving_shapes")
    t0 = time.perf_counter()
    builder = pipeline.get_builder("moving_shapes", args.ms_config, ms_dir)
    total = sum(s.num_examples for s in builder.info.splits.values())
    print(f"moving_shapes/{args.ms_config}: {total} videos ready in "
          f"{time.perf_counter() - t0:.1f} s")
    bench_read(ms_dir, "moving_shapes", args.ms_config, **read)
    bench_read(ms_dir, "moving_shapes", args.ms_config, frames=4, resolution=32, batch=32,
               steps=args.steps)
  if "allinone_demo" in parts:
    ms_dir = str(root / "moving_shapes")
    pipeline.get_builder("moving_shapes", args.ms_config, ms_dir)
    bench_allinone_demo(ms_dir, args.ms_config, [int(x) for x in args.false_videos.split(",")],
                        args.steps)
  if "video_text" in parts:
    manual = root / "manual"
    with open(manual / "video_text.csv", "w") as f:
      f.write("video,caption,split\n")
      for i, path in enumerate(paths):
        f.write(f"clips/{path.name},{CAPTIONS[i % len(CAPTIONS)]},train\n")
    vt_dir = str(root / "video_text")
    t0 = time.perf_counter()
    os.environ.setdefault(builder_base.WORKERS_ENV, str(args.workers))
    pipeline.build("video_text", "captions", vt_dir, str(manual))
    print(f"video_text/captions: {len(paths)} videos built (2 fps, short side 256) in "
          f"{time.perf_counter() - t0:.1f} s")
    bench_read(vt_dir, "video_text", "captions", **read)


if __name__ == "__main__":
  main()

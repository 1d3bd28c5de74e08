"""`python -m vlx.extract_features`: a built frame dataset -> a TFDS dataset of per-second CLIP
image features.

  python -m vlx.extract_features --builder video_text --config captions --split all \
      --data_dir D --clip ViT-B-32.pt
    # writes D/video_text_clip/captions/1.0.0: every source feature but the frames +
    # clip_features float32 [N, 512] (one per second) + source_index
  python -m vlx.extract_features --builder moving_shapes --config tiny --split train \
      --data_dir D --random_clip --clip_preset tiny   # random weights: demos and tests only

Read it with `config.data.train.builder='video_text_clip'` (builder_config 'captions') and the
`features` reader (feature 'clip_features', dim 512); or
`tfds.builder_from_directory('D/video_text_clip/captions/1.0.0')`. The layout, frame choice,
shards and resume: vlx/data/features_extract/__init__.py. A killed run started again with the
same command goes on from its last finished shard. User errors (unknown builder, config or
split, missing data_dir or --clip file, an unknown frame rate) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from vlx import cli
from vlx.data.tokenize import cli_args

PROG = "python -m vlx.extract_features"


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
  cli_args.add_source(p, config_example="captions or tiny", what="feature",
                      split_help="split(s), comma-separated, or all")
  w = p.add_mutually_exclusive_group(required=True)
  w.add_argument("--clip", default="", help="CLIP weights: OpenAI's ViT-B-32.pt (TorchScript) "
                 "or an open_clip state dict")
  w.add_argument("--random_clip", action="store_true",
                 help="random tower weights (demos/tests: the features mean nothing)")
  p.add_argument("--clip_variant", default="openai", help="openai (QuickGELU) | open_clip "
                 "(GELU) for --clip")
  p.add_argument("--clip_head_width", type=int, default=64, help="--clip: attention heads = "
                 "width // this (64 in every CLIP release)")
  p.add_argument("--clip_preset", default="ViT-B/32", help="--random_clip sizes: ViT-B/32 | "
                 "tiny (32 px input)")
  p.add_argument("--features_per_second", type=float, default=1.0,
                 help="features per second of video (the frame nearest each k / rate)")
  p.add_argument("--source_fps", type=float, default=None,
                 help="frames stored per second in the source (default: its builder config)")
  p.add_argument("--feature", default="video", help="the source's frames feature")
  p.add_argument("--frames", dest="keep_frames", action="store_true",
                 help="also copy the source frames into the feature dataset")
  cli_args.add_output(p, what="tower", suffix="_clip",
                      tag="a rate tag for --features_per_second != 1")
  p.add_argument("--seed", type=int, default=0, help="--random_clip init seed")
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)

  @cli.entry_point(PROG, exit_on_error=False)
  def run() -> int:
    # pylint: disable=import-outside-toplevel
    import dataclasses

    from vlx.data.features_extract import Settings, extract_split, run as run_lib, sampling
    from vlx.data.features_extract import tower as tower_lib
    # pylint: enable=import-outside-toplevel
    data_dir = cli_args.checked_data_dir(args)
    if args.clip and not os.path.isfile(os.path.expanduser(args.clip)):
      raise cli.PathError(f"--clip {args.clip}: no such file (OpenAI's ViT-B-32.pt or an "
                          "open_clip state dict)")
    if args.random_clip and args.clip_preset not in tower_lib.PRESETS:
      raise cli.UsageError(f"--clip_preset={args.clip_preset!r}: expected one of "
                           f"{sorted(tower_lib.PRESETS)}")
    split = args.split
    if split.strip() == "all":
      split = run_lib.all_splits(args.builder, args.config, data_dir)
    s = Settings(builder=args.builder, config=args.config, split=split, data_dir=data_dir,
                 features_per_second=args.features_per_second, feature=args.feature,
                 keep_frames=args.keep_frames, shard_size=args.shard_size, batch=args.batch,
                 dtype=args.dtype, out_builder=args.out_builder, out_config=args.out_config)
    source = run_lib.open_source(s)  # bad builder / config / split: one line before the model
    s = dataclasses.replace(s, source_fps=sampling.source_fps(source, args.source_fps))
    if args.random_clip:
      print(f"{PROG}: WARNING: --random_clip: random CLIP weights, the features mean nothing "
            "(demos and tests only)", file=sys.stderr, flush=True)
      tower = tower_lib.random_tower(args.clip_preset, args.dtype, args.seed)
    else:
      tower = tower_lib.loaded_tower(args.clip, args.clip_variant, args.dtype,
                                     args.clip_head_width)
    s = dataclasses.replace(s, tower=tower.description)
    extract_split(s, tower, overwrite=args.overwrite,
                  worker=(args.worker_index, args.num_workers))
    return 0
  return run()


if __name__ == "__main__":
  sys.exit(main())

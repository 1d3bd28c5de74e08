"""`python -m vlx.tokenize`: a built frame dataset -> a TFDS dataset of DALL-E dVAE codes per frame.

  python -m vlx.tokenize --builder webvid --config 2M --split train,val --data_dir D --encoder E
    # E = `python -m vlx.convert --family violet --checkpoint encoder.pkl --out E`
    # writes D/webvid_vq/2M/1.0.0: every source feature + vq_tokens int16 [T, 7, 7] + source_index
  python -m vlx.tokenize --builder moving_shapes --config tiny --split train --data_dir D \
      --random_encoder        # random weights: demos and tests only (the codes mean nothing)

Read it with `config.data.train.builder='webvid_vq'` (builder_config '2M'): reader `token_grid`
(feature 'vq_tokens', `align_with='video'` for MVM targets of the sampled frames) beside the
`frames` reader; or `tfds.builder_from_directory('D/webvid_vq/2M/1.0.0')`. The layout, views
(`--fit crop` for VIMPAC; `--views SPEC`: several crop views in one record), shards and resume:
vlx/data/tokenize/__init__.py. A killed run started
again with the same command goes on from its last finished shard. `--dtype bfloat16` runs the
encoder's convolutions in bf16 (`--compare_fp32` prints how many codes of the first batch
differ from fp32). User errors (unknown builder, config or split, missing data_dir or encoder,
settings that differ from the shards already written) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from vlx import cli
from vlx.data.tokenize import cli_args

PROG = "python -m vlx.tokenize"


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
  cli_args.add_source(p, config_example="2M or tiny", what="token",
                      split_help="split(s), comma-separated: train or train,val")
  w = p.add_mutually_exclusive_group(required=True)
  w.add_argument("--encoder", default="", help="a `python -m vlx.convert` output of encoder.pkl")
  w.add_argument("--random_encoder", action="store_true",
                 help="random dVAE weights (demos/tests: the codes mean nothing)")
  p.add_argument("--random_encoder_config", default="{}",
                 help='JSON DalleEncoder kwargs for --random_encoder, e.g. \'{"n_hid": 64, '
                 '"vocab_size": 512}\' (default: the release sizes)')
  p.add_argument("--grid", type=int, default=7, help="codes per frame side (frames of grid*8 px)")
  p.add_argument("--fit", default="pad", help="pad (zeros to a square, then resize) | crop (short "
                 "side -> --short_side, a grid*8 crop at --crop_at)")
  p.add_argument("--short_side", type=int, default=0, help="crop: short side before the crop "
                 "(default grid*8; e.g. grid*8*160/128 for a larger-resize view)")
  p.add_argument("--crop_at", default="center", help="crop: top | center | bottom")
  p.add_argument("--hflip", action="store_true", help="flip the frames horizontally")
  p.add_argument("--views", default="", metavar="SPEC", help="crop: several views per record, "
                 "vq_tokens [V, T, g, g]; '_'-joined parts flip2 (hflip 0, 1), crop3 (top, "
                 "center, bottom) or center, scale2 (short side grid*8, grid*8*160/128), e.g. "
                 "flip2_crop3_scale2 = 12 views, ordered flip-major, then crop, then scale; "
                 "config name <config>_g<grid>_<SPEC>")
  p.add_argument("--feature", default="video", help="the encoded-frames feature")
  p.add_argument("--no-frames", dest="keep_frames", action="store_false",
                 help="do not copy the encoded frames into the token dataset")
  p.add_argument("--compare_fp32", action="store_true",
                 help="with --dtype bfloat16: count the codes of the first batch that differ "
                 "from fp32")
  cli_args.add_output(p, what="encoder", suffix="_vq",
                      tag="a view tag for non-default --grid/--fit/--hflip/--views")
  p.add_argument("--seed", type=int, default=0, help="--random_encoder init seed")
  return p


def _encoder(args, dtype: str):
  from vlx.data.tokenize import encoder  # pylint: disable=import-outside-toplevel
  if args.random_encoder:
    try:
      kwargs = json.loads(args.random_encoder_config)
    except ValueError as e:
      raise cli.UsageError(f"--random_encoder_config: not JSON ({e})") from None
    if not isinstance(kwargs, dict):
      raise cli.UsageError("--random_encoder_config: expected a JSON object of DalleEncoder kwargs")
    return encoder.random_encoder(dtype, args.seed, **kwargs)
  return encoder.converted_encoder(args.encoder, dtype)


def _comparison(args, echo):
  """on_first_batch callback: fp32 codes of the same pixels vs the bf16 ones."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  reference = _encoder(args, "float32")

  def compare(pixels, codes):
    ref = np.asarray(reference.fn(pixels))[:len(pixels)]
    got = np.asarray(codes)[:len(pixels)]
    diff = int((ref != got).sum())
    echo(f"bfloat16 vs float32 on {len(pixels)} frames: {diff} of {ref.size} codes differ "
         f"({100.0 * diff / max(ref.size, 1):.2f}%)")
  return compare


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)

  @cli.entry_point(PROG, exit_on_error=False)
  def run() -> int:
    # pylint: disable-next=import-outside-toplevel
    from vlx.data.tokenize import Settings, run as run_lib, tokenize_split
    data_dir = cli_args.checked_data_dir(args)
    s = Settings(builder=args.builder, config=args.config, split=args.split, data_dir=data_dir,
                 grid=args.grid, fit=args.fit, short_side=args.short_side,
                 crop_at=args.crop_at, hflip=args.hflip, views=args.views,
                 feature=args.feature,
                 keep_frames=args.keep_frames, shard_size=args.shard_size, batch=args.batch,
                 dtype=args.dtype, out_builder=args.out_builder, out_config=args.out_config)
    if args.compare_fp32 and args.dtype == "float32":
      raise cli.UsageError("--compare_fp32 needs --dtype bfloat16")
    run_lib.open_source(s)  # bad builder / config / split: one line before any model work
    if args.random_encoder:
      print(f"{PROG}: WARNING: --random_encoder: random dVAE weights, the codes mean nothing "
            "(demos and tests only)", file=sys.stderr, flush=True)
    enc = _encoder(args, args.dtype)
    import dataclasses  # pylint: disable=import-outside-toplevel
    s = dataclasses.replace(s, encoder=enc.description)
    compare = _comparison(args, print) if args.compare_fp32 else None
    tokenize_split(s, enc, overwrite=args.overwrite, on_first_batch=compare,
                   worker=(args.worker_index, args.num_workers))
    return 0
  return run()


if __name__ == "__main__":
  sys.exit(main())

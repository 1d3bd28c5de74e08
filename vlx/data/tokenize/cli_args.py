"""Command-line arguments shared by the commands that derive a dataset from a built frame dataset
shard by shard (`python -m vlx.tokenize`, `python -m vlx.extract_features`): the source, the
sharded write and the multi-machine split, with their one-line checks."""
from __future__ import annotations

import argparse
import os

from vlx import cli


def add_source(p: argparse.ArgumentParser, *, config_example: str, split_help: str,
               what: str) -> None:
  """--builder / --config / --split / --data_dir (`what`: the derived dataset, e.g. 'token')."""
  p.add_argument("--builder", required=True, help="the built frame dataset (data_builders/NAME)")
  p.add_argument("--config", default="", help=f"its builder config, e.g. {config_example}")
  p.add_argument("--split", required=True, help=split_help)
  p.add_argument("--data_dir", required=True, help=f"TFDS data_dir holding it; the {what} "
                 "dataset is written there too")


def add_output(p: argparse.ArgumentParser, *, what: str, suffix: str, tag: str) -> None:
  """--batch / --shard_size / --dtype / --out_builder / --out_config / --overwrite and the
  multi-machine --num_workers / --worker_index (`tag`: what the default out_config adds)."""
  p.add_argument("--batch", type=int, default=64, help="frames per device batch")
  p.add_argument("--shard_size", type=int, default=1000, help="examples per resumable shard")
  p.add_argument("--dtype", default="float32", help=f"float32 | bfloat16 ({what} compute)")
  p.add_argument("--out_builder", default="", help=f"output dataset name (default NAME{suffix})")
  p.add_argument("--out_config", default=None, help=f"its config (default: the source's config "
                 f"+ {tag})")
  p.add_argument("--overwrite", action="store_true", help="drop shards made earlier")
  p.add_argument("--num_workers", type=int, default=1, help="machines sharing the work (each "
                 "with its --worker_index; a last run without them writes the dataset)")
  p.add_argument("--worker_index", type=int, default=0, help="this machine's shards: "
                 "k %% num_workers == worker_index")


def checked_data_dir(args: argparse.Namespace) -> str:
  """--data_dir expanded; an absent folder or a --worker_index outside [0, --num_workers) is a
  one-line usage error."""
  data_dir = os.path.expanduser(args.data_dir)
  if not os.path.isdir(data_dir):
    raise cli.PathError(f"--data_dir {data_dir}: no such folder (build the dataset first: "
                        f"python -m vlx.data.pipeline --builder={args.builder} ...)")
  if not 0 <= args.worker_index < args.num_workers:
    raise cli.UsageError(f"--worker_index={args.worker_index} must be in [0, --num_workers="
                         f"{args.num_workers})")
  return data_dir

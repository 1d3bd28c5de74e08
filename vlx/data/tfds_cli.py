"""`tfds build` for the vlx builders, without apache_beam.

  vlx-tfds build data_builders/msrvtt --config=retrieval --manual_dir=~/msrvtt [--data_dir=D]
  python -m vlx.data.tfds_cli build data_builders/moving_shapes --config=tiny

tensorflow-datasets 4.9.10's own `tfds` command imports apache_beam at start-up (its
`convert_format` subcommand needs it), and apache_beam cannot be installed next to our pins. This
is the same command line: TFDS's own `build` subcommand (every flag of `tfds build --help`:
--config, --data_dir, --manual_dir, --overwrite, --max_examples_per_split, ...) under a parser
that registers only it. Paths like `data_builders/NAME` resolve against the current directory.
User errors (unknown builder or config, missing manual dir, malformed annotation file, a split
with no video found) print one line `vlx-tfds: error: ...` and exit 2 (vlx/cli.py).
"""
from __future__ import annotations

import dataclasses
import os
import sys

import simple_parsing
from absl import app
from tensorflow_datasets.scripts.cli import build, cli_utils

from vlx import cli


@dataclasses.dataclass(frozen=True, kw_only=True)
class Args(cli_utils.Args):
  """TFDS dataset builds (the `build` subcommand of the tfds CLI)."""

  command: build.Args = simple_parsing.subparsers({"build": build.Args})

  def execute(self) -> None:
    self.command.execute()


_parse_flags = cli_utils.make_flags_parser(Args, description=__doc__.split("\n\n")[0])


PROG = "vlx-tfds"


def _pre_checks(args: Args) -> None:
  """What TFDS reports late or as an AssertionError, checked first for vlx's builders: the
  builder config name and the manual dir (one-line user errors, vlx/cli.py)."""
  from vlx.data import pipeline  # pylint: disable=import-outside-toplevel
  build_args, paths = args.command, args.command.paths
  config = str(build_args.generation.config or "")
  for name in list(build_args.positional_datasets or []) + list(build_args.datasets or []):
    builder = os.path.basename(os.path.normpath(name))
    ours = os.path.basename(os.path.dirname(os.path.normpath(name))) == "data_builders"
    if not ours and not os.path.isfile(os.path.join(name, f"{builder}_dataset_builder.py")):
      continue  # not a builder folder of ours: TFDS reports it
    pipeline._check_builder_config(  # pylint: disable=protected-access
        builder, config.split("/")[0], f"--config={config}")
    manual = str(paths.manual_dir or "")
    if manual and paths.add_name_to_manual_dir:
      manual = os.path.join(manual, builder)
    pipeline.check_manual_dir(builder, manual, str(paths.data_dir or ""))


@cli.entry_point(PROG)
def main(args: Args) -> None:
  _pre_checks(args)
  args.execute()


def launch() -> None:
  """Console script `vlx-tfds`: builder folders given as paths import from the current
  directory, as with `python -m` (the data_builders package may not be installed)."""
  if os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  launch()

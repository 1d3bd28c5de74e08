"""Builder access: the prepared TFDS builders of data_builders/ (get_builder, build,
`python -m vlx.data.pipeline`).

The data package reads one way: builder access (this module) -> modality readers
(vlx.data.modalities) -> task rows (vlx.data.tasks, + family hooks, vlx.data.hooks) -> batches
(vlx.data.train_stream: make_train_iterator; vlx.data.eval_stream: make_eval_batches).
"""
from __future__ import annotations

import importlib
import logging
import os
import pathlib
import re
import sys

import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.cli import PathError, UserError

tf.config.set_visible_devices([], "GPU")  # TF must never take the accelerators from JAX

AUTO_BUILD = ("moving_shapes",)  # generated locally: built on first use
log = logging.getLogger(__name__)


class DatasetNotBuiltError(UserError, RuntimeError):
  """The TFDS dataset is not in data_dir; the message gives the `tfds build` command."""


def _data_dir(data_dir: str) -> str:
  return os.path.expanduser(data_dir) if data_dir else tfds.core.constants.DATA_DIR


class BuilderMissingError(DatasetNotBuiltError, ValueError):
  """No data_builders/<name> yet (a paper dataset planned but not written): the message says so
  and gives the `tfds build` command to run once it exists. Also a ValueError (bad config)."""


def _builder_module(builder: str):
  """Imports data_builders/<builder>/<builder>_dataset_builder.py (registers it with TFDS)."""
  name = f"data_builders.{builder}.{builder}_dataset_builder"
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name is None or not name.startswith(e.name):
      raise  # a dependency of the builder is missing, not the builder
    import difflib  # pylint: disable=import-outside-toplevel
    root = pathlib.Path(__file__).resolve().parents[2] / "data_builders"
    known = sorted(d.name for d in root.iterdir() if (d / f"{d.name}_dataset_builder.py").is_file())
    near = difflib.get_close_matches(builder, known, n=3, cutoff=0.6)
    raise BuilderMissingError(
        f"no dataset builder data_builders/{builder}/{builder}_dataset_builder.py (builder "
        f"{builder!r}: config.data.train.builder, evals.<name>.builder or --builder); "
        + (f"nearest: {', '.join(near)}" if near else f"available: {', '.join(known)}")) from e


def get_builder(builder: str, builder_config: str = "", data_dir: str = "",
                manual_dir: str = "") -> tfds.core.DatasetBuilder:
  """The prepared builder of data_builders/<builder>; builds moving_shapes if it is missing. A
  dataset with no builder module that a vlx tool wrote into data_dir (`python -m vlx.tokenize`'s
  token datasets) is opened from its folder."""
  data_dir = _data_dir(data_dir)
  written = _written_dataset(builder, builder_config, data_dir)
  if written is not None:
    return written
  _check_builder_config(builder, builder_config)
  b = _builder_module(builder).Builder(config=builder_config or None, data_dir=data_dir)
  if b.is_prepared():
    return b
  if builder in AUTO_BUILD:
    log.warning("dataset %s/%s not found in %s: generating it now (local, no download)",
                builder, builder_config or "default", data_dir)
    b.download_and_prepare()
    return b
  manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
  config_flag = f" --config={builder_config}" if builder_config else ""
  raise DatasetNotBuiltError(
      f"dataset {builder!r}{' config ' + repr(builder_config) if builder_config else ''} is not "
      f"built in {data_dir}. Put your copy of the dataset in {manual} and run:\n"
      f"  vlx-tfds build data_builders/{builder}{config_flag} --manual_dir={manual} "
      f"--data_dir={data_dir}\n"
      f"(`tfds build` with the same arguments where apache_beam is installed; or python -m "
      f"vlx.data.pipeline --builder={builder}{config_flag} --manual_dir={manual} "
      f"--data_dir={data_dir})")


def _written_dataset(builder: str, builder_config: str, data_dir: str):
  """tfds.builder_from_directory of data_dir/<builder>[/<config>]/<newest version> when
  data_builders/<builder> does not exist and that folder holds a dataset; else None."""
  root = pathlib.Path(__file__).resolve().parents[2] / "data_builders" / builder
  module = f"data_builders.{builder}.{builder}_dataset_builder"   # also one registered in code
  folder = pathlib.Path(data_dir, builder, builder_config) if builder_config else \
      pathlib.Path(data_dir, builder)
  if root.exists() or module in sys.modules or not folder.is_dir():
    return None
  versions = [d for d in folder.iterdir()   # not TFDS's incomplete.* folders of a killed write
              if re.fullmatch(r"\d+\.\d+\.\d+", d.name) and (d / "dataset_info.json").is_file()]
  if not versions:
    return None
  newest = max(versions, key=lambda d: tuple(int(x) for x in d.name.split(".")))
  return tfds.builder_from_directory(str(newest))


def build(builder: str, builder_config: str = "", data_dir: str = "",
          manual_dir: str = "") -> tfds.core.DatasetBuilder:
  """Prepares data_builders/<builder> (what `tfds build` does, without its CLI's imports)."""
  b = _builder_module(builder).Builder(config=builder_config or None, data_dir=_data_dir(data_dir))
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  b.download_and_prepare(download_config=config)
  return b


class SplitError(UserError, ValueError):
  """A split the built dataset does not have."""


def check_split(builder: tfds.core.DatasetBuilder, split: str, where: str) -> None:
  """Every part of a TFDS split string ('train', 'train[:10%]+val') must be a built split."""
  known = sorted(builder.info.splits.keys())
  for part in str(split).split("+"):
    if part.split("[")[0].strip() not in known:
      raise SplitError(f"{where}={split!r}: dataset {builder.name!r} in {builder.data_dir} has "
                       f"splits {known}")


def check_datasets(config, *, train: bool, evals: bool) -> None:
  """The datasets a run reads (data.train or its mixture; every eval block) are built and have
  their splits: one line each, before any model work or hours of training."""
  from vlx.data import mixture  # pylint: disable=import-outside-toplevel
  data_dir, manual = config.data.data_dir, config.data.get("manual_dir", "")
  if train:
    for e in mixture.parse(config.data.train):
      b = get_builder(e.builder, e.builder_config, data_dir, manual)
      check_split(b, config.data.train.split, "config.data.train.split")
  for name, ev in (config.evals.items() if evals else ()):
    b = get_builder(ev.builder, ev.get("builder_config", ""), data_dir, manual)
    check_split(b, ev.split, f"config.evals.{name}.split")


def num_examples(builder: str, builder_config: str, split: str, data_dir: str) -> int:
  """Examples in `split` (a TFDS split string such as 'test' or 'train[:10%]')."""
  return get_builder(builder, builder_config, data_dir).info.splits[split].num_examples


def is_image_dataset(builder) -> bool:
  """Rows of this builder are images (ALPRO's type='img'): its Builder sets IS_IMAGE = True (a
  written dataset, e.g. a token dataset of one, says so in its metadata)."""
  metadata = getattr(getattr(builder, "info", None), "metadata", None) or {}
  return bool(getattr(builder, "IS_IMAGE", False) or metadata.get("is_image", False))


PROG = "python -m vlx.data.pipeline"


def _check_builder_config(builder: str, builder_config: str, where: str = "") -> None:
  """The builder config must be one the builder defines (TFDS's own error is a ValueError)."""
  configs = [c.name for c in getattr(_builder_module(builder).Builder, "BUILDER_CONFIGS", ())]
  if builder_config and builder_config not in configs:
    where = where or (f"builder_config {builder_config!r} of builder {builder!r} (config."
                      "data.train.builder_config or evals.<name>.builder_config)")
    raise BuilderConfigError(f"{where}: data_builders/{builder} has no such config; expected one "
                             f"of {configs}")


class BuilderConfigError(UserError, ValueError):
  """A builder config name the builder does not define."""


def check_manual_dir(builder: str, manual_dir: str, data_dir: str) -> None:
  """A builder that reads your copy of a dataset needs a non-empty manual dir (TFDS's own check
  is an AssertionError with the instructions appended)."""
  if not getattr(_builder_module(builder).Builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    return
  flag = "--manual_dir" if manual_dir else "default manual dir"
  path = manual_dir or os.path.join(_data_dir(data_dir), "downloads", "manual")
  path = os.path.expanduser(path)
  if not os.path.isdir(path) or not os.listdir(path):
    raise PathError(
        f"{flag} {path}: {'is empty' if os.path.isdir(path) else 'does not exist'}; put your "
        f"copy of the dataset there (layout: MANUAL_DOWNLOAD_INSTRUCTIONS in "
        f"data_builders/{builder}/{builder}_dataset_builder.py)")


def main(argv: list[str] | None = None) -> int:
  """Builds one dataset; exit status 0, or 2 with one line for a user error (vlx.cli)."""
  import argparse  # pylint: disable=g-import-not-at-top
  from vlx import cli  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(prog=PROG, description="Build a dataset of data_builders/ with "
                              "TFDS (as `vlx-tfds build data_builders/NAME`).")
  p.add_argument("--builder", required=True, help="folder name in data_builders/, e.g. video_text")
  p.add_argument("--config", default="", help="builder config, e.g. captions")
  p.add_argument("--data_dir", default="", help="where the built dataset goes (TFDS data_dir)")
  p.add_argument("--manual_dir", default="",
                 help="your copy of the raw dataset (default <data_dir>/downloads/manual)")
  args = p.parse_args(argv)

  @cli.entry_point(PROG, exit_on_error=False)
  def run() -> int:
    _check_builder_config(args.builder, args.config, f"--config={args.config}")
    check_manual_dir(args.builder, args.manual_dir, args.data_dir)
    b = build(args.builder, args.config, args.data_dir, args.manual_dir)
    print(f"built {b.name}/{b.builder_config.name if b.builder_config else ''} in {b.data_dir}: "
          f"{ {k: v.num_examples for k, v in b.info.splits.items()} }")
    return 0
  return run()


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(main())

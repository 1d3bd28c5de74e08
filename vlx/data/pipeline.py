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

import tensorflow as tf
import tensorflow_datasets as tfds

tf.config.set_visible_devices([], "GPU")  # TF must never take the accelerators from JAX

AUTO_BUILD = ("moving_shapes",)  # generated locally: built on first use
log = logging.getLogger(__name__)


class DatasetNotBuiltError(RuntimeError):
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
    raise BuilderMissingError(
        f"no dataset builder data_builders/{builder}/{builder}_dataset_builder.py (config "
        f"data.train.builder / evals.*.builder = {builder!r}): the {builder!r} builder is planned "
        f"(issue 4) but not written yet. Once it exists, put your copy of the dataset in "
        f"<data_dir>/downloads/manual and run:\n  vlx-tfds build data_builders/{builder} "
        f"--manual_dir=<data_dir>/downloads/manual --data_dir=<data_dir>") from e


def get_builder(builder: str, builder_config: str = "", data_dir: str = "",
                manual_dir: str = "") -> tfds.core.DatasetBuilder:
  """The prepared builder of data_builders/<builder>; builds moving_shapes if it is missing."""
  data_dir = _data_dir(data_dir)
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


def build(builder: str, builder_config: str = "", data_dir: str = "",
          manual_dir: str = "") -> tfds.core.DatasetBuilder:
  """Prepares data_builders/<builder> (what `tfds build` does, without its CLI's imports)."""
  b = _builder_module(builder).Builder(config=builder_config or None, data_dir=_data_dir(data_dir))
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  b.download_and_prepare(download_config=config)
  return b


def num_examples(builder: str, builder_config: str, split: str, data_dir: str) -> int:
  """Examples in `split` (a TFDS split string such as 'test' or 'train[:10%]')."""
  return get_builder(builder, builder_config, data_dir).info.splits[split].num_examples


def is_image_dataset(builder) -> bool:
  """Rows of this builder are images (ALPRO's type='img'): its Builder sets IS_IMAGE = True."""
  return bool(getattr(builder, "IS_IMAGE", False))


def main(argv: list[str] | None = None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description="Build a dataset of data_builders/ with TFDS.")
  p.add_argument("--builder", required=True)
  p.add_argument("--config", default="")
  p.add_argument("--data_dir", default="")
  p.add_argument("--manual_dir", default="")
  args = p.parse_args(argv)
  b = build(args.builder, args.config, args.data_dir, args.manual_dir)
  print(f"built {b.name}/{b.builder_config.name if b.builder_config else ''} in {b.data_dir}: "
        f"{ {k: v.num_examples for k, v in b.info.splits.items()} }")


if __name__ == "__main__":
  main()

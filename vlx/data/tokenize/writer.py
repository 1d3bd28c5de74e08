"""Writes the token dataset with TFDS: the source's features + `vq_tokens` + `source_index`.

The output builder is a GeneratorBasedBuilder made per run (its name and config are the token
dataset's, vlx.data.tokenize.settings.output_names); TFDS writes each split into a temporary
folder and renames it when complete. It is written unshuffled, so example i of a split is the
source split's example i. Encoded frames (and any other image feature) are copied as bytes,
never re-encoded; the other features are decoded and re-encoded by their own TFDS features.
"""
from __future__ import annotations

import os
from typing import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vlx.cli import UsageError
from vlx.data.builder_base import token_grid_feature
from vlx.data.tokenize import shards
from vlx.data.tokenize.settings import VERSION, Settings

TOKENS, SOURCE_INDEX = "vq_tokens", "source_index"


def _is_image(feature) -> bool:
  return isinstance(feature, (tfds.features.Image, tfds.features.Video))


def output_features(source: tfds.core.DatasetBuilder, s: Settings) -> dict:
  feats = dict(source.info.features.items())
  if not s.keep_frames:
    feats.pop(s.feature, None)
  for name in (TOKENS, SOURCE_INDEX):
    if name in feats:
      raise UsageError(f"--builder {source.name}: already has a feature {name!r}; tokenize the "
                       "frame dataset it was made from")
  feats[TOKENS] = token_grid_feature(s.grid, s.grid)
  feats[SOURCE_INDEX] = np.int64
  return feats


def _examples(source: tfds.core.DatasetBuilder, split: str, folder: str, s: Settings,
              num_examples: int) -> Iterator[tuple[int, dict]]:
  feats = source.info.features
  skip = {k: tfds.decode.SkipDecoding() for k, f in feats.items() if _is_image(f)}
  ds = source.as_dataset(split=split, shuffle_files=False, decoders=skip)
  it = ds.as_numpy_iterator()
  for k in range(shards.num_shards(num_examples, s.shard_size)):
    shard = shards.load(folder, k)
    offsets = np.concatenate([[0], np.cumsum(shard["lengths"])])
    for j, index in enumerate(shard["source_index"]):
      ex = next(it)
      n = len(ex[s.feature])
      if n != shard["lengths"][j]:
        raise RuntimeError(f"{source.name}/{split} example {index}: {n} frames but its shard "
                           f"has {shard['lengths'][j]} codes; was the source rebuilt? "
                           "(--overwrite)")
      out = {key: (list(v) if key in skip else v) for key, v in ex.items()
             if s.keep_frames or key != s.feature}
      out[TOKENS] = shard["tokens"][offsets[j]:offsets[j + 1]]
      out[SOURCE_INDEX] = int(index)
      yield int(index), out


def write(source: tfds.core.DatasetBuilder, s: Settings, name: str, config: str,
          splits: Mapping[str, str], metadata: dict) -> tfds.core.DatasetBuilder:
  """Writes `splits` ({split: its shard folder}) as the TFDS dataset name/config in s.data_dir
  (replacing an earlier version) and returns its builder."""
  features = tfds.features.FeaturesDict(output_features(source, s))
  sizes = {sp: source.info.splits[sp].num_examples for sp in splits}
  description = (f"DALL-E dVAE codes ({s.grid}x{s.grid} per stored frame) of {source.name}/"
                 f"{s.config or 'default'}, written by `python -m vlx.tokenize`")

  class TokenDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The token dataset (see the module docstring)."""
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version(globals()["VERSION"])
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config, description=description)] \
        if config else []

    def _info(self) -> tfds.core.DatasetInfo:
      return tfds.core.DatasetInfo(builder=self, description=description, features=features,
                                   metadata=tfds.core.MetadataDict(metadata),
                                   disable_shuffling=True)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {sp: self._generate_examples(sp, folder) for sp, folder in splits.items()}

    def _generate_examples(self, split, folder):
      yield from _examples(source, split, folder, s, sizes[split])

  TokenDataset.name = name
  builder = TokenDataset(config=config or None, data_dir=os.path.expanduser(s.data_dir))
  if os.path.isdir(builder.data_dir):  # an earlier pack (fewer splits): replaced as a whole
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(builder.data_dir)
  builder.download_and_prepare()
  return builder

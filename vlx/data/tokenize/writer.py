"""Writes a derived dataset with TFDS: the source's features + the added ones + `source_index`
(the token dataset: `vq_tokens`).

The output builder is a GeneratorBasedBuilder made per run (its name and config are the token
dataset's, vlx.data.tokenize.settings.output_names); TFDS writes each split into a temporary
folder and renames it when complete. It is written unshuffled, so example i of a split is the
source split's example i. Encoded frames (and any other image feature) are copied as bytes,
never re-encoded; the other features are decoded and re-encoded by their own TFDS features.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vlx.cli import UsageError
from vlx.data.builder_base import token_grid_feature, token_views_feature
from vlx.data.tokenize import shards
from vlx.data.tokenize.settings import VERSION, Settings
from vlx.data.tokenize.views import canonical

TOKENS, SOURCE_INDEX = "vq_tokens", "source_index"


@dataclasses.dataclass(frozen=True)
class Added:
  """What a derived dataset adds to its source's features: {output feature: (array key in the
  shard files, its TFDS feature)}, each array holding `lengths[j]` rows per example. `frames` is
  the source's frames feature (dropped unless `keep_frames`; its length is checked against the
  shard's frame counts). A token dataset adds `vq_tokens`; `python -m vlx.extract_features` its
  per-second features. `transforms`: {output feature: fn} applied to an example's rows before
  they are stored (e.g. the [T, V, g, g] rows of `--views` -> [V, T, g, g])."""
  features: Mapping[str, tuple[str, Any]]
  frames: str = "video"
  keep_frames: bool = True
  description: str = ""
  transforms: Mapping[str, Callable[[np.ndarray], np.ndarray]] = dataclasses.field(
      default_factory=dict)


def _is_image(feature) -> bool:
  return isinstance(feature, (tfds.features.Image, tfds.features.Video))


def _views_first(rows: np.ndarray) -> np.ndarray:
  """[T, V, g, g] shard rows of one example -> its [V, T, g, g] record."""
  return np.ascontiguousarray(rows.transpose(1, 0, 2, 3))


def token_added(s: Settings) -> Added:
  what = f"DALL-E dVAE codes ({s.grid}x{s.grid} per stored frame) of {s.builder}/" \
      f"{s.config or 'default'}, written by `python -m vlx.tokenize`"
  if not s.views:
    return Added({TOKENS: ("tokens", token_grid_feature(s.grid, s.grid))}, s.feature,
                 s.keep_frames, what)
  views = s.view_list
  return Added({TOKENS: ("tokens", token_views_feature(len(views), s.grid, s.grid))}, s.feature,
               s.keep_frames, f"{what}; {TOKENS} [V, T, g, g] holds {len(views)} views "
               f"(--views {canonical(s.views)}), in order: " + "; ".join(v.describe() for v in views),
               transforms={TOKENS: _views_first})


def derived_features(source: tfds.core.DatasetBuilder, added: Added) -> dict:
  feats = dict(source.info.features.items())
  if not added.keep_frames:
    feats.pop(added.frames, None)
  for name in (*added.features, SOURCE_INDEX):
    if name in feats:
      raise UsageError(f"--builder {source.name}: already has a feature {name!r}; start from "
                       "the frame dataset it was made from")
  feats.update({name: feature for name, (_, feature) in added.features.items()})
  feats[SOURCE_INDEX] = np.int64
  return feats


def output_features(source: tfds.core.DatasetBuilder, s: Settings) -> dict:
  return derived_features(source, token_added(s))


def _examples(source: tfds.core.DatasetBuilder, split: str, folder: str, added: Added,
              shard_size: int, num_examples: int) -> Iterator[tuple[int, dict]]:
  feats = source.info.features
  skip = {k: tfds.decode.SkipDecoding() for k, f in feats.items() if _is_image(f)}
  ds = source.as_dataset(split=split, shuffle_files=False, decoders=skip)
  it = ds.as_numpy_iterator()
  for k in range(shards.num_shards(num_examples, shard_size)):
    shard = shards.load(folder, k)
    offsets = np.concatenate([[0], np.cumsum(shard["lengths"])])
    frames = shard.get("source_frames", shard["lengths"])
    for j, index in enumerate(shard["source_index"]):
      ex = next(it)
      n = len(ex[added.frames])
      if n != frames[j]:
        raise RuntimeError(f"{source.name}/{split} example {index}: {n} frames but its shard "
                           f"was made from {frames[j]}; was the source rebuilt? (--overwrite)")
      out = {key: (list(v) if key in skip else v) for key, v in ex.items()
             if added.keep_frames or key != added.frames}
      for name, (key, _) in added.features.items():
        out[name] = added.transforms.get(name, _same)(shard[key][offsets[j]:offsets[j + 1]])
      out[SOURCE_INDEX] = int(index)
      yield int(index), out


def _same(rows: np.ndarray) -> np.ndarray:
  return rows


def write(source: tfds.core.DatasetBuilder, s: Settings, name: str, config: str,
          splits: Mapping[str, str], metadata: dict) -> tfds.core.DatasetBuilder:
  """The token dataset: `write_derived` with the dVAE codes."""
  return write_derived(source, s.data_dir, name, config, splits, s.shard_size, token_added(s),
                       metadata)


def write_derived(source: tfds.core.DatasetBuilder, data_dir: str, name: str, config: str,
                  splits: Mapping[str, str], shard_size: int, added: Added, metadata: dict
                  ) -> tfds.core.DatasetBuilder:
  """Writes `splits` ({split: its shard folder}) as the TFDS dataset name/config in data_dir
  (replacing an earlier version) and returns its builder."""
  features = tfds.features.FeaturesDict(derived_features(source, added))
  sizes = {sp: source.info.splits[sp].num_examples for sp in splits}
  description = added.description

  class TokenDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The derived dataset (see the module docstring)."""
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
      yield from _examples(source, split, folder, added, shard_size, sizes[split])

  TokenDataset.name = name
  builder = TokenDataset(config=config or None, data_dir=os.path.expanduser(data_dir))
  if os.path.isdir(builder.data_dir):  # an earlier pack (fewer splits): replaced as a whole
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(builder.data_dir)
  builder.download_and_prepare()
  return builder

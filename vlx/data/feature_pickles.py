"""Builders of released pre-computed feature pickles (a list of per-clip dicts of numpy arrays).

Some retrieval releases ship no videos but one pickle per split holding, per clip, an id, its
captions, per-second video features of one or two backbones and a log-mel spectrogram (e.g. the
EAO authors' `data.tar`: data/<dataset>/<backbone>/<file>.pkl, backbone in resnet / s3d / clip,
the s3d and clip files aligned item by item with the resnet one, which holds the captions and the
audio). `FeaturePickleBuilder` turns such a release into a TFDS dataset:

  features_2d  float32 [N, dim_2d]  the config's 2D features (absent when the config has none;
                                    [0, dim_2d] when the item's array is empty)
  features_3d  float32 [M, dim_3d]  the config's 3D features (absent when the config has none)
  audio        float32 [n, 40]      the spectrogram, stored time first (the pickle holds [40, n])
  captions     Sequence(Text)       every caption of the clip (the subclass picks them)
  video_id     Text                 str(item['id'])

Pickles are read with vlx.data.safe_numpy_pickle (no pickled code runs). Items lacking a needed
key (or failing the subclass's `keep`) are counted as missing, items whose arrays have the wrong
shape as corrupt; both are skipped and reported like video builders' missing / undecodable videos
(builder_base reports: "found N of M annotated videos ..."). `info.metadata['complete_size']`
= {split: size of the full split the release was cut from} (the retrieval protocol counts the
absent clips as misses); a split without an entry has none.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import time
from typing import Any, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl
from vlx.data import safe_numpy_pickle

BACKBONES = ("resnet", "s3d", "clip")  # the release's folders (one per feature backbone)
MEL_BINS = 40


@dataclasses.dataclass
class FeaturePickleConfig(tfds.core.BuilderConfig):
  """Which pickle folder and key give the 2D / 3D features ('' source = none) and their D."""
  source_2d: str = "resnet"
  key_2d: str = "2d"
  dim_2d: int = 2048
  source_3d: str = "resnet"
  key_3d: str = "3d"
  dim_3d: int = 2048


def find_pickle(lay: rl.Layout, name: str, source: str, main: str = "resnet") -> str | None:
  """The file `name` inside a folder named `source` (shallowest first); for the `main` source
  also one outside any backbone folder (the pickles unpacked flat)."""
  cands = sorted(lay.files.get(name.lower(), []), key=lambda r: (r.count("/"), r))
  parent = {r: os.path.basename(os.path.dirname(r)).lower() for r in cands}
  for r in cands:
    if parent[r] == source:
      return lay.path(r)
  if source == main:
    for r in cands:
      if parent[r] not in BACKBONES:
        return lay.path(r)
  return None


def load_items(path: str, builder: str) -> list:
  """The list of item dicts of one pickle; DatasetLayoutError (one line) when it is damaged,
  refused (it names code) or not a list."""
  try:
    items = safe_numpy_pickle.load(path)
  except safe_numpy_pickle.UnsafePickleError as e:
    raise rl.DatasetLayoutError(f"{builder}: {e}") from None
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
          ImportError, IndexError, OSError) as e:
    raise rl.DatasetLayoutError(f"{builder}: {path} is not a readable pickle "
                                f"({type(e).__name__}: {e})") from None
  if isinstance(items, dict) and all(isinstance(v, dict) for v in items.values()):
    items = [dict(v, id=v.get("id", k)) for k, v in items.items()]
  if not isinstance(items, list):
    raise rl.DatasetLayoutError(f"{builder}: {path} holds a {type(items).__name__}, expected a "
                                "list of per-clip dicts")
  return items


class ItemError(Exception):
  """One item cannot be used: status 'missing' (a key is absent) or 'corrupt' (bad array)."""

  def __init__(self, status: str, message: str):
    super().__init__(message)
    self.status = status


def required(item: Any, key: str) -> Any:
  """item[key]; ItemError('missing') when the item has no such key (or None)."""
  if not isinstance(item, dict) or key not in item or item[key] is None:
    raise ItemError("missing", f"no {key!r}")
  return item[key]


def caption_list(item: Any, key: str) -> list[str]:
  """item[key] as a list of captions (one string or a list of strings in the release)."""
  value = required(item, key)
  values = [value] if isinstance(value, (str, bytes)) else list(value)
  return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def feature_array(item: Any, key: str, dim: int) -> np.ndarray:
  """float32 [N, dim] of item[key] (an empty array of any shape gives [0, dim])."""
  value = required(item, key)
  try:
    x = np.asarray(value, dtype=np.float32)
  except (TypeError, ValueError):
    raise ItemError("corrupt", f"{key!r} is not numeric ({type(value).__name__})") from None
  if x.size == 0:
    return np.zeros([0, dim], np.float32)
  if x.ndim != 2 or x.shape[1] != dim:
    raise ItemError("corrupt", f"{key!r} has shape {list(x.shape)}, expected [N, {dim}]")
  return x


def spectrogram(item: Any, key: str = "audio") -> np.ndarray:
  """float32 [n, 40]: item[key] ([40, n] in the release) transposed to time first."""
  value = required(item, key)
  try:
    x = np.asarray(value, dtype=np.float32)
  except (TypeError, ValueError):
    raise ItemError("corrupt", f"{key!r} is not numeric") from None
  if x.ndim != 2 or x.shape[0] != MEL_BINS:
    raise ItemError("corrupt", f"{key!r} has shape {list(x.shape)}, expected [{MEL_BINS}, n]")
  return np.ascontiguousarray(x.T)


class FeaturePickleBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A release of feature pickles (see the module docstring). Subclasses set SPLIT_FILES
  {split: pickle file name}, COMPLETE_SIZE, BUILDER_CONFIGS (FeaturePickleConfig), and implement
  `captions(item, split)`; `keep(item)` filters items (the others count as missing)."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = ""
  MAIN_SOURCE = "resnet"          # the folder whose pickle holds ids, captions and audio
  SPLIT_FILES: Mapping[str, str] = {}
  COMPLETE_SIZE: Mapping[str, int] = {}

  def captions(self, item: dict, split: str) -> list[str]:
    raise NotImplementedError

  def keep(self, item: dict) -> bool:
    return True

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    feats: dict[str, Any] = {
        "video_id": tfds.features.Text(),
        "captions": bb.texts(),
        "audio": tfds.features.Tensor(shape=(None, MEL_BINS), dtype=np.float32,
                                      doc="log-mel spectrogram, time first [n, 40]"),
    }
    if c.source_2d:
      feats["features_2d"] = tfds.features.Tensor(shape=(None, c.dim_2d), dtype=np.float32)
    if c.source_3d:
      feats["features_3d"] = tfds.features.Tensor(shape=(None, c.dim_3d), dtype=np.float32)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(feats), homepage=self.HOMEPAGE or None,
        metadata=tfds.core.MetadataDict(complete_size=dict(self.COMPLETE_SIZE)))

  def _sources(self) -> dict[str, str]:
    c = self.builder_config
    return {s: "" for s in dict.fromkeys((self.MAIN_SOURCE, c.source_2d, c.source_3d)) if s}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    name = f"{self.name}/{self.builder_config.name}"
    lay = rl.Layout(manual_dir, name, index_videos=False)
    splits: dict[str, Any] = {}
    for split, file in self.SPLIT_FILES.items():
      paths = {s: find_pickle(lay, file, s, self.MAIN_SOURCE) for s in self._sources()}
      absent = [f"{s}/{file}" for s, p in paths.items() if p is None]
      splits[split] = rl.Missing(tuple(absent)) if absent else paths
    ready = rl.buildable(splits, name, manual_dir)
    return {split: self._generate_examples(split, paths) for split, paths in ready.items()}

  def _example(self, split: str, items: dict[str, Any]) -> dict:
    c, main = self.builder_config, items[self.MAIN_SOURCE]
    if not self.keep(main):
      raise ItemError("missing", "filtered out (no features in the release)")
    vid = str(required(main, "id"))
    for s, other in items.items():
      if isinstance(other, dict) and "id" in other and str(other["id"]) != vid:
        raise ItemError("corrupt", f"the {s} pickle's item has id {other['id']!r}, not {vid!r}")
    ex = dict(video_id=vid, captions=self.captions(main, split), audio=spectrogram(main))
    if c.source_2d:
      ex["features_2d"] = feature_array(items[c.source_2d], c.key_2d, c.dim_2d)
    if c.source_3d:
      ex["features_3d"] = feature_array(items[c.source_3d], c.key_3d, c.dim_3d)
    return ex

  def _generate_examples(self, split: str, paths: dict[str, str]
                         ) -> Iterator[tuple[str, dict]]:
    name = f"{self.name}/{self.builder_config.name}"
    t0 = time.time()
    lists = {s: load_items(p, name) for s, p in paths.items()}
    sizes = {s: len(v) for s, v in lists.items()}
    if len(set(sizes.values())) > 1:
      raise rl.DatasetLayoutError(
          f"{name}/{split}: the pickles are not aligned item by item: "
          + ", ".join(f"{paths[s]} has {n} items" for s, n in sizes.items()))
    found, missing, corrupt, errors, missing_names = 0, 0, 0, [], []
    for i in range(sizes[self.MAIN_SOURCE]):
      main = lists[self.MAIN_SOURCE][i]
      label = str(main.get("id", i)) if isinstance(main, dict) else str(i)
      try:
        ex = self._example(split, {s: v[i] for s, v in lists.items()})
      except ItemError as e:
        if e.status == "missing":
          missing += 1
          if len(missing_names) < 10:
            missing_names.append(f"{label} ({e})")
        else:
          corrupt += 1
          if len(errors) < 10:
            errors.append(f"{label}: {e}")
        continue
      found += 1
      yield f"{i:07d}", ex
    total = sizes[self.MAIN_SOURCE]
    report = dict(builder=self.name, config=self.builder_config.name, split=split,
                  seconds=round(time.time() - t0, 3), annotated=total, found=found,
                  missing=missing, corrupt=corrupt, records=total, examples=found,
                  failed_clips=0, cached=0, frames=0, missing_videos=missing_names,
                  corrupt_videos=[e.split(":", 1)[0] for e in errors], corrupt_errors=errors)
    bb._finish_report(report)  # noqa: SLF001 (the video builders' report: message, JSON file)
    if not found:
      example = f": {errors[0]}" if errors else ""
      raise rl.DatasetLayoutError(
          f"{name}/{split}: none of the {total} items of {paths[self.MAIN_SOURCE]} could be "
          f"used ({missing} missing features, {corrupt} corrupt){example}")


__all__ = ["BACKBONES", "FeaturePickleBuilder", "FeaturePickleConfig", "ItemError",
           "caption_list", "feature_array", "required", "find_pickle", "load_items", "spectrogram"]

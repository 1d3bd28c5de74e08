"""The driver: source split -> per-second feature shards (resumable) -> the TFDS feature dataset.

The resumable loop, the shard files and the TFDS writer are the token datasets' own
(vlx.data.tokenize: run.compute_shards, shards.packed / apply, writer.write_derived); this module
only says which frames, how they become pixels and what the tower makes of them.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.cli import UsageError
from vlx.data import pipeline, video_ops
from vlx.data.features_extract import sampling
from vlx.data.features_extract.settings import FEATURE, Settings, output_names
from vlx.data.features_extract.tower import Tower, host_preprocess
from vlx.data.tokenize import run as token_run
from vlx.data.tokenize import shards, writer

StopAfter = token_run.StopAfter


def added(s: Settings, dim: int) -> writer.Added:
  """The feature dataset's additions: `clip_features` float32 [N, dim]."""
  return writer.Added(
      {FEATURE: ("features", tfds.features.Tensor(shape=(None, dim), dtype=np.float32))},
      s.feature, s.keep_frames,
      f"CLIP image features ({s.features_per_second:g} per second) of {s.builder}/"
      f"{s.config or 'default'}, written by `python -m vlx.extract_features`")


def open_source(s: Settings, dim: int = 1):
  """The source dataset's builder, checked: built, with the asked splits and frames feature."""
  source = pipeline.get_builder(s.builder, s.config, s.data_dir)
  for sp in token_run._splits(s):  # pylint: disable=protected-access
    if "[" in sp or "+" in sp:
      raise pipeline.SplitError(f"--split={sp!r}: give whole splits, comma-separated (a feature "
                                "dataset keeps every example of a split)")
    pipeline.check_split(source, sp, "--split")
  if s.feature not in source.info.features:
    raise UsageError(f"--feature={s.feature!r}: dataset {source.name!r} has no such feature; it "
                     f"has {sorted(source.info.features.keys())}")
  writer.derived_features(source, added(s, dim))  # a derived dataset as the source: one line
  return source


def all_splits(builder: str, config: str, data_dir: str) -> str:
  """'all' -> every split of the built source, comma-separated."""
  return ",".join(sorted(pipeline.get_builder(builder, config, data_dir).info.splits.keys()))


def _clip_pixels(ex: dict, s: Settings, size: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(float32 [N, size, size, 3] pixels of the sampled frames, the clip's stored frame count)."""
  encoded = ex[s.feature]
  if encoded.shape.rank == 0:          # an image feature: one frame
    encoded = encoded[None]
  count = tf.shape(encoded)[0]
  if s.source_fps == sampling.PER_EXAMPLE:
    fps = tf.cast(ex["orig_fps"], tf.float64)
    check = tf.debugging.assert_positive(
        fps, message=f"{s.builder}: an example with orig_fps <= 0; pass --source_fps")
    with tf.control_dependencies([check]):
      fps = tf.identity(fps)
  else:
    fps = tf.constant(s.source_fps, tf.float64)
  idx = sampling.tf_frame_indices(count, fps, s.features_per_second)
  frames = video_ops.decode_frames(tf.gather(encoded, idx))
  pixels = tf.numpy_function(lambda f: host_preprocess(f, size), [frames], tf.float32,
                             stateful=False)
  return tf.ensure_shape(pixels, [None, size, size, 3]), count


def _batches(source, split: str, lo: int, hi: int, s: Settings, size: int, lengths: list[int],
             counts: list[int]) -> Iterator[tuple[np.ndarray, int]]:
  ds = source.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False,
                         decoders={s.feature: tfds.decode.SkipDecoding()})
  ds = ds.map(lambda ex: _clip_pixels(ex, s, size), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True).prefetch(4)

  def clips():
    for pixels, count in ds.as_numpy_iterator():
      counts.append(int(count))
      yield pixels
  yield from shards.packed(clips(), s.batch, lengths)


def compute(source, split: str, lo: int, hi: int, s: Settings, tower: Tower
            ) -> tuple[dict, int]:
  """Shard arrays of source examples [lo, hi): features float32 [sum N, D], lengths int32 (N
  per example), source_frames int32 (T per example); and the frames encoded."""
  lengths, counts = [], []
  out = shards.apply(_batches(source, split, lo, hi, s, tower.size, lengths, counts), tower.fn)
  if len(lengths) != hi - lo:
    raise RuntimeError(f"read {len(lengths)} examples of {split}[{lo}:{hi}], expected {hi - lo}")
  feats = np.concatenate(out) if out else np.zeros([0, tower.dim], np.float32)
  if feats.shape != (sum(lengths), tower.dim):
    raise RuntimeError(f"features of shape {feats.shape} for {sum(lengths)} frames")
  return dict(features=feats.astype(np.float32), lengths=np.asarray(lengths, np.int32),
              source_frames=np.asarray(counts, np.int32)), len(feats)


def extract_split(s: Settings, tower: Tower, *, overwrite: bool = False,
                  worker: tuple[int, int] = (0, 1), stop_after_shards: int | None = None,
                  echo: Callable[[str], None] = print):
  """Extracts every split of `s.split` (comma-separated), then writes the feature dataset with
  all finished splits; returns its builder (None while other workers' shards are missing).
  `stop_after_shards`: the test hook of a kill (raises StopAfter)."""
  source = open_source(s, tower.dim)
  name, config = output_names(s)
  ready = token_run.compute_shards(
      s, source, name, config, lambda sp, lo, hi: compute(source, sp, lo, hi, s, tower),
      overwrite=overwrite, worker=worker, stop_after_shards=stop_after_shards, echo=echo)
  if ready is None:
    return None
  metadata = dict(s.fingerprint(), source_version=str(source.info.version),
                  is_image=pipeline.is_image_dataset(source), feature_dim=tower.dim,
                  clip_features=f"float32 [N, {tower.dim}] CLIP image features (not "
                  "L2-normalised) of the stored frames nearest t = k / features_per_second",
                  source_index="position of the example in the source split")
  built = writer.write_derived(source, s.data_dir, name, config, ready, s.shard_size,
                               added(s, tower.dim), metadata)
  echo(f"wrote {name}/{config or 'default'} in {built.data_dir}: "
       f"{ {k: v.num_examples for k, v in built.info.splits.items()} }")
  return built

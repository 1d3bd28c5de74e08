"""The modality reader interface: how one TFDS feature of an example becomes batch keys.

A data block (config.data.train, evals.<name>) reads one or more inputs; each is a Reader made by
vlx.data.modalities.make_reader. The streams ask a reader for its TFDS decoder (the feature stays
encoded until `read`), call `read` per row inside tf.data, and use `spec` for empty inputs and for
the padding rows of evaluation batches. Readers know nothing of tasks or model families.
"""
from __future__ import annotations

from typing import Any, Protocol

import tensorflow as tf


class Reader(Protocol):
  """One input modality of a row: decodes one TFDS feature into batch keys (TF graph ops)."""
  feature: str                 # the TFDS feature it reads, e.g. 'video', 'audio', 'features', 'vq_tokens'
  keys: tuple[str, ...]        # batch keys it yields, e.g. ('video',) or ('audio', 'audio_mask')
  def decoder(self) -> Any: ...          # tfds decoder for the feature in as_dataset(decoders=...), or None
  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0) -> dict[str, tf.Tensor]: ...
  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]: ...  # per-row shape and numpy dtype of each key (empty input / eval padding)


# Notes for implementers (the streams rely on them):
# - `read` is called inside tf.data with a stateless seed (int64 [2]); equal seeds, equal output.
#   `train` selects random (training) or deterministic (evaluation) choices. For evaluation
#   views the stream passes the v-th temporal window of the encoded feature (its leading axis
#   cut in num_views even parts) and view=v; a reader may ignore `view`.
#   A reader with a property `reads_whole_views = True` (and `num_views`, which
#   evals.<name>.num_views must equal) gets the whole feature and view=v instead.
# - The shapes of `read`'s outputs are static and equal `spec()`'s.
# - make_reader(kind, cfg, where): cfg is the input's config block; cfg.key is the batch-key
#   prefix the reader's keys start with (set by make_readers); `where` names the block in errors.

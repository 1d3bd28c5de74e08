"""Modality readers (vlx.data.modalities.base.Reader): one per kind of stored input.

A data block (config.data.train or evals.<name>) reads `inputs`, an optional ConfigDict
{batch-key prefix: ConfigDict(reader=<kind>, feature=<TFDS feature>, ...)}. Without it (every
shipped config) the block has one input, `video`, read by `frames` from the block's own frame
fields. With it the listed inputs are read (each with its own seed, input_seed); an entry's
fields default to the block's (so `video=ConfigDict(reader='frames')` keeps the frames beside e.g.
an audio input).
"""
from __future__ import annotations

import zlib

import ml_collections
import tensorflow as tf

from vlx.data.errors import DataConfigError
from vlx.data.modalities import (audio, features, frame_features, frame_tokens, frames,
                                 token_grid)
from vlx.data.modalities.base import Reader

READERS = {"frames": frames.from_config,   # kind -> from_config(cfg, where) -> Reader
           "audio": audio.from_config, "features": features.from_config,
           "token_grid": token_grid.from_config,
           "frame_tokens": frame_tokens.from_config,
           "frame_features": frame_features.from_config}
DEFAULT_INPUT = "video"                    # the key prefix of the frames input of a plain block


def make_reader(kind: str, cfg, where: str) -> Reader:
  """The reader `kind` (a READERS key) configured by `cfg`; errors name `where`."""
  if kind not in READERS:
    raise DataConfigError(f"{where}.reader={kind!r}: unknown reader; expected one of "
                     f"{tuple(sorted(READERS))}")
  return READERS[kind](cfg, where)


def _entry_config(block, prefix: str, entry) -> ml_collections.ConfigDict:
  """The block's fields overridden by one `inputs` entry's, with key = its prefix."""
  fields = {k: v for k, v in block.items() if k != "inputs"}
  fields.update(entry.items())
  fields["key"] = prefix
  return ml_collections.ConfigDict(fields)


def make_readers(block, where: str) -> dict[str, Reader]:
  """{batch-key prefix: Reader} of a data block, in reading order (see the module docstring)."""
  inputs = block.get("inputs", None)
  if not inputs:
    return {DEFAULT_INPUT: make_reader("frames", block, where)}
  out = {}
  for prefix, entry in inputs.items():
    if not isinstance(entry, (dict, ml_collections.ConfigDict)):
      raise DataConfigError(f"{where}.inputs.{prefix}: expected a ConfigDict(reader=..., ...)")
    out[prefix] = make_reader(entry.get("reader", "") or "", _entry_config(block, prefix, entry),
                              f"{where}.inputs.{prefix}")
  for prefix, reader in out.items():  # e.g. token_grid's align_with: the frames input's settings
    if getattr(reader, "seed_of", ""):
      out[prefix] = reader.aligned(out, f"{where}.inputs.{prefix}")
  keys = [k for r in out.values() for k in r.keys]
  if len(set(keys)) != len(keys):
    raise DataConfigError(f"{where}.inputs: readers yield the same batch key twice: {keys}")
  return out


def input_seed(seed: tf.Tensor, prefix: str, reader: Reader | None = None) -> tf.Tensor:
  """The seed input `prefix` reads with: the row's `seed` for the default `video` input (as
  without `inputs`), else a fold-in of its name, so inputs never change each other's draws. A
  reader with `seed_of` (token_grid's align_with) reads with that input's seed instead."""
  prefix = getattr(reader, "seed_of", "") or prefix
  if prefix == DEFAULT_INPUT:
    return seed
  return tf.random.experimental.stateless_fold_in(seed, zlib.crc32(prefix.encode()) & 0x7FFFFFFF)


def stored_features(reader: Reader) -> tuple[str, ...]:
  """The TFDS features `reader` reads: its `stored_features` (a reader of several, e.g. the
  features reader's parts) or its one `feature`."""
  return tuple(getattr(reader, "stored_features", ()) or (reader.feature,))


def encoded_input(reader: Reader, ex: dict):
  """What `reader.read` gets of example `ex`: ex[feature], or the tuple of its stored features."""
  names = stored_features(reader)
  return ex[reader.feature] if names == (reader.feature,) else tuple(ex[n] for n in names)


def input_keys(readers: dict[str, Reader]) -> tuple[str, ...]:
  """Every batch key the readers yield, in order."""
  return tuple(k for r in readers.values() for k in r.keys)


__all__ = ["READERS", "Reader", "encoded_input", "input_keys", "input_seed", "make_reader",
           "make_readers", "stored_features"]

"""Tokenizers and ALPRO's MLM corruption (spec §5.3).

`load_tokenizer('moving_shapes')` gives the WordPiece vocab shipped with vlx (every word of the
synthetic captions and of ALPRO's entity-prompt templates, vlx/data/prompts.py; < 128 ids, so the
demo's text.vocab_size=128 fits); a directory gives a local
BERT tokenizer (e.g. a copy of bert-base-uncased). `mask_tokens` is written with stateless TF ops
so it runs inside tf.data and depends on its seed only.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow as tf
import transformers

VOCAB_DIR = pathlib.Path(__file__).resolve().parent / "vocab"
SHIPPED = {"moving_shapes": VOCAB_DIR / "moving_shapes_vocab.txt"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_tokenizer(name_or_path: str) -> transformers.PreTrainedTokenizerBase:
  """A `BertTokenizerFast` (lower-casing) from a shipped vocab name, a vocab file or a folder."""
  if name_or_path in SHIPPED:
    return transformers.BertTokenizerFast(vocab=str(SHIPPED[name_or_path]), do_lower_case=True)
  path = pathlib.Path(os.path.expanduser(name_or_path or ""))
  if name_or_path and path.is_dir():
    return transformers.BertTokenizerFast.from_pretrained(str(path))
  if name_or_path and path.is_file():
    return transformers.BertTokenizerFast(vocab=str(path), do_lower_case=True)
  raise FileNotFoundError(
      f"tokenizer {name_or_path!r} (config.data.tokenizer) is neither a shipped vocab "
      f"{sorted(SHIPPED)}, a vocab.txt file, nor a folder with a BERT tokenizer (e.g. a local "
      "copy of bert-base-uncased with vocab.txt / tokenizer.json)")


def tokenizer_name(config) -> str:
  """config.data.tokenizer, or the shipped vocab of the training builder when it is ''."""
  name = config.data.tokenizer
  if not name and config.data.train.builder in SHIPPED:
    return config.data.train.builder
  return name


def special_ids(tokenizer) -> tuple[int, ...]:
  """Ids never selected for masking: [CLS], [SEP], [PAD], [UNK], [MASK]."""
  return tuple(sorted(set(tokenizer.all_special_ids)))


def tokenize(tokenizer, texts, max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """`[CLS] ... [SEP] [PAD]...` ids and 0/1 attention mask, int32 [B, max_length]."""
  texts = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
  enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                  return_attention_mask=True, return_token_type_ids=False)
  return (np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32))


def mask_tokens(ids: tf.Tensor, *, seed: tf.Tensor, special_ids: tuple[int, ...],
                vocab_size: int, mask_id: int, probability: float = 0.15,
                mask: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
  """ALPRO/BERT MLM corruption of int ids of any shape; returns (corrupted ids, labels).

  Each non-special, non-padding token (mask == 1) is selected with `probability`; a selected
  token becomes `mask_id` with probability 0.8, a uniform id in [0, vocab_size) with 0.1
  (special ids included, as in ALPRO), and stays unchanged with 0.1. Labels hold the original id at
  selected positions and -100 elsewhere. `seed` is a stateless seed (int32/int64 [2]).
  """
  ids = tf.convert_to_tensor(ids)
  dtype = ids.dtype
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
  shape = tf.shape(ids)
  eligible = tf.logical_not(tf.reduce_any(
      tf.equal(ids[..., None], tf.constant(special_ids, dtype)), axis=-1))
  if mask is not None:
    eligible &= tf.cast(mask, tf.bool)
  selected = eligible & (tf.random.stateless_uniform(shape, seeds[0]) < probability)
  replace = selected & (tf.random.stateless_uniform(shape, seeds[1]) < 0.8)
  randomize = selected & ~replace & (tf.random.stateless_uniform(shape, seeds[2]) < 0.5)
  random_ids = tf.random.stateless_uniform(shape, seeds[3], 0, vocab_size, dtype=tf.int32)
  out = tf.where(replace, tf.cast(mask_id, dtype), ids)
  out = tf.where(randomize, tf.cast(random_ids, dtype), out)
  labels = tf.where(selected, ids, tf.constant(-100, dtype))
  return out, labels


def write_vocab(words, path: str | os.PathLike) -> list[str]:
  """Writes a WordPiece vocab: the special tokens (ids 0-4) then `words` lower-cased, sorted."""
  tokens = list(SPECIAL_TOKENS) + sorted({w.lower() for w in words} - set(SPECIAL_TOKENS))
  pathlib.Path(path).write_text("\n".join(tokens) + "\n")
  return tokens

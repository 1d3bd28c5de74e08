"""Tokenizers and MLM corruption: token masking (ALPRO spec §5.3) or whole words (All-in-one).

`load_tokenizer('moving_shapes')` gives the WordPiece vocab shipped with vlx (every word of the
synthetic captions and of ALPRO's entity-prompt templates, vlx/models/alpro/prompts.py; < 128
ids, so the demo's text.vocab_size=128 fits); a directory gives a local BERT tokenizer (e.g. a
copy of bert-base-uncased); 'words:<vocab.txt>' gives the word-level word2vec tokenizer
(vlx.data.word_tokenizer: no special tokens, so no MLM corruption). `mask_tokens` and `whole_word_mask` are written with stateless TF ops
so they run inside tf.data and depend on their seed only; `mlm_corruption` picks one by
config.data.mlm_masking.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow as tf
import transformers

from vlx.data import clip_text_tokenizer, word_tokenizer
from vlx.data.errors import DataConfigError

VOCAB_DIR = pathlib.Path(__file__).resolve().parent / "vocab"
# 'none': only the special tokens, for tasks whose rows carry no text (action classification
# without a prompt): every text becomes [CLS] [SEP] and the model may ignore it.
SHIPPED = {"moving_shapes": VOCAB_DIR / "moving_shapes_vocab.txt",
           "none": VOCAB_DIR / "no_text_vocab.txt"}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_tokenizer(name_or_path: str) -> transformers.PreTrainedTokenizerBase:
  """A `BertTokenizerFast` (lower-casing) from a shipped vocab name, a vocab file or a folder;
  'words:<vocab.txt>' gives the word-level word2vec tokenizer (vlx.data.word_tokenizer),
  'clip:<bpe vocab>' / 'clip_words:<bpe vocab>' CLIP BPE ids (vlx.data.clip_text_tokenizer)."""
  if name_or_path and name_or_path.startswith(word_tokenizer.PREFIX):
    return word_tokenizer.load(name_or_path)
  if name_or_path and name_or_path.startswith(clip_text_tokenizer.PREFIXES):
    return clip_text_tokenizer.load(name_or_path)
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
      "copy of bert-base-uncased with vocab.txt / tokenizer.json): pass "
      "--config.data.tokenizer=/path/to/bert-base-uncased (nothing is downloaded)")


def tokenizer_name(config) -> str:
  """config.data.tokenizer, or the shipped vocab of the training builder when it is ''."""
  name = config.data.tokenizer
  if not name and config.data.train.builder in SHIPPED:
    return config.data.train.builder
  return name


MLM_MASKINGS = ("token", "whole_word")


def mlm_corruption(config, tokenizer):
  """(ids, mask, seed) -> (mlm ids, labels) by config.data.mlm_masking: 'token' (each token with
  mlm_probability, mask_tokens) or 'whole_word' (whole words, whole_word_mask)."""
  d = config.data
  if getattr(tokenizer, "mask_token_id", None) is None:  # no [MASK] (word tokenizer): no MLM
    return no_corruption
  kw = dict(special_ids=special_ids(tokenizer), vocab_size=len(tokenizer),
            mask_id=tokenizer.mask_token_id, probability=d.mlm_probability)
  masking = d.get("mlm_masking", "token") or "token"
  if masking == "token":
    return lambda ids, mask, seed: mask_tokens(ids, seed=seed, mask=mask, **kw)
  if masking != "whole_word":
    raise DataConfigError(f"config.data.mlm_masking={masking!r}: expected one of {MLM_MASKINGS}")
  if tokenizer_name(config) in SHIPPED:  # demo vocabularies hold whole words only
    subword = np.zeros(len(tokenizer), bool)
  else:
    subword = subword_table(tokenizer)
  bounds = (tokenizer.cls_token_id, tokenizer.sep_token_id)
  return lambda ids, mask, seed: whole_word_mask(ids, seed=seed, subword=subword,
                                                 boundary_ids=bounds, **kw)


def no_corruption(ids, mask, seed) -> tuple[tf.Tensor, tf.Tensor]:
  """The ids unchanged and no MLM targets (labels all -100): tokenizers without a mask token."""
  del mask, seed
  ids = tf.convert_to_tensor(ids)
  return ids, tf.fill(tf.shape(ids), tf.constant(-100, ids.dtype))


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
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
  shape = tf.shape(ids)
  eligible = tf.logical_not(_is_special(ids, special_ids))
  if mask is not None:
    eligible &= tf.cast(mask, tf.bool)
  selected = eligible & (tf.random.stateless_uniform(shape, seeds[0]) < probability)
  return _corrupt(ids, selected, seeds[1:], vocab_size, mask_id)


def _is_special(ids: tf.Tensor, special_ids: tuple[int, ...]) -> tf.Tensor:
  return tf.reduce_any(tf.equal(ids[..., None], tf.constant(special_ids, ids.dtype)), axis=-1)


def _corrupt(ids: tf.Tensor, selected: tf.Tensor, seeds: tf.Tensor, vocab_size: int,
             mask_id: int) -> tuple[tf.Tensor, tf.Tensor]:
  """BERT's 80/10/10 on the selected positions (3 stateless seeds): [MASK] / uniform random id
  / unchanged; labels = the original id there, -100 elsewhere."""
  dtype, shape = ids.dtype, tf.shape(ids)
  replace = selected & (tf.random.stateless_uniform(shape, seeds[0]) < 0.8)
  randomize = selected & ~replace & (tf.random.stateless_uniform(shape, seeds[1]) < 0.5)
  random_ids = tf.random.stateless_uniform(shape, seeds[2], 0, vocab_size, dtype=tf.int32)
  out = tf.where(replace, tf.cast(mask_id, dtype), ids)
  out = tf.where(randomize, tf.cast(random_ids, dtype), out)
  labels = tf.where(selected, ids, tf.constant(-100, dtype))
  return out, labels


def write_vocab(words, path: str | os.PathLike) -> list[str]:
  """Writes a WordPiece vocab: the special tokens (ids 0-4) then `words` lower-cased, sorted."""
  tokens = list(SPECIAL_TOKENS) + sorted({w.lower() for w in words} - set(SPECIAL_TOKENS))
  pathlib.Path(path).write_text("\n".join(tokens) + "\n")
  return tokens


# --- All-in-one's whole-word MLM masking (spec §2, the collator bullet) -------------------------

def subword_table(tokenizer) -> np.ndarray:
  """bool [vocab_size]: True for ids whose token starts with "##" (continuation wordpieces).

  Whole-word masking needs to know, per id, whether it continues the previous word; a lookup
  table keeps that a single `tf.gather` inside tf.data instead of a string op per token.
  """
  vocab = tokenizer.get_vocab()
  table = np.zeros(max(vocab.values()) + 1, bool)
  for token, index in vocab.items():
    table[index] = token.startswith("##")
  if not table.any():
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise DataConfigError(
        f"tokenizer {name!r} has no '##' continuation pieces among its {len(vocab)} tokens: "
        "whole-word masking (config.data.mlm_masking='whole_word') needs a WordPiece vocabulary "
        "such as bert-base-uncased")
  return table


def _mask_count(length: int, probability: float) -> int:
  """Positions to predict per row: max(1, round(probability * L)), L counting padding."""
  return max(1, int(round(length * probability)))


def _words(ids: tf.Tensor, subword: np.ndarray, boundary_ids) -> tuple[tf.Tensor, tf.Tensor]:
  """Word index of every position (-1 on [CLS]/[SEP]) and word lengths, both int32 [B, L].

  Candidates are all positions but the boundary ids; a "##" piece joins the word before it (even
  across a skipped boundary id), except the first candidate, which always starts a word.
  """
  ids = tf.cast(ids, tf.int32)
  length = ids.shape[-1]
  cand = tf.logical_not(tf.reduce_any(
      tf.equal(ids[..., None], tf.constant(boundary_ids, tf.int32)), axis=-1))
  cand_i = tf.cast(cand, tf.int32)
  first = cand & tf.equal(tf.cumsum(cand_i, axis=-1), 1)
  sub = tf.gather(tf.constant(subword, tf.bool), ids)
  start = cand & (tf.logical_not(sub) | first)
  word = tf.where(cand, tf.cumsum(tf.cast(start, tf.int32), axis=-1) - 1, -1)
  lengths = tf.reduce_sum(tf.one_hot(word, length, dtype=tf.int32), axis=-2)  # -1 -> zero row
  return word, lengths


def _word_order(lengths: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """int32 [B, L]: a uniformly random visiting order of each row's words, empty slots last."""
  keys = tf.random.stateless_uniform(tf.shape(lengths), tf.cast(seed, tf.int64))
  keys = tf.where(lengths > 0, keys, 2.0)
  return tf.argsort(keys, axis=-1, stable=True, direction="ASCENDING")


def _take_words(lengths: tf.Tensor, order: tf.Tensor, n: int) -> tf.Tensor:
  """bool [B, L] per word slot: greedy pass in `order`, a word taken whole if it still fits."""
  visit = tf.gather(lengths, order, batch_dims=1)

  def step(carry, size):  # carry = (per-row count taken so far, previous slot's take)
    take = (size > 0) & (carry[0] + size <= n)
    return carry[0] + tf.where(take, size, 0), take

  rows = tf.shape(visit)[:1]
  _, taken = tf.scan(step, tf.transpose(visit),
                     initializer=(tf.zeros(rows, tf.int32), tf.zeros(rows, tf.bool)))
  taken = tf.transpose(taken)  # [B, L] in visiting order
  return tf.gather(taken, tf.argsort(order, axis=-1), batch_dims=1)


def whole_word_mask(ids: tf.Tensor, *, seed: tf.Tensor, subword: np.ndarray, special_ids,
                    boundary_ids, vocab_size: int, mask_id: int,
                    probability: float = 0.15) -> tuple[tf.Tensor, tf.Tensor]:
  """All-in-one's whole-word MLM corruption of int ids [B, L]; returns (corrupted ids, labels).

  n = max(1, round(probability * L)) positions are chosen per row by visiting its words (all
  positions but `boundary_ids` = ([CLS], [SEP]); "##" pieces, per `subword`, join the word
  before) in a uniformly random order and taking each whole if it still fits in n; positions on
  `special_ids` (PAD included) are then dropped. Chosen tokens become `mask_id` (p 0.8), a uniform
  id in [0, vocab_size) (p 0.1) or stay (p 0.1); labels hold the original id there, -100
  elsewhere. Stateless in `seed` (int64 [2]) and graph-safe, so it runs inside tf.data.
  """
  ids = tf.convert_to_tensor(ids)
  if ids.shape.rank != 2 or ids.shape[-1] is None:
    raise ValueError(f"whole_word_mask expects ids [B, L] with a static L, got {ids.shape}")
  n = _mask_count(int(ids.shape[-1]), probability)
  seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
  word, lengths = _words(ids, subword, boundary_ids)
  taken = _take_words(lengths, _word_order(lengths, seeds[0]), n)
  selected = (word >= 0) & tf.gather(taken, tf.maximum(word, 0), batch_dims=1)
  selected &= tf.logical_not(_is_special(ids, special_ids))
  return _corrupt(ids, selected, seeds[1:], vocab_size, mask_id)

"""Word-level tokenizer over a word2vec vocabulary: `config.data.tokenizer = 'words:<vocab.txt>'`.

Text as word vectors (EAO, shared/reference/eao/spec.md section 4, "Text"): a caption is split
with the reference's regex (vlx.data.word2vec.words, case kept), words not in vocab.txt are
dropped (the reference drops words outside the word2vec vocabulary), the first max_length
remaining words are kept. Ids: the word on line i (0-based) of vocab.txt is i + 1 (the first line
wins for a word listed twice), 0 is padding; the mask is 1 on real words. There are no special
tokens (no [CLS]/[SEP]/[MASK]), so MLM corruption is a no-op with this tokenizer
(text_ops.mlm_corruption). The vector of id i is row i - 1 of the vectors.npy written beside
vocab.txt by `python -m vlx.data.word2vec` (a model's table prepends a zero row for padding).

The call interface is the subset of a Hugging Face tokenizer's that text_ops.tokenize uses.
"""
from __future__ import annotations

import os
from typing import Sequence

from vlx.data import word2vec

PREFIX = "words:"


class WordTokenizer:
  """See the module docstring. `len(tok)` = number of words + 1 (the padding id)."""

  pad_token_id = 0
  mask_token_id = None
  cls_token_id = None
  sep_token_id = None
  all_special_ids = (0,)

  def __init__(self, vocab_path: str | os.PathLike):
    self.name_or_path = os.fspath(vocab_path)
    with open(self.name_or_path, encoding="utf-8", newline="") as f:
      lines = f.read().split("\n")
    if lines and lines[-1] == "":
      lines.pop()
    self.size = len(lines)
    self.ids: dict[str, int] = {}
    for i, word in enumerate(lines):
      self.ids.setdefault(word, i + 1)
    self.ids.pop("", None)  # an empty line never matches a word

  def __len__(self) -> int:
    return self.size + 1

  def get_vocab(self) -> dict[str, int]:
    return dict(self.ids)

  def encode_words(self, text) -> list[int]:
    """Ids of the in-vocabulary words of `text`, in order (no truncation)."""
    ids = self.ids
    return [ids[w] for w in word2vec.words(text) if w in ids]

  def __call__(self, texts: Sequence[str] | str, *, max_length: int, padding="max_length",
               truncation: bool = True, return_attention_mask: bool = True,
               return_token_type_ids: bool = False) -> dict[str, list[list[int]]]:
    """{'input_ids', 'attention_mask'}: lists of max_length ints per text (padding to
    max_length, first max_length words)."""
    del truncation, return_token_type_ids
    if padding not in ("max_length", True):
      raise ValueError(f"WordTokenizer pads to max_length only, got padding={padding!r}")
    if isinstance(texts, (str, bytes)):
      texts = [texts]
    ids, masks = [], []
    for text in texts:
      row = self.encode_words(text)[:max_length]
      ids.append(row + [0] * (max_length - len(row)))
      masks.append([1] * len(row) + [0] * (max_length - len(row)))
    out = {"input_ids": ids}
    if return_attention_mask:
      out["attention_mask"] = masks
    return out


def load(spec: str) -> WordTokenizer:
  """'words:<vocab.txt>' or 'words:<folder holding vocab.txt>' -> WordTokenizer."""
  path = os.path.expanduser(spec[len(PREFIX):] if spec.startswith(PREFIX) else spec)
  if os.path.isdir(path):
    path = os.path.join(path, "vocab.txt")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"tokenizer {spec!r} (config.data.tokenizer): {path} not found; write it with "
        "`python -m vlx.data.word2vec --vectors GoogleNews-vectors-negative300.bin --out DIR`")
  return WordTokenizer(path)

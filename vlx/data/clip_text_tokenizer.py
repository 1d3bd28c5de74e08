"""CLIP BPE ids as a pipeline tokenizer: `config.data.tokenizer = 'clip:<bpe vocab>'` or
`'clip_words:<bpe vocab>'`.

<bpe vocab> is CLIP's `bpe_simple_vocab_16e6.txt.gz` (vlx.layers.clip_tokenizer; not bundled).
Rows are what `clip.tokenize(text, context_length=max_length, truncate=True)` gives: SOT, the BPE
ids, EOT (the last id when cut), zero padding; the mask is 1 on SOT ... EOT. `clip_words:` first
joins the caption's regex words with spaces (vlx.data.word2vec.words: EAO's `raw_text`, spec
section 4 "CLIP variant"), `clip:` tokenizes the text as given. CLIP's text transformer is
causal, so a max_length shorter than 77 leaves the features of the kept positions unchanged.
No [MASK] id: no MLM corruption (text_ops.mlm_corruption).
"""
from __future__ import annotations

import os
from typing import Sequence

from vlx.data import word2vec

PREFIXES = ("clip:", "clip_words:")


class ClipTextTokenizer:
  """The HF-like call interface text_ops.tokenize uses, over vlx.layers.clip_tokenizer."""

  mask_token_id = None
  pad_token_id = 0

  def __init__(self, bpe_path: str | os.PathLike, *, join_words: bool):
    from vlx.layers import clip_tokenizer  # pylint: disable=import-outside-toplevel
    self.name_or_path = os.fspath(bpe_path)
    self._tok = clip_tokenizer.ClipTokenizer(bpe_path)
    self.join_words = join_words
    self.all_special_ids = (0, self._tok.sot, self._tok.eot)

  def __len__(self) -> int:
    return self._tok.vocab_size

  def __call__(self, texts: Sequence[str] | str, *, max_length: int, padding="max_length",
               truncation: bool = True, return_attention_mask: bool = True,
               return_token_type_ids: bool = False) -> dict[str, list[list[int]]]:
    del padding, truncation, return_token_type_ids
    texts = [texts] if isinstance(texts, (str, bytes)) else list(texts)
    texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in texts]
    if self.join_words:
      texts = [" ".join(word2vec.words(t)) for t in texts]
    ids = self._tok(texts, context_length=max_length, truncate=True)
    out = {"input_ids": ids.tolist()}
    if return_attention_mask:
      out["attention_mask"] = (ids != 0).astype(int).tolist()
    return out


def load(spec: str) -> ClipTextTokenizer:
  """'clip:<path>' / 'clip_words:<path>' -> ClipTextTokenizer (one-line error without a file)."""
  prefix = next(p for p in PREFIXES if spec.startswith(p))
  path = os.path.expanduser(spec[len(prefix):])
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"tokenizer {spec!r} (config.data.tokenizer): {path or '<empty>'} not found; give CLIP's "
        f"BPE vocabulary, e.g. {prefix}/path/to/bpe_simple_vocab_16e6.txt.gz")
  return ClipTextTokenizer(path, join_words=prefix == "clip_words:")

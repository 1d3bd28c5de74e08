"""CLIP's byte-level BPE tokenizer (what `clip.tokenize` produces) on the `tokenizers` library.

The vocabulary is the user's `bpe_simple_vocab_16e6.txt.gz` (shipped inside OpenAI's `clip` and
open_clip's packages; vlx does not bundle it): a header line, then merges. The id table is built
the way CLIP defines it: the 256 byte symbols, the same with the end-of-word suffix '</w>', one
entry per merge (the first 49152 - 256 - 2 merges), then <|startoftext|> and <|endoftext|>
(ids 49406 / 49407 at release size). Text is NFC-normalised, whitespace-collapsed and lower-cased,
split with CLIP's pattern (contractions, letter runs, single digits, other symbol runs) and
byte-level encoded. CLIP additionally runs ftfy.fix_text and html.unescape: `tokenize` applies
html.unescape; ftfy (not a vlx dependency) only changes mis-encoded text ("mojibake").
Checked against open_clip's SimpleTokenizer on the real vocabulary (see tests/test_clip.py).
"""
from __future__ import annotations

import gzip
import html
import os
from collections.abc import Sequence

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
SPLIT = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
         r"""[^\s\p{L}\p{N}]+""")
RELEASE_MERGES = 49152 - 256 - 2


def byte_symbols() -> list[str]:
  """The 256 printable stand-ins of the byte-level BPE (GPT-2's byte -> unicode table), in CLIP's
  vocabulary order: printable Latin-1 bytes as themselves, the others shifted past U+0100."""
  keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return [table[b] for b in keep] + [table[b] for b in range(256) if b not in keep]


class ClipTokenizer:
  """texts -> int32 ids [N, context_length]: SOT, BPE tokens, EOT, zero padding."""

  def __init__(self, bpe_path: str | os.PathLike, *, num_merges: int = RELEASE_MERGES):
    path = os.fspath(bpe_path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"CLIP BPE vocabulary not found: {path} (bpe_simple_vocab_16e6.txt.gz)")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
      lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:num_merges + 1] if line.strip()]
    if any(len(m) != 2 for m in merges):
      raise ValueError(f"{path}: not a BPE merges file (a merge line is not two symbols)")
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    model = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token=None)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(),
                                           normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    self._tok = tok
    self.sot, self.eot, self.vocab_size = vocab[SOT], vocab[EOT], len(vocab)

  def encode(self, text: str) -> list[int]:
    """BPE ids of one text, without SOT / EOT."""
    return self._tok.encode(html.unescape(html.unescape(text)).strip(),
                            add_special_tokens=False).ids

  def __call__(self, texts: str | Sequence[str], context_length: int = 77,
               truncate: bool = True) -> np.ndarray:
    """clip.tokenize: [SOT] + ids + [EOT], zero-padded; too long -> cut to `context_length` with
    EOT as the last id (`truncate`) or a ValueError."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = np.zeros((len(texts), context_length), np.int32)
    for i, text in enumerate(texts):
      ids = [self.sot] + self.encode(text) + [self.eot]
      if len(ids) > context_length:
        if not truncate:
          raise ValueError(f"text {i} has {len(ids)} tokens; the context length is "
                           f"{context_length} (pass truncate=True)")
        ids = ids[:context_length]
        ids[-1] = self.eot
      out[i, :len(ids)] = ids
    return out

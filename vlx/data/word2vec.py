"""word2vec vectors (e.g. GoogleNews-vectors-negative300.bin) -> vocab.txt + vectors.npy.

EAO (shared/reference/eao/spec.md section 4, "Text") embeds a caption as the word2vec vectors
of its words: `words(caption)` = re.findall(r"[\\w']+", caption) with the case kept, words outside
the vectors' vocabulary dropped, the first max_words kept. The reference loads the 3.6 GB file
with gensim; here it is streamed once into two plain files a data pipeline and a model can read:

  DIR/vocab.txt    one word per line ('\\n'-separated), in the vectors file's order
  DIR/vectors.npy  float32 [V, D]: row i is the vector of line i

Contract with the tokenizer and the model: the `words:<DIR/vocab.txt>` tokenizer
(vlx.data.word_tokenizer) gives the word on line i (0-based) the id i + 1 and uses 0 for
padding, so the model's frozen table is `concat([zeros[1, D], vectors.npy])` and the vector of
id i is row i - 1 of vectors.npy. A word listed twice keeps its first line (as gensim does).

File formats (gzip accepted for both): binary = a header line "V D\\n", then per word the word's
UTF-8 bytes, a space and D little-endian float32 (optionally followed by "\\n"); text = the same
header, then one line per word "word x1 ... xD". The file is read in blocks and the vectors go
to a temporary raw file, so memory stays at one block (no 3M Python strings, no [V, D] array).

  python -m vlx.data.word2vec --vectors GoogleNews-vectors-negative300.bin --out DIR \\
      [--max_words N] [--corpus_words FILE]

--max_words keeps the first N words of the file; --corpus_words keeps only the words listed in
FILE (whitespace-separated, e.g. every word of a dataset's captions): a small table with the
same ids semantics. Both files are written atomically (temporary name, then rename).
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import sys
import tempfile
from typing import BinaryIO, Iterable, Iterator

import numpy as np

_WORD = re.compile(r"[\w']+")
BLOCK = 1 << 20


class Word2VecFormatError(ValueError):
  """The vectors file is not a word2vec file or is truncated (one line naming the file)."""


def words(caption) -> list[str]:
  """The reference's word split: runs of word characters and apostrophes, case kept."""
  if isinstance(caption, bytes):
    caption = caption.decode("utf-8", "replace")
  return _WORD.findall(str(caption))


def _open(path: str) -> BinaryIO:
  with open(path, "rb") as f:
    gz = f.read(2) == b"\x1f\x8b"
  return gzip.open(path, "rb") if gz else open(path, "rb")


class _Reader:
  """Block-buffered byte reader: no per-byte Python calls."""

  def __init__(self, f: BinaryIO):
    self.f, self.buf, self.pos = f, b"", 0

  def _fill(self) -> bool:
    more = self.f.read(BLOCK)
    if not more:
      return False
    self.buf = self.buf[self.pos:] + more
    self.pos = 0
    return True

  def until(self, sep: bytes) -> bytes | None:
    """Bytes up to (without) `sep`, consuming it; None at the end of the file."""
    while True:
      i = self.buf.find(sep, self.pos)
      if i >= 0:
        out, self.pos = self.buf[self.pos:i], i + 1
        return out
      if not self._fill():
        rest, self.pos = self.buf[self.pos:], len(self.buf)
        return rest if rest else None

  def take(self, n: int) -> bytes | None:
    while len(self.buf) - self.pos < n:
      if not self._fill():
        return None
    out, self.pos = self.buf[self.pos:self.pos + n], self.pos + n
    return out

  def peek(self, n: int) -> bytes:
    while len(self.buf) - self.pos < n and self._fill():
      pass
    return self.buf[self.pos:self.pos + n]

  def skip_newlines(self) -> None:
    while True:
      while self.pos < len(self.buf) and self.buf[self.pos] in b"\n\r":
        self.pos += 1
      if self.pos < len(self.buf) or not self._fill():
        return


def _header(r: _Reader, path: str) -> tuple[int, int]:
  line = r.until(b"\n")
  parts = (line or b"").split()
  try:
    count, dim = (int(p) for p in parts)
    if count < 0 or dim < 1:
      raise ValueError
  except ValueError:
    raise Word2VecFormatError(
        f"{path}: not a word2vec file: the first line is {(line or b'')[:60]!r}, expected "
        "'<number of words> <dimension>'") from None
  return count, dim


def _is_text(r: _Reader, dim: int) -> bool:
  """Whether the record after the header is a text line "word x1 ... xD" (a binary record's
  float32 bytes practically never parse as D numbers)."""
  head = r.peek(BLOCK)
  end = head.find(b"\n")
  parts = (head[:end] if end >= 0 else head).rstrip(b"\r ").split(b" ")
  if len(parts) != dim + 1:
    return False
  try:
    [float(p) for p in parts[1:]]
  except ValueError:
    return False
  return True


def iter_vectors(path: str | os.PathLike, fmt: str = "auto"
                 ) -> Iterator[tuple[int, int, str, np.ndarray]]:
  """(count, dim, word, float32 [dim] vector) per word of the file in order (fmt 'auto' |
  'binary' | 'text'); Word2VecFormatError on a wrong format or a truncated file."""
  path = os.fspath(path)
  if fmt not in ("auto", "binary", "text"):
    raise ValueError(f"fmt={fmt!r}: expected 'auto', 'binary' or 'text'")
  with _open(path) as f:
    r = _Reader(f)
    try:
      count, dim = _header(r, path)
      text = fmt == "text" or (fmt == "auto" and _is_text(r, dim))
      for i in range(count):
        yield count, dim, *(_text_record(r, dim, path, i, count) if text
                            else _binary_record(r, dim, path, i, count))
    except (OSError, EOFError) as e:  # e.g. a gzip stream cut short
      raise Word2VecFormatError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def _truncated(path: str, i: int, count: int, word: str = "") -> Word2VecFormatError:
  after = f" (after {word!r})" if word else ""
  return Word2VecFormatError(f"{path}: truncated or not a word2vec file: word {i + 1} of {count}"
                             f"{after} is incomplete")


def _binary_record(r: _Reader, dim: int, path: str, i: int, count: int
                   ) -> tuple[str, np.ndarray]:
  r.skip_newlines()
  raw = r.until(b" ")
  if raw is None:
    raise _truncated(path, i, count)
  word = raw.replace(b"\n", b"").decode("utf-8", "replace")  # gensim drops '\n' bytes too
  data = r.take(4 * dim)
  if data is None:
    raise _truncated(path, i, count, word)
  return word, np.frombuffer(data, "<f4").astype(np.float32)


def _text_record(r: _Reader, dim: int, path: str, i: int, count: int
                 ) -> tuple[str, np.ndarray]:
  line = r.until(b"\n")
  parts = (line or b"").rstrip().split(b" ")
  if line is None or len(parts) != dim + 1:
    raise _truncated(path, i, count, parts[0].decode("utf-8", "replace") if line else "")
  try:
    vec = np.array([float(p) for p in parts[1:]], np.float32)
  except ValueError:
    raise Word2VecFormatError(f"{path}: word {i + 1} of {count}: the values are not "
                              "numbers") from None
  return parts[0].decode("utf-8", "replace"), vec


def _write_npy(raw_path: str, rows: int, dim: int, out_path: str) -> None:
  """A .npy [rows, dim] float32 from a raw little-endian float32 file, copied in blocks."""
  header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
  with open(out_path, "wb") as out, open(raw_path, "rb") as src:
    np.lib.format.write_array_header_1_0(out, header)
    while block := src.read(BLOCK * 16):
      out.write(block)


def convert(vectors: str | os.PathLike, out_dir: str | os.PathLike, *, max_words: int = 0,
            corpus_words: Iterable[str] | None = None, fmt: str = "auto") -> tuple[int, int]:
  """Writes out_dir/vocab.txt and out_dir/vectors.npy (see the module docstring) atomically;
  returns (words written, dim)."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  keep = set(corpus_words) if corpus_words is not None else None
  rows, dim = 0, 0
  with tempfile.TemporaryDirectory(dir=out_dir, prefix=".word2vec-") as tmp:
    raw_path, vocab_tmp = os.path.join(tmp, "vectors.raw"), os.path.join(tmp, "vocab.txt")
    with open(raw_path, "wb") as raw, open(vocab_tmp, "w", encoding="utf-8", newline="") as vocab:
      for i, (_, dim, word, vec) in enumerate(iter_vectors(vectors, fmt)):
        if max_words and i >= max_words:
          break
        if "\n" in word:
          word = word.replace("\n", " ")  # a line per word; such a word never matches a caption
        if keep is not None and word not in keep:
          continue
        vocab.write(word + "\n")
        raw.write(vec.astype("<f4").tobytes())
        rows += 1
    if not dim:  # an empty file: the header's dim
      with _open(os.fspath(vectors)) as f:
        _, dim = _header(_Reader(f), os.fspath(vectors))
    npy_tmp = os.path.join(tmp, "vectors.npy")
    _write_npy(raw_path, rows, dim, npy_tmp)
    os.replace(npy_tmp, os.path.join(out_dir, "vectors.npy"))
    os.replace(vocab_tmp, os.path.join(out_dir, "vocab.txt"))
  return rows, dim


def _corpus(path: str) -> set[str]:
  with open(path, encoding="utf-8") as f:
    return {w for line in f for w in line.split()}


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m vlx.data.word2vec", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--vectors", required=True, help="word2vec .bin / .txt (optionally gzipped)")
  p.add_argument("--out", required=True, help="folder for vocab.txt and vectors.npy")
  p.add_argument("--max_words", type=int, default=0, help="keep the first N words (0 = all)")
  p.add_argument("--corpus_words", default="",
                 help="a text file of words (whitespace-separated): keep only these")
  p.add_argument("--format", default="auto", choices=("auto", "binary", "text"))
  a = p.parse_args(argv)
  try:
    if not os.path.isfile(a.vectors):
      raise Word2VecFormatError(f"--vectors={a.vectors}: no such file")
    if a.corpus_words and not os.path.isfile(a.corpus_words):
      raise Word2VecFormatError(f"--corpus_words={a.corpus_words}: no such file")
    rows, dim = convert(a.vectors, a.out, max_words=max(a.max_words, 0), fmt=a.format,
                        corpus_words=_corpus(a.corpus_words) if a.corpus_words else None)
  except Word2VecFormatError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  vocab = os.path.join(a.out, "vocab.txt")
  print(f"wrote {rows} words x {dim} to {vocab} and {os.path.join(a.out, 'vectors.npy')} "
        f"(tokenizer: words:{vocab})")
  return 0


if __name__ == "__main__":
  sys.exit(main())

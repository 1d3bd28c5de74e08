"""word2vec reader (binary / text / gzip, truncated and wrong files), the reference's word split,
and the `words:<vocab.txt>` tokenizer through text_ops and the retrieval task's text step."""
from __future__ import annotations

import gzip
import pathlib
import types

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from vlx.data import tasks, text_ops, word2vec, word_tokenizer

WORDS = ["the", "Cat", "cat's", "sat", "the", "mat", "New_York"]  # "the" twice: first line wins
VECS = np.arange(len(WORDS) * 3, dtype=np.float32).reshape(-1, 3) / 7 - 1


def write_bin(path: pathlib.Path, *, newline: bool = True, gz: bool = False,
              cut: int = 0) -> pathlib.Path:
  data = f"{len(WORDS)} 3\n".encode()
  for w, v in zip(WORDS, VECS):
    data += w.encode() + b" " + v.astype("<f4").tobytes() + (b"\n" if newline else b"")
  data = data[:len(data) - cut]
  path.write_bytes(gzip.compress(data) if gz else data)
  return path


def write_txt(path: pathlib.Path) -> pathlib.Path:
  lines = [f"{len(WORDS)} 3"] + [w + " " + " ".join(repr(float(x)) for x in v)
                                 for w, v in zip(WORDS, VECS)]
  path.write_text("\n".join(lines) + "\n")
  return path


def read_out(out: pathlib.Path):
  return out.joinpath("vocab.txt").read_text().split("\n")[:-1], np.load(out / "vectors.npy")


@pytest.mark.parametrize("kind", ["bin", "bin_no_newline", "bin_gz", "txt"])
def test_convert_formats(tmp_path, kind):
  src = (write_txt(tmp_path / "v.txt") if kind == "txt" else
         write_bin(tmp_path / "v.bin", newline=kind != "bin_no_newline", gz=kind == "bin_gz"))
  assert word2vec.main(["--vectors", str(src), "--out", str(tmp_path / "out")]) == 0
  vocab, vecs = read_out(tmp_path / "out")
  assert vocab == WORDS
  assert vecs.dtype == np.float32 and vecs.shape == (len(WORDS), 3)
  np.testing.assert_array_equal(vecs, VECS)
  assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_max_words_and_corpus(tmp_path):
  src = write_bin(tmp_path / "v.bin")
  word2vec.convert(src, tmp_path / "a", max_words=3)
  vocab, vecs = read_out(tmp_path / "a")
  assert vocab == WORDS[:3]
  np.testing.assert_array_equal(vecs, VECS[:3])
  (tmp_path / "corpus.txt").write_text("mat Cat\nunknown the\n")
  assert word2vec.main(["--vectors", str(src), "--out", str(tmp_path / "b"),
                        "--corpus_words", str(tmp_path / "corpus.txt")]) == 0
  vocab, vecs = read_out(tmp_path / "b")
  assert vocab == ["the", "Cat", "the", "mat"]
  np.testing.assert_array_equal(vecs, VECS[[0, 1, 4, 5]])


@pytest.mark.parametrize("case", ["truncated", "cut_word", "garbage", "missing"])
def test_bad_files_exit_2(tmp_path, capsys, case):
  if case == "truncated":
    src = write_bin(tmp_path / "v.bin", cut=5)
  elif case == "cut_word":
    src = write_bin(tmp_path / "v.bin", newline=False, cut=12 + 9)  # inside "New_York"
  elif case == "garbage":
    src = tmp_path / "v.bin"
    src.write_text("<html>not vectors</html>\n")
  else:
    src = tmp_path / "absent.bin"
  assert word2vec.main(["--vectors", str(src), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and str(src) in err
  assert not (tmp_path / "out" / "vocab.txt").exists()


def test_words_split():
  assert word2vec.words("A man's dog, jumping-over 3 logs!") == [
      "A", "man's", "dog", "jumping", "over", "3", "logs"]
  assert word2vec.words(b"caf\xc3\xa9 ok") == ["café", "ok"]
  assert word2vec.words("") == []


@pytest.fixture()
def vocab(tmp_path) -> pathlib.Path:
  word2vec.convert(write_bin(tmp_path / "v.bin"), tmp_path / "w")
  return tmp_path / "w" / "vocab.txt"


def test_word_tokenizer(vocab):
  tok = text_ops.load_tokenizer(f"words:{vocab}")
  assert isinstance(tok, word_tokenizer.WordTokenizer)
  assert len(tok) == len(WORDS) + 1
  assert text_ops.load_tokenizer(f"words:{vocab.parent}").get_vocab() == tok.get_vocab()
  ids, mask = text_ops.tokenize(
      tok, [b"the Cat sat on the mat", "cat's owner", "", "the mat the mat the"], 4)
  # "on", "owner" are out of vocabulary: dropped; "the" -> its first line (id 1); case kept
  np.testing.assert_array_equal(ids, [[1, 2, 4, 1], [3, 0, 0, 0], [0, 0, 0, 0], [1, 6, 1, 6]])
  np.testing.assert_array_equal(mask, ids > 0)
  assert ids.dtype == mask.dtype == np.int32
  with pytest.raises(FileNotFoundError, match="config.data.tokenizer"):
    text_ops.load_tokenizer(f"words:{vocab.parent / 'nope.txt'}")


def test_retrieval_text_step_without_mlm(vocab):
  """The training stream's text step (TrainText + Retrieval.text) with the word tokenizer: MLM
  corruption needs a [MASK] id, which it has not: ids pass unchanged, no MLM targets."""
  tok = text_ops.load_tokenizer(f"words:{vocab}")
  config = ml_collections.ConfigDict(dict(data=dict(mlm_probability=0.15,
                                                    mlm_masking="token")))
  text = tasks.TrainText(tokenizer=tok, length=5, local_batch=2,
                         corrupt=text_ops.mlm_corruption(config, tok))
  ctx = types.SimpleNamespace(seed=0, process_count=1, process_index=0)
  batch = dict(caption=tf.constant(["the Cat sat", "mat New_York x"]),
               step=tf.constant([3, 3], tf.int64))
  out = tf.function(lambda b: tasks.TASK["retrieval"].text(b, ctx, text))(batch)
  np.testing.assert_array_equal(out["text_ids"], [[1, 2, 4, 0, 0], [6, 7, 0, 0, 0]])
  np.testing.assert_array_equal(out["mlm_text_ids"], out["text_ids"])
  assert (out["mlm_labels"].numpy() == -100).all()


def test_clip_tokenizer_forms(tmp_path):
  """'clip:<bpe>' = clip.tokenize of the text; 'clip_words:<bpe>' of its regex words joined
  (EAO's raw_text); SOT ... EOT, zero padded, mask on SOT..EOT; no MLM corruption."""
  bpe = tmp_path / "bpe.txt"   # ids: !</w>=256 the</w>=513 cat</w>=515, SOT 516, EOT 517
  bpe.write_text("#version: 0.2\nt h\nth e</w>\nc a\nca t</w>\n")
  plain = text_ops.load_tokenizer(f"clip:{bpe}")
  words = text_ops.load_tokenizer(f"clip_words:{bpe}")
  ids, mask = text_ops.tokenize(plain, ["The CAT!", "the cat the cat"], 5)
  np.testing.assert_array_equal(ids, [[516, 513, 515, 256, 517], [516, 513, 515, 513, 517]])
  np.testing.assert_array_equal(mask, ids > 0)
  ids, _ = text_ops.tokenize(words, ["The CAT!"], 6)
  np.testing.assert_array_equal(ids, [[516, 513, 515, 517, 0, 0]])   # '!' is not a word
  config = ml_collections.ConfigDict(dict(data=dict(mlm_probability=0.15, mlm_masking="token")))
  out, labels = text_ops.mlm_corruption(config, plain)(tf.constant(ids), None, None)
  np.testing.assert_array_equal(out, ids)
  assert (labels.numpy() == -100).all()
  with pytest.raises(FileNotFoundError, match="config.data.tokenizer"):
    text_ops.load_tokenizer(f"clip:{tmp_path / 'none.txt.gz'}")

"""All-in-one's whole-word MLM masking (`text_ops.whole_word_mask`, spec §2 collator bullet)."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import transformers

from vlx.data import text_ops

WORDS = ["a", "red", "blue", "ball", "box", "moves", "left", "right", "up", "down"]
PIECES = ["##s", "##ing", "##ed", "##ly"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  """A tiny WordPiece tokenizer with "##" pieces (the shipped moving_shapes vocab has none)."""
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  text_ops.write_vocab(WORDS + PIECES, path)
  return transformers.BertTokenizerFast(vocab=str(path), do_lower_case=True)


@pytest.fixture(scope="module")
def kw(tok):
  return dict(subword=text_ops.subword_table(tok), special_ids=text_ops.special_ids(tok),
              boundary_ids=(tok.cls_token_id, tok.sep_token_id), vocab_size=len(tok),
              mask_id=tok.mask_token_id)


def ids_of(tok, tokens):
  return [tok.convert_tokens_to_ids(t) for t in tokens]


def run(ids, seed=(1, 2), **kw):
  out, labels = text_ops.whole_word_mask(tf.constant(ids, tf.int32),
                                         seed=tf.constant(seed, tf.int64), **kw)
  return out.numpy(), labels.numpy()


def random_rows(tok, rng, rows, length, specials_inside=False):
  """[CLS] words (some with "##" pieces) [SEP] [PAD]...; optionally specials mid-row."""
  pool = WORDS + PIECES + (["[UNK]", "[MASK]", "[PAD]", "[SEP]", "[CLS]"] if specials_inside
                           else [])
  out = []
  for _ in range(rows):
    body = [] if specials_inside else [str(rng.choice(WORDS))]
    body += [str(t) for t in rng.choice(pool, rng.integers(1, length - 2 - len(body) + 1))]
    row = ["[CLS]"] + body + ["[SEP]"]
    out.append(ids_of(tok, row + ["[PAD]"] * (length - len(row))))
  return np.asarray(out, np.int32)


def py_words(tokens):
  """Reference grouping: words as lists of positions, "##" joining the previous word."""
  words = []
  for i, t in enumerate(tokens):
    if t in ("[CLS]", "[SEP]"):
      continue
    if words and t.startswith("##"):
      words[-1].append(i)
    else:
      words.append([i])
  return words


def test_subword_table(tok):
  table = text_ops.subword_table(tok)
  assert table.shape == (len(tok),)
  assert sorted(np.flatnonzero(table)) == sorted(ids_of(tok, PIECES))
  with pytest.raises(ValueError, match="no '##' continuation pieces"):
    text_ops.subword_table(text_ops.load_tokenizer("moving_shapes"))


def test_words_are_masked_whole_and_never_specials(tok, kw):
  rng = np.random.default_rng(0)
  ids = random_rows(tok, rng, 300, 40)
  out, labels = run(ids, **kw)
  chosen = labels != -100
  assert chosen.any()
  np.testing.assert_array_equal(labels[chosen], ids[chosen])
  np.testing.assert_array_equal(out[~chosen], ids[~chosen])
  assert not np.isin(ids[chosen], kw["special_ids"]).any()
  for row, sel in zip(ids, chosen):
    for word in py_words(tok.convert_ids_to_tokens(row.tolist())):
      assert len(set(sel[word].tolist())) == 1, (row, word, sel)
  # Specials mid-row (UNK/MASK/PAD/SEP/CLS) are never selected either.
  ids = random_rows(tok, rng, 300, 40, specials_inside=True)
  _, labels = run(ids, **kw)
  assert not np.isin(ids[labels != -100], kw["special_ids"]).any()


def test_exactly_n_positions_on_full_rows(tok, kw):
  rng = np.random.default_rng(1)
  ids = np.asarray([ids_of(tok, ["[CLS]"] + list(rng.choice(WORDS, 38)) + ["[SEP]"])
                    for _ in range(200)], np.int32)
  _, labels = run(ids, **kw)
  assert text_ops._mask_count(40, 0.15) == 6
  np.testing.assert_array_equal((labels != -100).sum(-1), np.full(200, 6))


def test_word_that_does_not_fit_is_skipped(tok, kw):
  # n = round(0.3 * 7) = 2; words of lengths 3, 1, 1: the 3-piece word never fits.
  row = ids_of(tok, ["[CLS]", "ball", "##ing", "##ly", "red", "box", "[SEP]"])
  assert tok.unk_token_id not in row
  ids = np.asarray([row] * 64, np.int32)
  _, labels = run(ids, probability=0.3, **kw)
  expected = np.asarray([-100, -100, -100, -100, row[4], row[5], -100])
  np.testing.assert_array_equal(labels, np.broadcast_to(expected, labels.shape))
  # The long word was visited before both short ones in some rows, so the skip path ran.
  seeds = tf.random.experimental.stateless_split(tf.constant([1, 2], tf.int64), 4)
  order = text_ops._word_order(tf.constant([[3, 1, 1, 0, 0, 0, 0]] * 64), seeds[0]).numpy()
  assert (order[:, 0] == 0).sum() >= 5


def test_uniform_words_and_80_10_10(tok, kw):
  words = ids_of(tok, WORDS)  # 10 single-piece words, n = round(0.25 * 12) = 3
  ids = np.asarray([ids_of(tok, ["[CLS]"]) + words + ids_of(tok, ["[SEP]"])] * 4000, np.int32)
  out, labels = run(ids, seed=(7, 9), probability=0.25, **kw)
  chosen = labels != -100
  assert (chosen.sum(-1) == 3).all()
  counts = chosen[:, 1:11].sum(0)
  expected = 4000 * 3 / 10
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 30.0, counts  # 9 dof: p < 1e-3
  v = kw["vocab_size"]
  new, old = out[chosen], ids[chosen]
  assert ((new >= 0) & (new < v)).all()
  masked = (new == kw["mask_id"]).mean()
  same = (new == old).mean()
  assert abs(masked - (0.8 + 0.1 / v)) < 0.02
  assert abs(same - (0.1 + 0.1 / v)) < 0.015
  assert abs((1 - masked - same) - 0.1 * (v - 2) / v) < 0.015


def test_deterministic_in_seed(tok, kw):
  ids = random_rows(tok, np.random.default_rng(2), 32, 40)
  a, b, c = run(ids, seed=(3, 4), **kw), run(ids, seed=(3, 4), **kw), run(ids, seed=(3, 5), **kw)
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert (a[1] != c[1]).any()


def test_runs_in_tf_data_graph_mode(tok, kw):
  ids = random_rows(tok, np.random.default_rng(3), 8, 40)
  seed = tf.constant([5, 6], tf.int64)
  ds = tf.data.Dataset.from_tensor_slices(ids).batch(8).map(
      lambda x: text_ops.whole_word_mask(x, seed=seed, **kw))
  (out, labels), = list(ds.as_numpy_iterator())
  eager = run(ids, seed=(5, 6), **kw)
  np.testing.assert_array_equal(out, eager[0])
  np.testing.assert_array_equal(labels, eager[1])


def test_matches_python_reference(tok, kw):
  """A slow reference of the described algorithm, driven by the op's word order, agrees."""
  rng = np.random.default_rng(4)
  ids = np.concatenate([random_rows(tok, rng, 60, 40), random_rows(tok, rng, 60, 40, True)])
  # A "##" piece as the first candidate starts a word; one after [SEP] joins the word before it.
  first_piece = np.asarray([ids_of(tok, ["[CLS]", "##s", "##ed", "red", "[SEP]", "##ly"]
                                    + ["[PAD]"] * 34)], np.int32)
  ids = np.concatenate([ids, first_piece])
  seed = tf.constant([11, 12], tf.int64)
  _, labels = run(ids, seed=(11, 12), **kw)
  n = text_ops._mask_count(40, 0.15)
  rows = [tok.convert_ids_to_tokens(r.tolist()) for r in ids]
  words = [py_words(t) for t in rows]
  lengths = np.zeros(ids.shape, np.int32)
  for i, ws in enumerate(words):
    lengths[i, :len(ws)] = [len(w) for w in ws]
  order = text_ops._word_order(
      tf.constant(lengths), tf.random.experimental.stateless_split(seed, 4)[0]).numpy()
  special = set(kw["special_ids"])
  for i, (row, ws) in enumerate(zip(ids, words)):
    visit = order[i, :len(ws)].tolist()
    assert sorted(visit) == list(range(len(ws)))
    chosen = []
    for w in visit:
      if len(chosen) >= n:
        break
      if len(chosen) + len(ws[w]) <= n:
        chosen += ws[w]
    expected = np.full(40, -100)
    for p in chosen:
      if int(row[p]) not in special:
        expected[p] = row[p]
    np.testing.assert_array_equal(labels[i], expected, err_msg=str(rows[i]))

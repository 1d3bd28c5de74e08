"""Tokenizer loading and ALPRO's MLM corruption (statistics and invariants)."""
import random

import numpy as np
import pytest
import tensorflow as tf

from configs import alpro_pretrain
from data_builders.moving_shapes import captions as cap
from vlx.data import text_ops
from vlx.models.alpro import prompts


@pytest.fixture(scope="module")
def tok():
  return text_ops.load_tokenizer("moving_shapes")


def test_shipped_vocab_matches_builder_words(tmp_path, tok):
  # the builder's words plus the ALPRO entity-prompt template words (PEM prompts, spec §5.4)
  expected = text_ops.write_vocab(cap.vocabulary() + prompts.template_words(),
                                  tmp_path / "vocab.txt")
  shipped = text_ops.SHIPPED["moving_shapes"].read_text().splitlines()
  assert shipped == expected
  assert shipped[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  assert len(tok) == len(shipped) <= 128
  for preset in ("demo", "tiny"):
    assert len(tok) <= alpro_pretrain.alpro_model(preset).text.vocab_size
  assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id,
          tok.mask_token_id) == (0, 1, 2, 3, 4)


def test_every_generated_text_is_known(tok):
  rng = random.Random(0)
  texts = []
  for _ in range(200):
    a = cap.sample_attributes(rng)
    texts += cap.captions(a) + [q["question"] for q in cap.questions(a)]
    texts += cap.multiple_choice(a, rng)[0]
  ids, mask = text_ops.tokenize(tok, texts, 24)
  assert ids.dtype == np.int32 and ids.shape == (len(texts), 24)
  assert not (ids == tok.unk_token_id).any()
  assert (ids[:, 0] == tok.cls_token_id).all()
  lengths = mask.sum(1)
  assert (ids[np.arange(len(texts)), lengths - 1] == tok.sep_token_id).all()
  assert (ids[mask == 0] == 0).all()


def test_tokenize_truncates_and_pads(tok):
  ids, mask = text_ops.tokenize(tok, ["a small red circle moves left slowly", "red"], 5)
  words = tok.convert_tokens_to_ids(["a", "small", "red"])
  np.testing.assert_array_equal(ids[0], [2] + words + [3])
  np.testing.assert_array_equal(ids[1], [2, tok.convert_tokens_to_ids("red"), 3, 0, 0])
  np.testing.assert_array_equal(mask, [[1] * 5, [1, 1, 1, 0, 0]])


def test_load_tokenizer_from_folder_and_errors(tmp_path):
  text_ops.write_vocab(["hello", "world"], tmp_path / "vocab.txt")
  t = text_ops.load_tokenizer(str(tmp_path))
  assert t("Hello world")["input_ids"] == [2, 5, 6, 3]
  with pytest.raises(FileNotFoundError, match="config.data.tokenizer"):
    text_ops.load_tokenizer(str(tmp_path / "missing"))


def _corrupt(ids, mask, seed, probability=0.15):
  out, labels = text_ops.mask_tokens(ids, seed=seed, mask=mask, special_ids=(0, 1, 2, 3, 4),
                                     vocab_size=100, mask_id=4, probability=probability)
  return out.numpy(), labels.numpy()


def test_mask_tokens_statistics_and_invariants():
  rng = np.random.default_rng(0)
  ids = rng.integers(5, 100, size=(4000, 32)).astype(np.int32)
  ids[:, 0], ids[:, 20] = 2, 3
  ids[:, 21:] = 0
  mask = (ids != 0).astype(np.int32)
  out, labels = _corrupt(ids, mask, [7, 11])
  selected = labels != -100
  eligible = (ids > 4)
  # Never on special tokens or padding; labels are the original ids.
  assert not selected[~eligible].any()
  np.testing.assert_array_equal(labels[selected], ids[selected])
  np.testing.assert_array_equal(out[~selected], ids[~selected])
  n = selected.sum()
  assert selected.sum() / eligible.sum() == pytest.approx(0.15, abs=0.005)
  masked = (out == 4) & selected
  unchanged = (out == ids) & selected
  randomized = selected & ~masked & ~unchanged
  assert masked.sum() / n == pytest.approx(0.8, abs=0.01)
  # 10% keep their id, plus the random replacements that happen to draw the same id (1/100).
  assert unchanged.sum() / n == pytest.approx(0.1 + 0.1 / 100, abs=0.01)
  assert randomized.sum() / n == pytest.approx(0.1 * 99 / 100, abs=0.01)
  assert out[randomized].min() >= 0 and out[randomized].max() < 100
  # Deterministic per seed; another seed masks elsewhere.
  again, _ = _corrupt(ids, mask, [7, 11])
  other, _ = _corrupt(ids, mask, [7, 12])
  np.testing.assert_array_equal(out, again)
  assert (other != out).mean() > 0.05


def test_mask_tokens_runs_in_tf_data():
  ids = np.tile(np.array([[2, 10, 11, 12, 3, 0]], np.int32), (8, 1))
  ds = tf.data.Dataset.from_tensor_slices(ids).batch(4).map(
      lambda x: text_ops.mask_tokens(x, seed=tf.constant([1, 2], tf.int64), special_ids=(0, 2, 3),
                                     vocab_size=20, mask_id=4, probability=1.0))
  for out, labels in ds:
    assert (labels.numpy()[:, 1:4] == [10, 11, 12]).all()
    assert (labels.numpy()[:, [0, 4, 5]] == -100).all()

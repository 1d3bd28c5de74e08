"""QA accuracy (hand-computed, reference rounding and per-type ratios) and the QA eval driver."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fake_family
from configs import common
from vlx import sharding as shd
from vlx.data import pipeline, qa
from vlx.evals import qa as qa_eval

VOCAB = {"dog": 0, "cat": 1, "two": 2, "man": 3}


def test_hand_computed_accuracy_types_and_ratios():
  # q: 0 what ok, 1 what wrong, 2 what ok, 3 who wrong (gt outside vocab), 4 how ok, 5 who ok
  pred = [0, 1, 1, 3, 2, 3]
  gt = ["dog", "dog", "cat", "woman", "two", "man"]
  types_ = ["what", "what", "what", "who", "how", "who"]
  m = qa_eval.qa_metrics(pred, gt, types_, VOCAB)
  assert m["acc"] == 66.67 and m["num_questions"] == 6          # 4/6, rounded to 2 decimals
  assert (m["what_acc"], m["who_acc"], m["how_acc"]) == (66.67, 50.0, 100.0)
  assert (m["what_ratio"], m["who_ratio"], m["how_ratio"]) == (50.0, 33.33, 16.67)
  assert (m["where_acc"], m["where_ratio"], m["when_acc"]) == (0.0, 0.0, 0.0)  # no questions
  # the same with label ids (-1 = outside the vocab) and type indices (-1 = unlisted type)
  labels = qa.answer_labels(gt, VOCAB)
  np.testing.assert_array_equal(labels, [0, 0, 1, -1, 2, 3])
  assert qa_eval.qa_metrics(pred, labels, [0, 0, 0, 1, 2, 1]) == m
  # a prediction of class -1 never matches an out-of-vocabulary ground truth
  assert qa_eval.qa_metrics([-1], [-1], [0])["acc"] == 0.0
  # All-in-one protocol: the out-of-vocabulary question (3, 'who') leaves the denominators.
  a = qa_eval.qa_metrics(pred, labels, [0, 0, 0, 1, 2, 1], exclude_oov=True)
  assert (a["acc"], a["what_acc"], a["who_acc"], a["how_acc"]) == (80.0, 66.67, 100.0, 100.0)
  assert (a["who_ratio"], a["num_questions"]) == (m["who_ratio"], 6)
  assert qa_eval.qa_metrics([-1], [-1], [0], exclude_oov=True)["acc"] == 0.0  # nothing scored


def test_unlisted_types_count_overall_only_and_custom_type_names():
  m = qa_eval.qa_metrics([1, 1, 0], [1, 0, 0], ["colour", "which", "count"],
                         type_names=("colour", "count"))
  assert m["acc"] == 66.67 and (m["colour_acc"], m["count_acc"]) == (100.0, 100.0)
  assert (m["colour_ratio"], m["count_ratio"]) == (33.33, 33.33)
  assert "what_acc" not in m


def test_rejects_bad_input():
  with pytest.raises(ValueError, match="3 predictions but 2"):
    qa_eval.qa_metrics([0, 1, 2], [0, 1], [0, 0, 0])
  with pytest.raises(ValueError, match="vocabulary"):
    qa_eval.qa_metrics([0], ["dog"], [0])
  with pytest.raises(ValueError, match="no questions"):
    qa_eval.qa_metrics([], [], [])


class Echo(nnx.Module):
  """Predicts class text_ids[:, 1] (so the test knows every prediction)."""

  def __init__(self, num_classes: int):
    self.scale = nnx.Param(jnp.ones((), jnp.float32))
    self.num_classes = num_classes


def _echo_logits(model: Echo, batch: dict) -> jax.Array:
  return jax.nn.one_hot(batch["text_ids"][:, 1], model.num_classes) * model.scale[...]


ECHO = fake_family.scorer_family(qa_logits=_echo_logits)


def _fake_batches(preds, labels, qtypes):
  """A make_eval_batches stand-in: 8-row batches, the last one padded with garbage rows."""

  def make(eval_cfg, config, *, batch_size):
    n = len(preds)
    for s in range(0, n, batch_size):
      rows = slice(s, min(s + batch_size, n))
      k = rows.stop - rows.start
      pad = batch_size - k
      ids = np.zeros((batch_size, 4), np.int32)
      ids[:k, 1] = preds[rows]
      ids[k:, 1] = 1                                    # padding rows: always "correct" garbage
      lab = np.concatenate([labels[rows], np.ones(pad, np.int32)])
      yield dict(video=np.zeros((batch_size, 2, 4, 4, 3), np.float32), text_ids=ids,
                 text_mask=np.ones_like(ids), label=lab.astype(np.int32),
                 qtype=np.concatenate([qtypes[rows], np.zeros(pad, np.int32)]).astype(np.int32),
                 video_index=np.arange(s, s + batch_size, dtype=np.int32) // 2,
                 example_index=np.where(np.arange(batch_size) < k,
                                        np.arange(s, s + batch_size), -1).astype(np.int32),
                 valid=np.arange(batch_size) < k)
  return make


def test_run_qa_eval_drops_padding_on_an_8_device_mesh():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  rs = np.random.RandomState(0)
  preds = rs.randint(0, 5, 21)
  labels = np.where(rs.rand(21) < 0.5, preds, rs.randint(-1, 5, 21)).astype(np.int32)
  qtypes = rs.randint(-1, 5, 21).astype(np.int32)
  ev = common.qa_eval(batch_size=8)
  with jax.set_mesh(mesh):
    m = qa_eval.run_qa_eval(Echo(6), ECHO, ev, c, mesh,
                            make_eval_batches=_fake_batches(preds, labels, qtypes))
  expect = qa_eval.qa_metrics(preds, labels, qtypes)
  assert m["num_questions"] == 21 and m["num_oov"] == int((labels < 0).sum())
  assert {k: m[k] for k in expect} == expect
  hits = (preds == labels) & (labels >= 0)
  assert m["acc"] == round(100 * hits.mean(), 2)


def test_run_qa_eval_rejects_labels_past_the_classifier():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  make = _fake_batches(np.zeros(8, int), np.full(8, 7, np.int32), np.zeros(8, np.int32))
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="num_labels"):
    qa_eval.run_qa_eval(Echo(6), ECHO, common.qa_eval(batch_size=8), c, mesh,
                        make_eval_batches=make)


def test_run_qa_eval_on_tiny_moving_shapes_majority_baseline(tmp_path_factory):
  """The real pipeline end to end: a model that always answers the top train answer."""
  data_dir = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"
  pipeline.get_builder("moving_shapes", "tiny", str(data_dir))
  c = fake_family.toy_config()
  c.data.update(data_dir=str(data_dir), tokenizer="moving_shapes")
  c.data.train.update(builder_config="tiny", task="qa")
  vocab = qa.resolve_answer_vocab(c)
  always_top = fake_family.scorer_family(qa_logits=lambda m, b: jnp.broadcast_to(
      jax.nn.one_hot(0, len(vocab)) * m.scale[...], (b["text_ids"].shape[0], len(vocab))))
  ev = common.qa_eval(builder_config="tiny", num_frames=2, resolution=4, max_text_len=16,
                      batch_size=24, qtype_source="feature",
                      qtypes=("colour", "shape", "direction", "count"))
  mesh = shd.make_mesh(c.mesh)
  with jax.set_mesh(mesh):
    m = qa_eval.run_qa_eval(Echo(len(vocab)), always_top, ev, c, mesh)
  b = pipeline.get_builder("moving_shapes", "tiny", str(data_dir))
  test = qa.read_split_texts(b, "test", "qa")
  top = min(vocab, key=vocab.get)
  answers = [a for clip in test for a in clip["answer"]]
  kinds = [t for clip in test for t in clip["qtype"]]
  assert m["num_questions"] == 64 and m["count_ratio"] == 25.0
  assert m["acc"] == round(100 * np.mean([a == top for a in answers]), 2)
  count_hits = [a == top for a, t in zip(answers, kinds) if t == "count"]
  assert top in ("one", "two") and m["count_acc"] == round(100 * np.mean(count_hits), 2)
  assert m["colour_acc"] == 0.0

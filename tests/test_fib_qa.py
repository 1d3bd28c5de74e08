"""Fill-in-the-blank as open-ended QA: task 'qa' on a builder with a `fib` feature (no `qa`) reads
question = the sentence with its blank, answer = the blank's word, in every reader (training
rows, answer vocabulary, evaluation rows). Built on the lsmdc builder test's tiny release."""
import types

import numpy as np
import pytest

from configs import common
from data_builders.lsmdc import lsmdc_dataset_builder as lsmdc
from data_builders.lsmdc import lsmdc_dataset_builder_test as lsmdc_test
from vlx.data import eval_stream, qa, tasks, testing, text_ops
from vlx.data.errors import DataConfigError

# the built splits keep clip A (train; B is corrupt) and clip E (test; D is missing)
TRAIN = [('SOMEONE _____ at "the" mirror.', "glances"), ("He _____.", "smiles")]
TEST = [("SOMEONE's _____ gleams.", "badge")]
LEN = 16


@pytest.fixture(scope="module")
def fib_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("lsmdc_fib")
  lsmdc_test.write_layout(root / "manual")
  testing.build(lsmdc.Builder, "fib", root / "manual", root / "data")
  return root / "data"


def _config(data_dir):
  c = common.base_config()
  c.data.update(data_dir=str(data_dir), tokenizer="moving_shapes")
  c.data.train.update(builder="lsmdc", builder_config="fib", num_frames=2, resolution=32,
                      max_text_len=LEN, task="qa")
  return c


def _builder(data_dir):
  return lsmdc.Builder(config="fib", data_dir=str(data_dir))


def test_fib_pairs_and_answer_vocab(fib_dir):
  b = _builder(fib_dir)
  assert qa.qa_feature(b) == "fib"
  clips = qa.read_qa_pairs(b, "train")
  assert [list(zip(c["question"], c["answer"])) for c in clips] == [TRAIN]
  assert qa.resolve_answer_vocab(_config(fib_dir)) == {"glances": 0, "smiles": 1}


def test_fib_training_rows(fib_dir):
  c = _config(fib_dir)
  ds, count = tasks.TASK["qa"].records(c, _builder(fib_dir), "train", {}, ("video_id",))
  rows = [(r["video_id"].decode(), r["question"].decode(), int(r["label"]))
          for r in ds.as_numpy_iterator()]
  assert count == 2
  assert rows == [(lsmdc_test.A, q, i) for i, (q, _) in enumerate(TRAIN)]


@pytest.mark.parametrize("split, pairs, labels", [("train", TRAIN, [0, 1]),
                                                  ("test", TEST, [-1])])   # 'badge': not in vocab
def test_fib_eval_rows(fib_dir, split, pairs, labels):
  c = _config(fib_dir)
  ev = common.qa_eval(builder="lsmdc", builder_config="fib", split=split, num_frames=2,
                      resolution=32, max_text_len=LEN)
  [batch] = list(eval_stream.make_eval_batches(ev, c, batch_size=4))
  n = len(pairs)
  assert int(batch["valid"].sum()) == n
  ids, mask = text_ops.tokenize(text_ops.load_tokenizer("moving_shapes"), [q for q, _ in pairs],
                                LEN)
  np.testing.assert_array_equal(batch["text_ids"][:n], ids)
  np.testing.assert_array_equal(batch["text_mask"][:n], mask)
  np.testing.assert_array_equal(batch["label"][:n], labels)
  np.testing.assert_array_equal(batch["example_index"][:n], np.arange(n))


def test_no_qa_feature_is_one_line_error():
  b = types.SimpleNamespace(name="lsmdc", info=types.SimpleNamespace(features={"captions": 0}))
  with pytest.raises(DataConfigError, match=r"dataset lsmdc has none of the QA features "
                     r"\['qa', 'fib'\] \(needed by split 'train'\); it has \['captions'\]"):
    qa.read_qa_pairs(b, "train")

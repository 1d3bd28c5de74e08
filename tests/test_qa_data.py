"""Video-QA data path: answer vocabulary semantics, question types, QA train/eval batches built
from the tiny moving_shapes dataset, and the all-captions retrieval rows."""
import json

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common
from data_builders.moving_shapes import moving_shapes_dataset_builder as msb
from vlx.data import eval_stream, pipeline, qa, tasks, text_ops, train_stream

FEATURE_TYPES = ("colour", "shape", "direction", "count")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  """moving_shapes/tiny (the same path as test_data_pipeline's, so one build per session)."""
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"
  pipeline.get_builder("moving_shapes", "tiny", str(path))
  return path


@pytest.fixture(scope="session")
def raw(tiny_dir):
  b = msb.Builder(config="tiny", data_dir=str(tiny_dir))
  return {s: list(tfds.as_numpy(b.as_dataset(split=s, shuffle_files=False)))
          for s in ("train", "test")}


def _config(data_dir, **data) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.data.update(data_dir=str(data_dir), global_batch_size=16, shuffle_buffer=64,
                tokenizer="moving_shapes", **data)
  c.data.train.update(builder_config="tiny", num_frames=4, resolution=32, max_text_len=16,
                      task="qa")
  return c


def _qa_eval(**kw):
  return common.qa_eval(builder_config="tiny", num_frames=4, resolution=32, max_text_len=16, **kw)


def _decode(tok, ids, mask):
  return tok.decode(ids[mask.astype(bool)][1:-1]).replace(" ?", "?")


def test_vocab_orders_by_frequency_then_first_appearance():
  answers = ["b", "a", "c", "a", "d", "c", "b", "e", "a"]   # a:3, b:2, c:2, d:1, e:1
  assert qa.build_answer_vocab(answers) == {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
  assert qa.build_answer_vocab(answers, top_k=2) == {"a": 0, "b": 1}
  assert qa.build_answer_vocab([b"x", "y", "y"], top_k=5) == {"y": 0, "x": 1}
  with pytest.raises(ValueError, match="top_k"):
    qa.build_answer_vocab(answers, top_k=-1)
  assert qa.num_labels({"a": 0}) == 1500 and qa.num_labels(dict.fromkeys(range(2423), 0)) == 2423
  np.testing.assert_array_equal(qa.answer_labels(["c", "zz", b"a"], {"a": 0, "c": 1}), [1, -1, 0])


def test_vocab_file_roundtrip_and_errors(tmp_path):
  vocab = {"dog": 0, "a man": 1, "two": 2}
  path = qa.save_answer_vocab(vocab, tmp_path / "sub" / "train_ans2label.json")
  assert json.load(open(path)) == vocab and qa.load_answer_vocab(path) == vocab
  bad = tmp_path / "bad.json"
  for content, match in [({"a": 0, "b": 2}, "0..1"), (["a"], "JSON object"),
                         ({"a": "0"}, "int indices")]:
    bad.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=match):
      qa.load_answer_vocab(bad)
  with pytest.raises(FileNotFoundError, match="config.data.answer_vocab"):
    qa.load_answer_vocab(tmp_path / "missing.json")


def test_question_types():
  assert [qa.question_type(q) for q in ["What is a man doing?", b"who  plays?", "How many?",
                                        "  Where's it", ""]] == ["what", "who", "how", "where's", ""]
  ids = qa.qtype_ids(["what is it?", "when did it", "which way?"], qa.MSRVTT_QTYPES)
  np.testing.assert_array_equal(ids, [0, 4, -1])
  ids = qa.qtype_ids(["q1", "q2"], FEATURE_TYPES, source="feature", features=[b"count", "shape"])
  np.testing.assert_array_equal(ids, [3, 1])
  with pytest.raises(ValueError, match="qtype_source"):
    qa.qtype_ids(["q"], FEATURE_TYPES, source="last_word")


def test_resolve_vocab_builds_from_train_and_writes_workdir(tiny_dir, raw, tmp_path):
  c = _config(tiny_dir)
  vocab = qa.resolve_answer_vocab(c, workdir=str(tmp_path))
  answers = [a.decode() for ex in raw["train"] for a in ex["qa"]["answer"]]
  assert vocab == qa.build_answer_vocab(answers) and len(vocab) == 25
  assert qa.load_answer_vocab(tmp_path / qa.VOCAB_FILENAME) == vocab
  c2 = _config(tiny_dir, answer_vocab=str(tmp_path / qa.VOCAB_FILENAME), answer_top_k=3)
  assert qa.resolve_answer_vocab(c2) == vocab        # an explicit file wins over top_k
  assert len(qa.resolve_answer_vocab(_config(tiny_dir, answer_top_k=3))) == 3


def test_qa_train_batches_one_epoch_covers_every_pair(tiny_dir, raw):
  c = _config(tiny_dir)
  vocab = qa.resolve_answer_vocab(c)
  ds = train_stream._train_dataset(c, process_index=0, process_count=1, extra_keys=("video_id",))
  tok = text_ops.load_tokenizer("moving_shapes")
  truth = {(ex["video_id"], q): a.decode() for ex in raw["train"]
           for q, a in zip(ex["qa"]["question"], ex["qa"]["answer"])}
  seen = []
  batches = [b for b, _ in zip(ds.as_numpy_iterator(), range(16))]  # 64 clips x 4 QA / 16
  for b in batches:
    assert set(b) == set(tasks.TRAIN_KEYS["qa"]) | {"video_id"}
    assert b["label"].dtype == np.int32 and b["video"].shape == (16, 4, 32, 32, 3)
    for i in range(16):
      q = _decode(tok, b["text_ids"][i], b["text_mask"][i]).encode()
      assert b["text_ids"][i, 0] == tok.cls_token_id
      assert b["label"][i] == vocab[truth[(b["video_id"][i], q)]]
      seen.append((b["video_id"][i], q))
  assert sorted(seen) == sorted(truth)                  # each QA pair once per epoch
  resumed = next(train_stream._train_dataset(c, process_index=0, process_count=1,
                                         start_step=5).as_numpy_iterator())
  np.testing.assert_array_equal(resumed["text_ids"], batches[5]["text_ids"])
  np.testing.assert_array_equal(resumed["video"], batches[5]["video"])


def test_qa_train_drops_answers_outside_the_vocab(tiny_dir, tmp_path):
  colours = {k: i for i, k in enumerate(["red", "green", "blue", "orange", "yellow", "cyan",
                                         "purple", "pink"])}
  path = qa.save_answer_vocab(colours, tmp_path / "colours.json")
  c = _config(tiny_dir, answer_vocab=path)
  ds = train_stream._train_dataset(c, process_index=0, process_count=1)
  tok = text_ops.load_tokenizer("moving_shapes")
  rows = [b for b, _ in zip(ds.as_numpy_iterator(), range(4))]  # 64 colour questions = 1 epoch
  for b in rows:
    assert ((b["label"] >= 0) & (b["label"] < 8)).all()
    assert all(_decode(tok, i, m).startswith("what color") for i, m in zip(b["text_ids"],
                                                                         b["text_mask"]))
  c.model.num_labels = 4
  with pytest.raises(ValueError, match="num_labels=4"):
    train_stream._train_dataset(c, process_index=0, process_count=1)


@pytest.mark.parametrize("source", ["feature", "first_word"])
def test_qa_eval_batches_rows_labels_and_types(tiny_dir, raw, source):
  c = _config(tiny_dir)
  vocab = qa.resolve_answer_vocab(c)
  types = FEATURE_TYPES if source == "feature" else qa.MSRVTT_QTYPES
  ev = _qa_eval(qtype_source=source, qtypes=types)
  batches = list(eval_stream.make_eval_batches(ev, c, batch_size=24))   # 16 clips x 4 = 64 rows
  assert [int(b["valid"].sum()) for b in batches] == [24, 24, 16]
  cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  keep = cat["valid"]
  np.testing.assert_array_equal(cat["example_index"][keep], np.arange(64))
  np.testing.assert_array_equal(cat["example_index"][~keep], -1)
  np.testing.assert_array_equal(cat["video_index"][keep], np.arange(64) // 4)
  pairs = [(q, a, t) for ex in raw["test"] for q, a, t in
           zip(ex["qa"]["question"], ex["qa"]["answer"], ex["qa"]["qtype"])]
  tok = text_ops.load_tokenizer("moving_shapes")
  expect_type = {"feature": {b"colour": 0, b"shape": 1, b"direction": 2, b"count": 3},
                 "first_word": {b"colour": 0, b"shape": 0, b"direction": -1, b"count": 2}}[source]
  for i, (q, a, t) in enumerate(pairs):
    assert _decode(tok, cat["text_ids"][i], cat["text_mask"][i]).encode() == q
    assert cat["label"][i] == vocab.get(a.decode(), -1)
    assert cat["qtype"][i] == expect_type[t]
  # the 4 questions of a clip share its (uniformly sampled) frames
  np.testing.assert_array_equal(cat["video"][4], cat["video"][7])
  assert not np.array_equal(cat["video"][3], cat["video"][4])


def test_qa_eval_two_hosts_same_batch_count_disjoint_examples(tiny_dir):
  c = _config(tiny_dir)
  ev = _qa_eval()
  hosts = [list(eval_stream.make_eval_batches(ev, c, batch_size=12, process_index=p,
                                           process_count=2)) for p in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 3                       # 32 rows per host
  ids = np.concatenate([b["example_index"][b["valid"]] for h in hosts for b in h])
  np.testing.assert_array_equal(np.sort(ids), np.arange(64))
  np.testing.assert_array_equal(hosts[1][0]["example_index"][:3], [32, 33, 34])


def test_all_captions_rows_map_texts_to_clips(tiny_dir, raw):
  c = _config(tiny_dir)
  ev = common.retrieval_eval(builder_config="tiny", num_frames=4, resolution=32, max_text_len=16,
                             all_captions=True)
  batches = list(eval_stream.make_eval_batches(ev, c, batch_size=32))
  assert [int(b["valid"].sum()) for b in batches] == [32, 32, 16]   # 16 clips x 5 captions
  assert set(batches[0]) == {"video", "text_ids", "text_mask", "video_index", "valid"}
  keep = np.concatenate([b["valid"] for b in batches])
  vidx = np.concatenate([b["video_index"] for b in batches])[keep]
  np.testing.assert_array_equal(vidx, np.repeat(np.arange(16), 5))
  ids = np.concatenate([b["text_ids"] for b in batches])[keep]
  expect, _ = text_ops.tokenize(text_ops.load_tokenizer("moving_shapes"),
                                [t for ex in raw["test"] for t in ex["captions"]], 16)
  np.testing.assert_array_equal(ids, expect)
  one = common.retrieval_eval(builder_config="tiny", num_frames=4, resolution=32,
                              max_text_len=16)                       # first caption only
  first = list(eval_stream.make_eval_batches(one, c, batch_size=16))
  np.testing.assert_array_equal(first[0]["video"][2], batches[0]["video"][10])
  np.testing.assert_array_equal(first[0]["text_ids"], expect[::5])


def test_unknown_task_is_rejected(tiny_dir):
  c = _config(tiny_dir)
  c.data.train.task = "captioning"
  with pytest.raises(ValueError, match="config.data.train.task='captioning'"):
    train_stream._train_dataset(c, process_index=0, process_count=1)

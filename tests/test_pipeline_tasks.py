"""Generic input pipeline over any data_contract builder: the multiple_choice and classification
tasks, multi-caption / text_field retrieval, image and short clips, variable frame sizes, QA
answer vocabularies, segment sampling and the spatial modes. A small TFDS builder defined here
(`fakepipe`) writes the data_contract features; moving_shapes/tiny covers a real builder."""
import sys
import types

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from configs import common
from data_builders.moving_shapes import moving_shapes_dataset_builder as msb
from vlx.data import eval_stream, pipeline, qa, tasks, text_ops, train_stream, video_ops

CLASSES = ["left", "right", "up"]
CAPTIONS = ["a red circle moves left", "the red circle goes left quickly",
            "a video of a red circle", "two blue squares move up", "the squares go up slowly",
            "a green star moves down", "a small green star on a black background"]
QUESTIONS = ["what moves?", "", "which way does the object move?", ""]
COLOURS = ["red", "red", "red", "blue", "blue", "green", "pink"]   # red 3x, blue 2x: top-2
OPTIONS = ["red", "blue", "green", "pink"]


def _frames(n: int, h: int, w: int, index: int) -> np.ndarray:
  """Frame t of clip `index`: R = 10 + 20 t (the frame number), G = 10 + 20 index, B = 128."""
  out = np.zeros((n, h, w, 3), np.uint8)
  out[..., 0] = (10 + 20 * np.arange(n))[:, None, None]
  out[..., 1], out[..., 2] = 10 + 20 * index, 128
  return out


def _example(split: str, i: int, num_frames: int, k: int = 3) -> dict:
  h, w = [(24, 32), (32, 24), (20, 20), (16, 40)][i % 4]
  caps = [CAPTIONS[(i + j) % len(CAPTIONS)] for j in range(1 + i % 3)]
  return dict(
      video=_frames(num_frames, h, w, i), video_id=f"{split}_{i}", duration=float(num_frames),
      orig_fps=1.0, start=-1.0, end=-1.0, captions=caps,
      segment_captions=[f"a {c} shape" for c in ("red", "blue")[: 1 + i % 2]],
      qa=[dict(question="what color is the object?", answer=COLOURS[(i + j) % 7], qtype="")
          for j in range(2)],
      question=QUESTIONS[i % 4], mc_choices=[f"a {c} circle" for c in OPTIONS[:k]],
      mc_answer=i % k, label=i % 3, label_name=CLASSES[i % 3])


SPLITS = {  # frames per clip: 1 = an image; fewer than num_frames = a short clip
    "train": [_example("train", i, n) for i, n in enumerate([1, 2, 3, 5, 9, 4, 6, 7])],
    "test": [_example("test", i, n) for i, n in enumerate([9, 2, 1, 5, 6])],
    "bad_mc": [_example("bad_mc", 0, 3), _example("bad_mc", 1, 3, k=4)],
}


class FakePipe(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The data_contract features (caption, QA, multiple choice and classification at once)."""
  name = "fakepipe"
  code_path = epath.Path(__file__)
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    text = tfds.features.Text()
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(
        video=tfds.features.Video((None, None, None, 3), encoding_format="jpeg"),
        video_id=text, duration=np.float32, orig_fps=np.float32, start=np.float32,
        end=np.float32, captions=tfds.features.Sequence(text),
        segment_captions=tfds.features.Sequence(text),
        qa=tfds.features.Sequence(dict(question=text, answer=text, qtype=text)),
        question=text, mc_choices=tfds.features.Sequence(text), mc_answer=np.int32,
        label=tfds.features.ClassLabel(names=CLASSES), label_name=text)))

  def _split_generators(self, dl_manager):
    return {s: self._generate_examples(s) for s in SPLITS}

  def _generate_examples(self, split):
    for ex in SPLITS[split]:
      yield ex["video_id"], ex


@pytest.fixture(scope="session")
def fake_dir(tmp_path_factory):
  module = types.ModuleType("data_builders.fakepipe.fakepipe_dataset_builder")
  module.Builder = FakePipe
  sys.modules[module.__name__] = module       # what pipeline.get_builder imports
  path = tmp_path_factory.mktemp("fakepipe")
  FakePipe(data_dir=str(path)).download_and_prepare()
  return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
  path = tmp_path_factory.getbasetemp() / "moving_shapes_tiny"  # shared with the other tests
  pipeline.get_builder("moving_shapes", "tiny", str(path))
  return path


def _stored(data_dir, split: str) -> list[dict]:
  """SPLITS[split] in the order TFDS stored it (examples are ordered by a hash of their key)."""
  ids = [ex["video_id"].decode() for ex in tfds.as_numpy(FakePipe(data_dir=str(data_dir))
         .as_dataset(split=split, shuffle_files=False, decoders=tfds.decode.PartialDecoding(
             {"video_id": True})))]
  by_id = {ex["video_id"]: ex for ex in SPLITS[split]}
  return [by_id[i] for i in ids]


def _config(data_dir, builder="fakepipe", batch=4, **train) -> ml_collections.ConfigDict:
  c = common.base_config()
  c.data.update(data_dir=str(data_dir), global_batch_size=batch, shuffle_buffer=16,
                tokenizer="moving_shapes")
  c.data.train.update(dict(builder=builder, builder_config="tiny" if builder != "fakepipe"
                           else "", num_frames=4, resolution=16, max_text_len=16, **train))
  return c


def _eval(make, builder="fakepipe", **kw):
  fields = dict(builder=builder, builder_config="tiny" if builder != "fakepipe" else "",
                num_frames=4, resolution=16, max_text_len=16)
  return make(**{**fields, **kw})


def _take(config, n, **kw):
  ds = train_stream._train_dataset(config, process_index=0, process_count=1, **kw)
  return [b for b, _ in zip(ds.as_numpy_iterator(), range(n))]


def _red(video):
  """Frame numbers of [..., T, H, W, 3] clips: mean red pixel back to t (R = 10 + 20 t)."""
  raw = (video * video_ops.CLIP_STD + video_ops.CLIP_MEAN) * 255
  return np.round((raw[..., 0].mean(axis=(-1, -2)) - 10) / 20).astype(int)


TOK = text_ops.load_tokenizer("moving_shapes")


def _words(ids, mask):
  return TOK.decode(ids[mask.astype(bool)][1:-1]).replace(" ?", "?")


def test_retrieval_any_builder_images_short_clips_sizes_captions_resume(fake_dir):
  c = _config(fake_dir, sampling="rand")
  run = _take(c, 8, extra_keys=("video_id",))    # 8 clips / 4 = 2 steps an epoch: 4 epochs
  by_id = {ex["video_id"].encode(): ex for ex in SPLITS["train"]}
  seen: dict[bytes, set] = {}
  for b in run:
    assert set(b) == set(tasks.TRAIN_KEYS["retrieval"]) | {"video_id"}
    assert b["video"].shape == (4, 4, 16, 16, 3)   # every size -> 16x16
    for vid, video, ids, mask in zip(b["video_id"], b["video"], b["text_ids"], b["text_mask"]):
      ex = by_id[vid]
      text = _words(ids, mask)
      assert text in ex["captions"]
      seen.setdefault(vid, set()).add(text)
      frames = _red(video)
      n = len(ex["video"])
      if n < 4:  # an image / short clip: its frames repeated, evenly
        np.testing.assert_array_equal(frames, np.arange(4) * n // 4)
      else:
        assert len(set(frames)) == 4 and frames.max() < n
  assert len(seen[b"train_2"]) > 1         # a new caption of a 3-caption clip across epochs
  resumed = _take(c, 2, start_step=5, extra_keys=("video_id",))
  for a, b in zip(run[5:7], resumed):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_text_field_and_all_captions_eval(fake_dir):
  c = _config(fake_dir, text_field="segment_captions")
  segs = {f"a {x} shape" for x in ("red", "blue")}
  for b in _take(c, 2):
    assert {_words(i, m) for i, m in zip(b["text_ids"], b["text_mask"])} <= segs
  test = _stored(fake_dir, "test")
  for field in ("captions", "segment_captions"):
    ev = _eval(common.retrieval_eval, all_captions=True, text_field=field, batch_size=4)
    batches = list(eval_stream.make_eval_batches(ev, c, batch_size=4))
    keep = np.concatenate([b["valid"] for b in batches])
    texts = [_words(i, m) for b in batches for i, m in zip(b["text_ids"], b["text_mask"])]
    expect = [t for ex in test for t in ex[field]]
    assert [t for t, k in zip(texts, keep) if k] == expect      # every caption, in order
    vidx = np.concatenate([b["video_index"] for b in batches])
    np.testing.assert_array_equal(
        vidx[keep], [i for i, ex in enumerate(test) for _ in ex[field]])
    np.testing.assert_array_equal(vidx[~keep], -1)
  first = list(eval_stream.make_eval_batches(_eval(common.retrieval_eval), c, batch_size=8))[0]
  assert [_words(i, m) for i, m in zip(first["text_ids"][:5], first["text_mask"])] == \
      [ex["captions"][0] for ex in test]
  with pytest.raises(ValueError, match=r"no \['paragraph'\] feature.*text_field='paragraph'"):
    _take(_config(fake_dir, text_field="paragraph"), 1)


def test_multiple_choice_batches_templates_and_hosts(fake_dir):
  c = _config(fake_dir, task="multiple_choice", mc_template="{question} answer {choice}")
  run = _take(c, 4, extra_keys=("video_id",))
  resumed = _take(c, 1, start_step=3, extra_keys=("video_id",))[0]
  for k in run[3]:
    np.testing.assert_array_equal(run[3][k], resumed[k], err_msg=k)
  b = run[0]
  assert set(b) == set(tasks.TRAIN_KEYS["multiple_choice"]) | {"video_id"}
  assert b["choice_ids"].shape == b["choice_mask"].shape == (4, 3, 16)
  assert b["choice_ids"].dtype == b["label"].dtype == np.int32
  by_id = {ex["video_id"].encode(): ex for ex in SPLITS["train"]}
  for row, vid in enumerate(b["video_id"]):
    ex = by_id[vid]
    assert b["label"][row] == ex["mc_answer"]
    texts = [_words(i, m) for i, m in zip(b["choice_ids"][row], b["choice_mask"][row])]
    q = ex["question"]
    assert texts == [f"{q} [UNK] {o}" if q else o for o in ex["mc_choices"]]  # 'answer' not in vocab
  ev = _eval(common.mc_eval, mc_template="{question} {options} {choice}")
  ev.max_text_len = 24
  hosts = [list(eval_stream.make_eval_batches(ev, c, batch_size=2, process_index=p,
                                           process_count=2)) for p in range(2)]
  assert len(hosts[0]) == len(hosts[1]) == 2       # 3 + 2 examples over 2 hosts, 2 rows a batch
  cat = {k: np.concatenate([b[k] for h in hosts for b in h]) for k in hosts[0][0]}
  assert set(cat) == set(tasks.EVAL_KEYS["multiple_choice"])
  keep = cat["valid"]
  np.testing.assert_array_equal(cat["example_index"][keep], np.arange(5))
  np.testing.assert_array_equal(cat["example_index"][~keep], -1)
  test = _stored(fake_dir, "test")
  np.testing.assert_array_equal(cat["label"][keep], [ex["mc_answer"] for ex in test])
  options = "a red circle a blue circle a green circle"
  for ids, mask, ex in zip(cat["choice_ids"][keep], cat["choice_mask"][keep], test):
    texts = [_words(i, m) for i, m in zip(ids, mask)]
    q = ex["question"]        # question '': the options alone
    assert texts == [f"{q} {options} {o}" if q else o for o in ex["mc_choices"]]
  assert {ex["question"] for ex in test} == {"", "what moves?", "which way does the object move?"}
  with pytest.raises(ValueError, match=r"fakepipe/bad_mc: example 1 \(video_id 'bad_mc_1'\) has "
                                       r"4 options but the first example has 3"):
    list(eval_stream.make_eval_batches(_eval(common.mc_eval, split="bad_mc"), c, batch_size=2))
  with pytest.raises(ValueError, match="mc_template='{question}'"):
    _take(_config(fake_dir, task="multiple_choice", mc_template="{question}"), 1)


def test_multiple_choice_moving_shapes_caption_options(tiny_dir):
  c = _config(tiny_dir, builder="moving_shapes", batch=8, task="multiple_choice")
  b = _take(c, 1, extra_keys=("video_id",))[0]
  raw = {ex["video_id"]: ex for ex in tfds.as_numpy(msb.Builder(
      config="tiny", data_dir=str(tiny_dir)).as_dataset(split="train", shuffle_files=False))}
  assert b["choice_ids"].shape == (8, 5, 16)
  for row, vid in enumerate(b["video_id"]):
    ex = raw[vid]
    assert b["label"][row] == ex["mc_answer"]
    assert [_words(i, m) for i, m in zip(b["choice_ids"][row], b["choice_mask"][row])] == \
        [o.decode() for o in ex["mc_choices"]]


def test_classification_train_prompt_and_multi_view_eval(fake_dir):
  c = _config(fake_dir, task="classification", class_prompt="a video of")
  b = _take(c, 1, extra_keys=("video_id",))[0]
  assert set(b) == set(tasks.TRAIN_KEYS["classification"]) | {"video_id"}
  np.testing.assert_array_equal(b["label"], [int(v.decode()[6:]) % 3 for v in b["video_id"]])
  assert all(_words(i, m) == "a video of" for i, m in zip(b["text_ids"], b["text_mask"]))
  ev = _eval(common.classification_eval, num_views=3, sampling="segment_middle", num_frames=2)
  batches = list(eval_stream.make_eval_batches(ev, c, batch_size=4))
  cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert set(cat) == set(tasks.EVAL_KEYS["classification"])
  assert len(batches) == 4 and cat["valid"].sum() == 15             # 5 clips x 3 views
  keep = cat["valid"]
  np.testing.assert_array_equal(cat["example_index"][keep], np.repeat(np.arange(5), 3))
  np.testing.assert_array_equal(cat["view_index"][keep], np.tile(np.arange(3), 5))
  test = _stored(fake_dir, "test")
  np.testing.assert_array_equal(cat["label"][keep], np.repeat([ex["label"] for ex in test], 3))
  expect = [TOK.cls_token_id, TOK.sep_token_id] + [TOK.pad_token_id] * 14  # '' prompt
  np.testing.assert_array_equal(cat["text_ids"], np.tile(expect, (16, 1)))
  np.testing.assert_array_equal(cat["text_mask"].sum(1), 2)
  nine, image = ([i for i, ex in enumerate(test) if len(ex["video"]) == n][0] for n in (9, 1))
  # the 9-frame clip: windows [0, 3), [3, 6), [6, 9), 2 segment middles each
  np.testing.assert_array_equal(_red(cat["video"][3 * nine:3 * nine + 3]), [[0, 1], [3, 4], [6, 7]])
  np.testing.assert_array_equal(_red(cat["video"][3 * image:3 * image + 3]), 0)  # image: all views
  logits = np.arange(16 * 2, dtype=np.float32).reshape(16, 2)
  ids, mean = tasks.average_over_views(logits, cat["example_index"], cat["valid"])
  np.testing.assert_array_equal(ids, np.arange(5))
  np.testing.assert_allclose(mean[1], logits[3:6].mean(0))


def test_classification_moving_shapes_labels(tiny_dir):
  c = _config(tiny_dir, builder="moving_shapes")
  ev = _eval(common.classification_eval, builder="moving_shapes")
  batches = list(eval_stream.make_eval_batches(ev, c, batch_size=16))
  raw = list(tfds.as_numpy(msb.Builder(config="tiny", data_dir=str(tiny_dir)).as_dataset(
      split="test", shuffle_files=False)))
  assert len(batches) == 1 and batches[0]["valid"].all()
  np.testing.assert_array_equal(batches[0]["label"], [ex["label"] for ex in raw])
  np.testing.assert_array_equal(batches[0]["view_index"], 0)


def test_qa_answer_top_k_any_builder(fake_dir):
  c = _config(fake_dir, task="qa")
  c.data.answer_top_k = 2
  vocab = qa.resolve_answer_vocab(c)
  assert vocab == {"red": 0, "blue": 1}          # the 2 most frequent train answers
  rows = _take(c, 3)              # 16 train pairs, 12 in the vocabulary (8 red, 4 blue): 1 epoch
  np.testing.assert_array_equal(np.sort(np.concatenate([r["label"] for r in rows])),
                                [0] * 8 + [1] * 4)
  ev = _eval(common.qa_eval, qtype_source="feature", qtypes=("colour",))
  cat = {k: np.concatenate([b[k] for b in eval_stream.make_eval_batches(ev, c, batch_size=4)])
         for k in tasks.EVAL_KEYS["qa"]}
  keep = cat["valid"]
  answers = [p["answer"] for ex in _stored(fake_dir, "test") for p in ex["qa"]]
  np.testing.assert_array_equal(cat["label"][keep], [vocab.get(a, -1) for a in answers])
  np.testing.assert_array_equal(cat["qtype"][keep], -1)                # qtype '' = none
  c.model.num_labels = 1
  with pytest.raises(ValueError, match="num_labels=1"):
    _take(c, 1)


@pytest.mark.parametrize("vlen,t", [(9, 3), (10, 4), (16, 8), (30, 7), (8, 8), (100, 16)])
def test_segment_sampling_matches_allinone_formula(vlen, t):
  bounds = np.linspace(0, vlen, t + 1).astype(int)
  middle = [(a + b - 1) // 2 for a, b in zip(bounds[:-1], bounds[1:])]
  got = video_ops.sample_indices(tf.constant(vlen), t, "segment_middle").numpy()
  np.testing.assert_array_equal(got, middle)
  for s in range(20):
    idx = video_ops.sample_indices(tf.constant(vlen), t, "segment_rand",
                                   tf.constant([s, 0], tf.int64)).numpy()
    lo, hi = bounds[:-1], np.maximum(bounds[1:] - 1, bounds[:-1] + 1)   # [x0, x1) or x0
    assert ((idx >= lo) & (idx < hi)).all(), (idx, lo, hi)


def test_short_side_resize_center_crop_and_imagenet_norm():
  frame = np.zeros((20, 40, 3), np.uint8)
  frame[:, 6:34] = 200                           # a bright band: 6/40 black on each side
  enc = tf.constant([tf.io.encode_png(frame).numpy()])
  out = video_ops.preprocess_clip(enc, num_frames=2, sampling="uniform", resolution=10,
                                  resize_mode="short_side", center=True, norm="imagenet")
  assert out.shape == (2, 10, 10, 3)
  mean, std = video_ops.NORMS["imagenet"]
  np.testing.assert_allclose(out.numpy(), np.broadcast_to((200 / 255 - np.array(mean)) /
                                                          np.array(std), out.shape), atol=1e-5)
  square = video_ops.preprocess_clip(enc, num_frames=1, sampling="uniform", resolution=10)
  raw = (square.numpy() * video_ops.CLIP_STD + video_ops.CLIP_MEAN) * 255
  assert raw[0, :, 0, 0].max() < 100 and raw[0, :, 5, 0].min() > 195  # squashed: the edges
  rand = video_ops.preprocess_clip(enc, num_frames=1, sampling="uniform", resolution=10,
                                   resize_mode="short_side", seed=tf.constant([1, 2], tf.int64))
  assert rand.shape == (1, 10, 10, 3)


def test_bad_fields_name_the_config_field(fake_dir):
  for field, value, match in [("sampling", "middle", "config.data.train.sampling='middle'"),
                              ("resize", "pad", "config.data.train.resize='pad'"),
                              ("norm", "bgr", "config.data.train.norm='bgr'"),
                              ("crop", 32, "config.data.train.crop=32 is larger")]:
    with pytest.raises(ValueError, match=match):
      _take(_config(fake_dir, **{field: value}), 1)
  ev = _eval(common.retrieval_eval, task="captioning")
  with pytest.raises(ValueError, match="task='captioning'"):
    next(eval_stream.make_eval_batches(ev, _config(fake_dir), batch_size=2))

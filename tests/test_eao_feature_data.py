"""Released feature pickles (MSR-VTT / YouCook2 in the EAO release layout) -> TFDS datasets ->
the features reader with parts, against a numpy transcription of spec section 4
(create_video_features 'clip', create_audio_features); missing / corrupt items counted; pickles
that name code refused without running it."""
from __future__ import annotations

import os
import pathlib
import pickle

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from data_builders.msrvtt_features import msrvtt_features_dataset_builder as msrvtt
from data_builders.youcook2_features import youcook2_features_dataset_builder as yc2
from vlx.data import feature_pickles, release_layout, safe_numpy_pickle, testing, word2vec
from vlx.data.modalities import features

D2, D3 = 2048, 2048
rng = np.random.default_rng(0)


def feats(n: int, d: int) -> np.ndarray:
  return rng.normal(size=(n, d)).astype(np.float32)


def mel(n: int) -> np.ndarray:
  return rng.normal(size=(40, n)).astype(np.float32)


MSRVTT_TRAIN = [
    dict(id="video0", caption=["a cat sat on the mat", "the dog"], audio=mel(50),
         **{"2d": feats(4, D2), "3d": feats(6, D3)}),
    dict(id="video1", caption=["New_York at night"], audio=mel(7),
         **{"2d": feats(3, D2), "3d": feats(2, D3)}),
    dict(id="video2", caption=["broken"], audio=mel(7),
         **{"2d": feats(3, 100), "3d": feats(2, D3)}),            # corrupt: D = 100
    dict(id="video3", caption=["no 3d"], audio=mel(7), **{"2d": feats(3, D2)}),   # missing
]
MSRVTT_TEST = [
    dict(id="video7", eval_caption="a man sings", audio=mel(9),
         **{"2d": np.zeros([0], np.float32), "3d": feats(5, D3)}),  # empty 2D: empty row
    dict(id="video8", eval_caption="the cat", audio=mel(12),
         **{"2d": feats(9, D2), "3d": feats(13, D3)}),
]
YC_VAL = [
    dict(id=11, caption="crack the eggs", audio=mel(20),
         **{"2d_full": feats(5, D2), "3d_full": feats(7, D3)}),
    dict(id=12, caption="no spatial features", audio=mel(20), **{"3d_full": feats(7, D3)}),
    dict(id=13, caption="stir", audio=mel(3),
         **{"2d_full": feats(2, D2), "3d_full": feats(3, D3)}),
]
YC_VAL_CLIP = [dict(id=it["id"], clip=feats(4, 512)) for it in YC_VAL]


def dump(obj, path: pathlib.Path, protocol: int = 4) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(pickle.dumps(obj, protocol=protocol))


class Payload:
  """Unpickling this runs os.system (a real attack would do worse)."""

  def __init__(self, marker: pathlib.Path):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------- numpy transcription (spec)

def torch_nearest(x: np.ndarray, m: int) -> np.ndarray:
  """interpolate(mode='nearest') along axis 0, n -> m steps, float32 scale as torch's kernel."""
  n = x.shape[0]
  scale = np.float32(n) / np.float32(m)
  idx = np.minimum(np.floor(np.arange(m, dtype=np.float32) * scale).astype(int), n - 1)
  return x[idx]


def l2(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def create_video_features(f2d: np.ndarray, f3d: np.ndarray, n_tokens: int):
  video = np.zeros([n_tokens, f2d.shape[1] + f3d.shape[1]], np.float32)
  mask = np.zeros([n_tokens], np.int32)
  n2, n3 = len(f2d), len(f3d)
  if n2 and n3:
    f2d = torch_nearest(f2d, n3)
    k = min(n3, n_tokens)
    video[:k, :f2d.shape[1]] = l2(f2d[:n_tokens])
    video[:k, f2d.shape[1]:] = l2(f3d[:n_tokens])
    mask[:k] = 1
  return video, mask


def create_audio_features(spec: np.ndarray, frames: int):
  audio = np.zeros([spec.shape[0], frames], np.float32)
  k = min(spec.shape[1], frames)
  audio[:, :k] = spec[:, :k]
  return audio, (np.arange(frames) < k).astype(np.int32)


# --------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """msrvtt_features/resnet from the nested release layout; youcook2_features/resnet and /clip
  from resnet pickles unpacked flat beside a clip/ folder (no training pickle)."""
  root = tmp_path_factory.mktemp("eao_features")
  ms = root / "ms_manual"
  dump(MSRVTT_TRAIN, ms / "data" / "msrvtt" / "resnet" / "msrvtt_train.pkl", protocol=3)
  dump(MSRVTT_TEST, ms / "data" / "msrvtt" / "resnet" / "msrvtt_jsfusion_test.pkl")
  yc = root / "yc_manual"
  dump(YC_VAL, yc / "youcook_val.pkl", protocol=2)
  dump(YC_VAL_CLIP, yc / "clip" / "youcook_val.pkl")
  data_dir = root / "data"
  out = {"msrvtt": testing.build(msrvtt.Builder, "resnet", ms, data_dir),
         "reports": {}}
  out["reports"]["msrvtt"] = {s: testing.report_counts("msrvtt_features", s, "resnet")
                              for s in ("train", "test_1ka")}
  out["youcook2"] = testing.build(yc2.Builder, "resnet", yc, data_dir)
  out["reports"]["youcook2"] = testing.report_counts("youcook2_features", "validation", "resnet")
  out["youcook2_clip"] = testing.build(yc2.Builder, "clip", yc, data_dir)
  out["data_dir"] = data_dir
  return out


def rows(builder, split: str) -> dict[str, dict]:
  return {r["video_id"].decode(): r for r in tfds.as_numpy(builder.as_dataset(split=split))}


# --------------------------------------------------------------------- tests

def test_msrvtt_dataset_and_counts(built):
  b = built["msrvtt"]
  assert set(b.info.splits) == {"train", "test_1ka"}
  counts = built["reports"]["msrvtt"]
  assert (counts["train"]["found"], counts["train"]["missing"], counts["train"]["corrupt"]) \
      == (2, 1, 1)
  assert (counts["test_1ka"]["found"], counts["test_1ka"]["missing"]) == (2, 0)
  train = rows(b, "train")
  assert sorted(train) == ["video0", "video1"]
  src = {it["id"]: it for it in MSRVTT_TRAIN}
  for vid, r in train.items():
    np.testing.assert_array_equal(r["features_2d"], src[vid]["2d"])
    np.testing.assert_array_equal(r["features_3d"], src[vid]["3d"])
    np.testing.assert_array_equal(r["audio"], src[vid]["audio"].T)   # stored time first
    assert [c.decode() for c in r["captions"]] == src[vid]["caption"]
  test = rows(b, "test_1ka")
  assert [c.decode() for c in test["video7"]["captions"]] == ["a man sings"]
  assert test["video7"]["features_2d"].shape == (0, D2)
  # the complete size is metadata that survives reopening the prepared dataset
  again = msrvtt.Builder(config="resnet", data_dir=os.fspath(built["data_dir"]))
  assert again.info.metadata["complete_size"] == {"test_1ka": 1000}


def test_youcook2_filter_configs_and_complete_size(built):
  assert built["reports"]["youcook2"]["found"] == 2
  assert built["reports"]["youcook2"]["missing"] == 1     # no '2d_full': counted, skipped
  b, clip = built["youcook2"], built["youcook2_clip"]
  assert set(b.info.splits) == {"validation"}              # no training pickle: not built
  assert b.info.metadata["complete_size"] == {"validation": 3350}
  val = rows(b, "validation")
  assert sorted(val) == ["11", "13"]
  assert [c.decode() for c in val["13"]["captions"]] == ["stir"]
  cval = rows(clip, "validation")
  assert sorted(cval) == ["11", "13"] and "features_3d" not in cval["11"]
  np.testing.assert_array_equal(cval["13"]["features_2d"], YC_VAL_CLIP[2]["clip"])
  np.testing.assert_array_equal(cval["13"]["audio"], YC_VAL[2]["audio"].T)


@pytest.mark.parametrize("n_tokens", [4, 16])
def test_features_reader_parts_match_the_spec(built, n_tokens):
  video = features.from_config(dict(parts=("features_2d", "features_3d"), dims=(D2, D3),
                                    max_len=n_tokens, normalize=True, key="video"), "inputs.video")
  audio = features.from_config(dict(feature="audio", dim=40, max_len=10, key="audio"),
                               "inputs.audio")
  assert video.stored_features == ("features_2d", "features_3d") and video.dim == D2 + D3
  seed = tf.constant([0, 1], tf.int64)
  src = {it["id"]: it for it in MSRVTT_TRAIN + MSRVTT_TEST}
  got = {**rows(built["msrvtt"], "train"), **rows(built["msrvtt"], "test_1ka")}
  assert len(got) == 4
  for vid, r in got.items():
    out = video.read((r["features_2d"], r["features_3d"]), seed, train=False)
    want, mask = create_video_features(np.reshape(src[vid]["2d"], (-1, D2)), src[vid]["3d"],
                                       n_tokens)
    np.testing.assert_allclose(out["video"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["video_mask"], mask)
    a = audio.read(r["audio"], seed, train=False)
    want_a, mask_a = create_audio_features(src[vid]["audio"], 10)
    np.testing.assert_array_equal(a["audio"], want_a.T)
    np.testing.assert_array_equal(a["audio_mask"], mask_a)
  assert not got["video7"]["features_2d"].size  # the empty-2D row is all zeros, mask 0
  # nearest resampling as torch: 9 -> 13 and 3 -> 2 steps (indices, float32 scale)
  np.testing.assert_array_equal(features.nearest_indices(9, 13),
                                [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8])
  np.testing.assert_array_equal(features.nearest_indices(3, 2), [0, 1])


def test_reader_parts_config_errors():
  with pytest.raises(ValueError, match=r"^inputs\.v\.dims: one stored D per part"):
    features.from_config(dict(parts=("a", "b"), dims=(3,), max_len=2), "inputs.v")
  with pytest.raises(ValueError, match=r"^inputs\.v\.dim: 7 differs from sum\(dims\)=5"):
    features.from_config(dict(parts=("a", "b"), dims=(2, 3), dim=7, max_len=2), "inputs.v")
  reader = features.from_config(dict(parts=("a", "b"), dim=6, max_len=2), "inputs.v")
  with pytest.raises(ValueError, match=r"^features: stored parts \{'a': 2, 'b': 3\} do not sum to"):
    reader.read((np.ones([2, 2], np.float32), np.ones([2, 3], np.float32)),
                tf.constant([0, 1], tf.int64), train=False)


def test_training_stream_word_tokenizer_and_parts(built, tmp_path):
  """A training batch of msrvtt_features with the words: tokenizer (no MLM) and the [2D|3D] /
  spectrogram inputs: shapes, masks and ids of the in-vocabulary words."""
  from configs import common  # pylint: disable=import-outside-toplevel
  from vlx.data import eval_stream, train_stream  # pylint: disable=import-outside-toplevel
  vec = tmp_path / "v.txt"
  vec.write_text("4 2\ncat 1 0\nthe 0 1\nNew_York 1 1\ndog 2 2\n")
  word2vec.convert(vec, tmp_path / "w")
  c = common.base_config()
  c.data.update(data_dir=os.fspath(built["data_dir"]), global_batch_size=2, shuffle_buffer=4,
                tokenizer=f"words:{tmp_path / 'w' / 'vocab.txt'}")
  c.data.train.update(builder="msrvtt_features", builder_config="resnet", split="train",
                      max_text_len=5)
  c.data.train.inputs = ml_collections.ConfigDict(dict(
      video=dict(reader="features", parts=("features_2d", "features_3d"), dim=D2 + D3,
                 max_len=8, normalize=True, select="window"),   # dims from the stored shapes
      audio=dict(reader="features", feature="audio", dim=40, max_len=16)))
  # pylint: disable-next=protected-access
  ds = train_stream._train_dataset(c, process_index=0, process_count=1, extra_keys=("video_id",))
  batch = next(ds.as_numpy_iterator())
  assert batch["video"].shape == (2, 8, D2 + D3) and batch["audio"].shape == (2, 16, 40)
  assert sorted(batch["video_mask"].sum(1).tolist()) == [2, 6]    # 3D lengths of the 2 clips
  assert sorted(batch["audio_mask"].sum(1).tolist()) == [7, 16]
  # ids = vocab line + 1 of the in-vocabulary words of one of the clip's captions
  allowed = {b"video0": {(1, 2, 0, 0, 0), (2, 4, 0, 0, 0)}, b"video1": {(3, 0, 0, 0, 0)}}
  for vid, ids, mask in zip(batch["video_id"], batch["text_ids"], batch["text_mask"]):
    assert tuple(ids) in allowed[vid]
    np.testing.assert_array_equal(mask, ids > 0)
  # the evaluation stream reads the same inputs (the test split, its one caption per clip)
  ev = common.retrieval_eval(builder="msrvtt_features", builder_config="resnet",
                             split="test_1ka", max_text_len=5)
  ev.inputs = c.data.train.inputs
  rows = list(eval_stream.make_eval_batches(ev, c, batch_size=2, process_index=0,
                                            process_count=1))
  got = {b["video_index"][i]: (b["video_mask"][i].sum(), tuple(b["text_ids"][i]))
         for b in rows for i in range(2)}
  assert sorted(got.values()) == [(0, (0, 0, 0, 0, 0)), (8, (2, 1, 0, 0, 0))]  # empty 2D: no video
  assert (batch["mlm_labels"] == -100).all()


def test_safe_pickle_refuses_code(tmp_path):
  marker = tmp_path / "ran"
  for payload in ([Payload(marker)], {"x": Payload(marker)}):
    for protocol in (2, 4):
      with pytest.raises(safe_numpy_pickle.UnsafePickleError, match="posix.system|nt.system"):
        safe_numpy_pickle.loads(pickle.dumps(payload, protocol=protocol))
  evil = b"cbuiltins\neval\n(S'__import__(\"os\").system(\"touch " + os.fsencode(marker) + \
      b"\")'\ntR."
  with pytest.raises(safe_numpy_pickle.UnsafePickleError, match="builtins.eval"):
    safe_numpy_pickle.loads(evil)
  assert not marker.exists()
  # numpy 1.x names (the release's pickles) load; arrays and scalars come back intact
  x = np.arange(6, dtype=np.float32).reshape(2, 3)
  old = pickle.dumps({"a": x, "s": np.float64(2.5)}, protocol=2).replace(b"numpy._core",
                                                                         b"numpy.core")
  back = safe_numpy_pickle.loads(old)
  np.testing.assert_array_equal(back["a"], x)
  assert back["s"] == 2.5


def test_builder_refuses_a_payload_pickle(tmp_path):
  marker = tmp_path / "ran"
  dump([Payload(marker)], tmp_path / "m" / "resnet" / "msrvtt_jsfusion_test.pkl")
  with pytest.raises(release_layout.DatasetLayoutError) as e:
    testing.build(msrvtt.Builder, "resnet", tmp_path / "m", tmp_path / "data")
  assert "refused to unpickle posix.system" in str(e.value) and "\n" not in str(e.value)
  assert not marker.exists()
  assert feature_pickles.find_pickle(
      release_layout.Layout(tmp_path / "m", "x", index_videos=False), "msrvtt_jsfusion_test.pkl",
      "clip") is None


@pytest.mark.parametrize("select", ["first", "nearest", "max_pool"])
def test_reader_long_video_selects_match_the_fixture_checked_numpy(select):
  """'first' = the spec's 'clip' in training too; 'nearest' / 'max_pool' = the evaluation
  strategies, compared with load_fixture.video_features (which reproduces the fixture)."""
  from vlx.models.eao import load_fixture
  rng = np.random.RandomState(3)
  reader = features.from_config(dict(parts=("features_2d", "features_3d"), dims=(5, 6),
                                     max_len=4, normalize=True, key="video", select=select),
                                "inputs.video")
  strategy = "clip" if select == "first" else select
  for n2, n3 in ((7, 11), (20, 13), (3, 9), (2, 3), (9, 4)):
    f2, f3 = rng.randn(n2, 5).astype(np.float32), rng.randn(n3, 6).astype(np.float32)
    for train in (True, False):
      out = reader.read((f2, f3), tf.constant([train, 5], tf.int64), train=train)
      want, mask = load_fixture.video_features(f2, f3, 4, strategy)
      np.testing.assert_allclose(out["video"], want, rtol=1e-5, atol=1e-6, err_msg=(n2, n3))
      np.testing.assert_array_equal(out["video_mask"], mask)


@pytest.mark.parametrize("option", ["max"])
def test_paper_finetuning_config_trains_and_evaluates_on_the_built_release(built, tmp_path,
                                                                           option):
  """configs/eao_msrvtt_ret.py as shipped (its builder, splits, readers, evals with a long-video
  strategy and complete_size 1000) with only the model shrunk and the word2vec folder pointed at
  a tiny vectors file: one training step and the evals run on the built release layout."""
  from conftest import FAST_COMPILE  # pylint: disable=import-outside-toplevel
  from configs import eao_msrvtt_ret  # pylint: disable=import-outside-toplevel
  from vlx import train  # pylint: disable=import-outside-toplevel
  from vlx.models.eao import model as em  # pylint: disable=import-outside-toplevel
  vec = tmp_path / "v.txt"
  vec.write_text("4 2\ncat 1 0\nthe 0 1\nNew_York 1 1\ndog 2 2\n")
  word2vec.convert(vec, tmp_path / "w")
  c = eao_msrvtt_ret.get_config(option)
  tiny = em.model_config("tiny")
  c.model.update(text_dim=2, word_vocab_size=4, hidden=tiny.hidden, depth=1,
                 num_heads=tiny.num_heads, proj_dim=tiny.proj_dim, mlp_ratio=1.0)
  c.model.davenet.widths = tiny.davenet.widths
  c.init.update(from_converted="", word_vectors=os.fspath(tmp_path / "w"))
  c.data.update(data_dir=os.fspath(built["data_dir"]), global_batch_size=8, shuffle_buffer=4,
                tokenizer=f"words:{tmp_path / 'w' / 'vocab.txt'}")
  c.train.update(num_steps=1, ckpt_every=1, log_every=1)
  for e in c.evals.values():
    e.batch_size = 8
  out = train.train_and_evaluate(c, os.fspath(tmp_path / "work"), compiler_options=FAST_COMPILE)
  for mode in ("t2v", "t2va", "t2v+a"):
    name = f"test_{option}_{mode}"
    assert out[f"eval/{name}/num_videos"] == 2, out       # test_1ka: 2 clips present here
    assert out[f"eval/{name}/r10"] <= 100 * 2 / 1000       # R@k over the complete 1000 queries


def test_protocol_2_pickles_of_empty_arrays_and_bytes_load(tmp_path):
  """Python 3 writes b'' (an empty array's buffer) as __builtin__.bytes() in protocol 2."""
  obj = [dict(id="v", **{"2d": np.zeros([0], np.float32), "3d": feats(2, 3)}, raw=b"")]
  for protocol in (2, 3, 4):
    path = tmp_path / f"p{protocol}.pkl"
    dump(obj, path, protocol=protocol)
    got = safe_numpy_pickle.load(path)
    assert got[0]["2d"].shape == (0,) and got[0]["raw"] == b""
    np.testing.assert_array_equal(got[0]["3d"], obj[0]["3d"])

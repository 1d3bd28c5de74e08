"""Per-second CLIP feature datasets (vlx.extract_features, vlx.data.features_extract).

One extraction of moving_shapes/tiny val (16 clips of 8 frames at 8 fps) with the tiny random
tower, at 3 features per second (frames 0, 3, 5 of each clip), serves most tests; its features
are checked against a direct call of the tower on the same decoded frames.
"""
from __future__ import annotations

import os
import re
import shutil

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx import extract_features as cli
from vlx.cli import UsageError
from vlx.data import pipeline, train_stream, video_ops
from vlx.data.features_extract import Settings, extract_split, run, sampling, tower as tower_lib
from vlx.data.tokenize import shards
from vlx.layers import clip

RATE, DIM = 3.0, 32            # features per second; the tiny tower's embedding size
FRAMES = [0, 3, 5]             # nearest of t = 0, 1/3, 2/3 s at 8 fps


@pytest.fixture(scope="module")
def data_dir(tiny_data_dir, tmp_path_factory) -> str:
  """A private data_dir holding a copy of moving_shapes/tiny (the session one stays read-only)."""
  root = tmp_path_factory.mktemp("extract")
  shutil.copytree(os.path.join(tiny_data_dir, "moving_shapes"), root / "moving_shapes")
  return str(root)


@pytest.fixture(scope="module")
def tower() -> tower_lib.Tower:
  return tower_lib.random_tower("tiny", seed=0)


def _settings(data_dir, **kw) -> Settings:
  base = dict(builder="moving_shapes", config="tiny", split="val", data_dir=data_dir,
              features_per_second=RATE, source_fps=8.0, shard_size=6, batch=16,
              tower="tiny seed 0")
  return Settings(**{**base, **kw})


@pytest.fixture(scope="module")
def extracted(data_dir):
  """The CLI run (3 shards of <= 6 clips, batches of 16 frames: several straddle clips)."""
  code = cli.main(["--builder", "moving_shapes", "--config", "tiny", "--split", "val",
                   "--data_dir", data_dir, "--random_clip", "--clip_preset", "tiny",
                   "--features_per_second", "3", "--batch", "16", "--shard_size", "6"])
  assert code == 0
  return pipeline.get_builder("moving_shapes_clip", "tiny_3fps", data_dir)  # opened by name


def _rows(builder, split="val") -> list[dict]:
  skip = {"video": tfds.decode.SkipDecoding()} if "video" in builder.info.features else None
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False, decoders=skip)))


def test_frame_indices_are_the_nearest_per_second():
  assert sampling.frame_indices(8, 8.0, 3.0).tolist() == FRAMES
  assert sampling.frame_indices(8, 8.0, 1.0).tolist() == [0]
  assert sampling.frame_indices(10, 2.0, 1.0).tolist() == [0, 2, 4, 6, 8]
  assert sampling.frame_indices(5, 2.0, 1.0).tolist() == [0, 2, 4]      # 2.5 s -> t = 0, 1, 2
  assert sampling.frame_indices(3, 4.0, 1.0).tolist() == [0]
  assert sampling.frame_indices(1, 2.0, 4.0).tolist() == [0, 0]         # 0.5 s at 4 per s
  last = sampling.frame_indices(300, 29.97, 1.0)
  assert len(last) == 11 and last[-1] == 299 and last[1] == 30          # 10.01 s; round(29.97)
  assert sampling.frame_indices(0, 8.0, 1.0).tolist() == []
  for n, fps, rate in ((8, 8.0, 3.0), (300, 29.97, 1.0), (7, 2.5, 0.5), (1, 8.0, 1.0)):
    got = sampling.tf_frame_indices(tf.constant(n), tf.constant(fps, tf.float64), rate)
    assert got.numpy().tolist() == sampling.frame_indices(n, fps, rate).tolist()


@pytest.mark.parametrize("shape", [(2, 48, 80, 3), (1, 70, 33, 3)])
def test_host_preprocess_is_clips_preprocess(shape):
  """The host resize (short side -> 32, bicubic antialiased) + centre crop = clip.preprocess."""
  frames = np.random.RandomState(0).randint(0, 256, shape).astype(np.uint8)
  got = np.asarray(clip.normalize_images(tower_lib.host_preprocess(frames, 32)))
  np.testing.assert_allclose(got, np.asarray(clip.preprocess(frames, 32)), atol=2e-5)
  assert np.abs(got - np.asarray(clip.preprocess(frames[:, ::-1], 32))).max() > 0.1


def test_source_fps_from_the_builder_or_the_flag(data_dir):
  source = pipeline.get_builder("moving_shapes", "tiny", data_dir)
  assert sampling.source_fps(source, None) == 8.0 and sampling.source_fps(source, 2.5) == 2.5

  class Config:
    fps = 0.0   # a video builder config that keeps every frame

  class Every:
    name, builder_config = "every", Config()

    class info:  # pylint: disable=invalid-name
      features = {"video": None, "orig_fps": None}

  assert sampling.source_fps(Every(), None) == sampling.PER_EXAMPLE

  class Written:   # a dataset opened from its folder: no fps anywhere
    name, builder_config = "written", None

    class info:  # pylint: disable=invalid-name
      features = {"video": None}

  with pytest.raises(UsageError, match=r"^--builder written: .*pass --source_fps"):
    sampling.source_fps(Written(), None)


def test_features_are_the_tower_on_the_nearest_frames(extracted, data_dir, tower, fast_jit):
  source = pipeline.get_builder("moving_shapes", "tiny", data_dir)
  assert set(extracted.info.features) == \
      set(source.info.features) - {"video"} | {"clip_features", "source_index"}
  assert extracted.info.metadata["source_fps"] == 8.0 and \
      extracted.info.metadata["feature_dim"] == DIM
  src, out = _rows(source), _rows(extracted)
  assert len(out) == len(src) == 16
  for i, (a, b) in enumerate(zip(src, out)):
    assert b["source_index"] == i
    for key in ("video_id", "label", "captions", "audio"):
      np.testing.assert_array_equal(a[key], b[key])
    assert b["clip_features"].dtype == np.float32 and b["clip_features"].shape == (3, DIM)
  picks = (0, 5, 6, 15)   # shard edges (6 clips a shard) and batch edges (16 frames)
  frames = np.concatenate([video_ops.decode_frames(tf.constant(src[i]["video"])).numpy()
                           [FRAMES + [1, 2, 7]] for i in picks])
  direct = np.asarray(fast_jit(lambda m, x: m(clip.preprocess(x, 32)))(tower.module, frames)
                      ).reshape(
      len(picks), 6, DIM)   # one direct call: the sampled frames, then three others
  for i, feats in zip(picks, direct):
    np.testing.assert_allclose(out[i]["clip_features"], feats[:3], rtol=1e-4, atol=1e-5)
    assert np.abs(feats[3:] - out[i]["clip_features"]).max() > 1e-3   # the frames matter


def test_loaded_tower_gives_open_clips_image_features(repo_root):
  """--clip FILE: the TorchScript archive of the open_clip fixture (tests/fixtures/clip_tiny,
  4 heads of 16) gives the real encode_image outputs (its inputs are already normalised)."""
  fixture = repo_root / "tests" / "fixtures" / "clip_tiny"
  t = tower_lib.loaded_tower(str(fixture / "checkpoint_jit.pt"), "openai", head_width=16)
  images = np.load(fixture / "inputs.npz")["images"]
  pixels = images * np.asarray(clip.IMAGE_STD, np.float32) + np.asarray(clip.IMAGE_MEAN,
                                                                         np.float32)
  assert (t.size, t.dim) == (32, 24) and "checkpoint_jit.pt sha1 " in t.description
  np.testing.assert_allclose(np.asarray(t.fn(pixels)),
                             np.load(fixture / "outputs.npz")["image_features"], atol=1e-4,
                             rtol=1e-4)


def test_resume_after_a_kill_equals_an_uninterrupted_run(extracted, data_dir, tower):
  s = _settings(data_dir, out_builder="killed_clip", tower=tower.description)
  with pytest.raises(run.StopAfter):
    extract_split(s, tower, stop_after_shards=2, echo=lambda _: None)
  folder = os.path.join(data_dir, "killed_clip.work", "tiny_3fps", "val")
  assert sorted(f for f in os.listdir(folder) if f.startswith("shard")) == \
      ["shard-00000.npz", "shard-00001.npz"]
  with open(os.path.join(folder, "shard-00002.npz.tmp999.npz"), "wb") as f:
    f.write(b"half written")   # what a kill during a write leaves behind
  lines = []
  resumed = extract_split(s, tower, echo=lines.append)
  assert "1 shard(s) to compute (4 examples)" in lines[0]
  for a, b in zip(_rows(extracted), _rows(resumed)):
    assert a.keys() == b.keys()
    np.testing.assert_array_equal(a["clip_features"], b["clip_features"])
    np.testing.assert_array_equal(a["video_id"], b["video_id"])
  other = _settings(data_dir, out_builder="killed_clip", tower="another tower")
  with pytest.raises(shards.WorkDirMismatch, match=r"other settings \(tower: "):
    extract_split(other, tower, echo=lambda _: None)


def test_training_stream_reads_the_features(extracted, data_dir):
  """data.train.builder='moving_shapes_clip' with a `features` reader: each row's `video` is the
  L2-normalised stored features of the clip it names, zero padded to max_len."""
  from configs import common  # pylint: disable=import-outside-toplevel
  c = common.base_config()
  c.data.update(data_dir=data_dir, global_batch_size=4, shuffle_buffer=8,
                tokenizer="moving_shapes")
  c.data.train.update(builder="moving_shapes_clip", builder_config="tiny_3fps", split="val",
                      max_text_len=16)
  c.data.train.inputs = ml_collections.ConfigDict(dict(video=dict(
      reader="features", feature="clip_features", dim=DIM, max_len=4, normalize=True)))
  # pylint: disable-next=protected-access
  ds = train_stream._train_dataset(c, process_index=0, process_count=1, extra_keys=("video_id",))
  batch = next(ds.as_numpy_iterator())
  stored = {r["video_id"]: r["clip_features"] for r in _rows(extracted)}
  assert batch["video"].shape == (4, 4, DIM)
  np.testing.assert_array_equal(batch["video_mask"], [[1, 1, 1, 0]] * 4)
  for vid, row in zip(batch["video_id"], batch["video"]):
    want = stored[vid] / np.linalg.norm(stored[vid], axis=-1, keepdims=True)
    np.testing.assert_allclose(row[:3], want, rtol=1e-5, atol=1e-6)
    assert not row[3].any()


@pytest.mark.parametrize("args, message", [
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "val", "--data_dir",
      "{D}/nope", "--random_clip"], r"--data_dir .*/nope: no such folder"),
    (["--builder", "msrvtt", "--split", "test", "--data_dir", "{D}", "--random_clip"],
     r"dataset 'msrvtt' .*is not built in"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "tran", "--data_dir", "{D}",
      "--random_clip"], r"--split='tran': dataset 'moving_shapes' .* has splits \["),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "val", "--data_dir", "{D}",
      "--clip", "{D}/ViT-B-32.pt"], r"--clip .*/ViT-B-32.pt: no such file"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "val", "--data_dir", "{D}",
      "--random_clip", "--clip_preset", "huge"], r"--clip_preset='huge': expected one of"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "val", "--data_dir", "{D}",
      "--random_clip", "--features_per_second", "0"], r"--features_per_second=0.0: must be > 0"),
    (["--builder", "moving_shapes_clip", "--config", "tiny_3fps", "--split", "val",
      "--data_dir", "{D}", "--random_clip", "--feature", "clip_features"],
     r"--builder moving_shapes_clip: already has a feature '"),
])
def test_cli_bad_input_is_one_line_exit_2(extracted, data_dir, capsys, args, message):
  del extracted   # a written feature dataset as a source
  capsys.readouterr()
  code = cli.main([a.replace("{D}", data_dir) for a in args])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1, err
  assert err.startswith("python -m vlx.extract_features: error: ")
  assert re.search(message, err), err

"""Token datasets (vlx.tokenize, vlx.data.tokenize) and the token_grid reader's frame alignment.

The dVAE is replaced by a deterministic stand-in token function (code = the rounded mean of each
8x8 cell, a function of the frame's content) wherever the test is about the data path; the
real encoder runs at a reduced width in `test_cli_random_dvae_encoder`.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from vlx import tokenize as cli
from vlx.data import eval_stream, modalities, pipeline, train_stream, video_ops
from vlx.data.tokenize import Settings, frames as frames_lib, output_names, run, shards
from vlx.data.tokenize.encoder import Encoder


def _standin_codes(pixels):
  """[N, P, P, 3] in [0, 1] -> int32 [N, P/8, P/8]: rounded 8x8 cell means (deterministic)."""
  n, p = pixels.shape[0], pixels.shape[1]
  g = p // 8
  cells = pixels.reshape(n, g, 8, g, 8, 3).mean((2, 4, 5))
  return jnp.round(cells * 1000).astype(jnp.int32)


class CountingEncoder:
  """The stand-in, jitted, counting the batches it encodes."""

  def __init__(self):
    self.calls = 0
    self._fn = jax.jit(_standin_codes)

  def __call__(self, pixels):
    self.calls += 1
    return self._fn(pixels)

  def encoder(self) -> Encoder:
    return Encoder(self, "stand-in", 8192)


@pytest.fixture()
def data_dir(tiny_data_dir, tmp_path) -> str:
  """A private data_dir holding a copy of moving_shapes/tiny (the session one stays read-only)."""
  shutil.copytree(os.path.join(tiny_data_dir, "moving_shapes"), tmp_path / "moving_shapes")
  return str(tmp_path)


def _settings(data_dir, **kw) -> Settings:
  base = dict(builder="moving_shapes", config="tiny", split="train,val", data_dir=data_dir,
              shard_size=24, batch=12, encoder="stand-in")
  return Settings(**{**base, **kw})


def _rows(builder, split) -> list[dict]:
  skip = {"video": tfds.decode.SkipDecoding()} if "video" in builder.info.features else None
  ds = builder.as_dataset(split=split, shuffle_files=False, decoders=skip)
  return list(tfds.as_numpy(ds))


def test_token_dataset_keeps_source_order_ids_and_fields(data_dir):
  out = run.tokenize_split(_settings(data_dir), CountingEncoder().encoder(), echo=lambda _: None)
  read = pipeline.get_builder("moving_shapes_vq", "tiny", data_dir)  # the pipeline opens it
  assert read.name == "moving_shapes_vq" and read.info.full_name == out.info.full_name
  source = pipeline.get_builder("moving_shapes", "tiny", data_dir)
  assert set(read.info.features) == set(source.info.features) | {"vq_tokens", "source_index"}
  assert read.info.features["label"].names == source.info.features["label"].names
  for split in ("train", "val"):
    src, tok = _rows(source, split), _rows(read, split)
    assert len(tok) == len(src) == source.info.splits[split].num_examples
    for i, (a, b) in enumerate(zip(src, tok)):
      assert b["source_index"] == i
      for key in ("video_id", "label", "captions", "mc_answer", "video"):
        np.testing.assert_array_equal(a[key], b[key])   # frames copied byte for byte
      assert b["vq_tokens"].dtype == np.int16 and b["vq_tokens"].shape == (8, 7, 7)
    # the codes of each example's own frames, whatever batch / shard boundary they straddled
    s = _settings(data_dir)
    for i in sorted({0, 11, 12, 23, 24, len(src) - 1} & set(range(len(src)))):
      pixels = frames_lib.pixels(tf.constant(src[i]["video"]), s).numpy()
      np.testing.assert_array_equal(tok[i]["vq_tokens"], np.asarray(_standin_codes(pixels)))
  assert "test" not in read.info.splits  # only the asked splits
  assert read.info.metadata["is_image"] is False and not pipeline.is_image_dataset(read)


def test_resume_after_a_kill_equals_an_uninterrupted_run(data_dir):
  whole = run.tokenize_split(_settings(data_dir, out_builder="whole_vq"),
                             CountingEncoder().encoder(), echo=lambda _: None)
  s = _settings(data_dir, out_builder="killed_vq")
  first = CountingEncoder()
  with pytest.raises(run.StopAfter):
    run.tokenize_split(s, first.encoder(), stop_after_shards=2, echo=lambda _: None)
  folder = os.path.join(data_dir, "killed_vq.work", "tiny", "train")
  assert sorted(f for f in os.listdir(folder) if f.startswith("shard")) == \
      ["shard-00000.npz", "shard-00001.npz"]
  with open(os.path.join(folder, "shard-00002.npz.tmp999.npz"), "wb") as f:
    f.write(b"half written")  # what a kill during a write leaves behind
  second = CountingEncoder()
  resumed = run.tokenize_split(s, second.encoder(), echo=lambda _: None)
  # 64 train clips x 8 frames in 24-clip shards (192, 192, 128 frames), batches of 12: the
  # killed run did shards 0-1 (2 x 16 batches); the resumed one shard 2 (11) and val (11)
  assert (first.calls, second.calls) == (32, 22)
  assert not any(".tmp" in f for f in os.listdir(folder))
  for split in ("train", "val"):
    a, b = _rows(whole, split), _rows(resumed, split)
    assert len(a) == len(b)
    for x, y in zip(a, b):
      assert x.keys() == y.keys()
      for k in x:
        if isinstance(x[k], dict):
          for kk in x[k]:
            np.testing.assert_array_equal(x[k][kk], y[k][kk])
        else:
          np.testing.assert_array_equal(x[k], y[k])


def test_other_settings_are_refused_then_overwrite(data_dir):
  s = _settings(data_dir, split="val")
  run.tokenize_split(s, CountingEncoder().encoder(), echo=lambda _: None)
  other = dataclasses.replace(s, encoder="another encoder")
  with pytest.raises(shards.WorkDirMismatch, match=r"other settings \(encoder: 'stand-in' -> "):
    run.tokenize_split(other, CountingEncoder().encoder(), echo=lambda _: None)
  again = CountingEncoder()
  run.tokenize_split(other, again.encoder(), overwrite=True, echo=lambda _: None)
  assert again.calls == 11  # 16 examples x 8 frames in batches of 12: all redone


def test_workers_share_the_shards_and_the_last_one_writes(data_dir):
  s = _settings(data_dir, split="val", shard_size=4)   # 4 shards of 4 clips (32 frames)
  first, second = CountingEncoder(), CountingEncoder()
  assert run.tokenize_split(s, first.encoder(), worker=(0, 2), echo=lambda _: None) is None
  built = run.tokenize_split(s, second.encoder(), worker=(1, 2), echo=lambda _: None)
  assert first.calls == second.calls == 6   # shards 0, 2 / 1, 3: 3 batches of 12 frames each
  assert [r["source_index"] for r in _rows(built, "val")] == list(range(16))


def test_no_frames_and_a_view_get_their_own_config(data_dir):
  s = _settings(data_dir, split="val", keep_frames=False, grid=2, fit="crop", hflip=True)
  built = run.tokenize_split(s, CountingEncoder().encoder(), echo=lambda _: None)
  assert built.name == "moving_shapes_vq"
  assert built.builder_config.name == "tiny_g2_crop16center_flip"
  row = _rows(built, "val")[0]
  assert "video" not in row and row["vq_tokens"].shape == (8, 2, 2)


def test_views_record_holds_the_single_view_runs_in_order(data_dir):
  """`--views`: one record per video, vq_tokens [V, T, g, g]; view v is exactly the tokens of the
  single-view run of that view (flip-major, then crop, then scale), through a kill and resume,
  shards and batches that cut through the views of an example."""
  kw = dict(split="val", keep_frames=False, grid=2, fit="crop", shard_size=6, batch=10)
  multi = _settings(data_dir, views="crop3_flip2_scale2", **kw)   # parts in any order
  with pytest.raises(run.StopAfter):
    run.tokenize_split(multi, CountingEncoder().encoder(), stop_after_shards=1,
                       echo=lambda _: None)
  built = run.tokenize_split(multi, CountingEncoder().encoder(), echo=lambda _: None)
  assert built.builder_config.name == "tiny_g2_flip2_crop3_scale2"
  order = [(f, c, s) for f in (False, True) for c in ("top", "center", "bottom") for s in (16, 20)]
  assert built.info.metadata["view_list"] == [f"hflip={int(f)} crop_at={c} short_side={s}"
                                              for f, c, s in order]
  assert built.info.metadata["views"] == "flip2_crop3_scale2"
  rows = _rows(built, "val")
  assert len(rows) == 16 and [r["source_index"] for r in rows] == list(range(16))
  assert rows[0]["vq_tokens"].dtype == np.int16 and rows[0]["vq_tokens"].shape == (12, 8, 2, 2)
  singles = [_settings(data_dir, hflip=f, crop_at=c, short_side=s, **kw) for f, c, s in order]
  # view 9 (flipped, bottom, short side 20) by a whole single-view run ...
  whole = run.tokenize_split(singles[9], CountingEncoder().encoder(), echo=lambda _: None)
  for row, ref in zip(rows, _rows(whole, "val"), strict=True):
    np.testing.assert_array_equal(row["vq_tokens"][9], ref["vq_tokens"])
  # ... every view by the single-view frames (frames_lib.pixels) and codes of each video
  single_views = tf.function(lambda x: tf.stack([frames_lib.pixels(x, s) for s in singles]))
  fn = CountingEncoder()
  source = _rows(pipeline.get_builder("moving_shapes", "tiny", data_dir), "val")
  for row, ex in zip(rows, source, strict=True):
    pixels = single_views(tf.constant(ex["video"])).numpy()     # [12, T, P, P, 3]
    codes = np.asarray(fn(pixels.reshape(-1, *pixels.shape[2:]))).reshape(12, -1, 2, 2)
    np.testing.assert_array_equal(row["vq_tokens"], codes)
  # the views really differ (square 32 px frames: at short side 16 the three crops coincide)
  distinct = {np.stack([r["vq_tokens"][v] for r in rows]).tobytes() for v in range(12)}
  assert len(distinct) == 8


def test_views_names_and_fingerprint():
  base = dict(builder="b", config="split1", split="train", data_dir="D", grid=16, fit="crop")
  assert cli.parser().parse_args(["--builder", "b", "--split", "s", "--data_dir", "D",
                                  "--random_encoder"]).views == ""
  for spec, n, name in (("crop3", 3, "split1_g16_crop3"), ("center", 1, "split1_g16_center"),
                        ("scale2_crop3", 6, "split1_g16_crop3_scale2")):
    s = Settings(**base, views=spec)
    assert len(s.view_list) == n and output_names(s) == ("b_vq", name)
    assert s.fingerprint()["views"] == name.split("_g16_")[1]
  assert [v.short_side for v in Settings(**base, views="scale2").view_list] == [128, 160]
  assert "views" not in Settings(**base).fingerprint()   # single-view shards keep their settings


@pytest.mark.parametrize("extra, message", [
    (["--fit", "crop", "--views", "crop4"], r"--views='crop4': unknown part 'crop4'; expected "),
    (["--fit", "crop", "--views", "crop3_center"],
     r"--views='crop3_center': 'crop3' and 'center' both set the crop views"),
    (["--fit", "crop", "--views", "flip2__crop3"], r"unknown part ''"),
    (["--views", "crop3"], r"--views='crop3' needs --fit crop \(got --fit pad\)"),
    (["--fit", "crop", "--views", "crop3", "--crop_at", "top", "--hflip"],
     r"--views='crop3' sets the views itself; drop --crop_at, --hflip"),
])
def test_cli_bad_views_is_one_line_exit_2(data_dir, capsys, extra, message):
  code, err = _cli(["--builder", "moving_shapes", "--config", "tiny", "--split", "val",
                    "--data_dir", data_dir, "--random_encoder", *extra], capsys)
  assert code == 2 and len(err.splitlines()) == 1, err
  assert err.startswith("python -m vlx.tokenize: error: ")
  assert __import__("re").search(message, err), err


def test_pad_to_square_as_str2img():
  wide = tf.ones([1, 2, 7, 3], tf.uint8)
  out = frames_lib.pad_to_square(wide).numpy()[0, :, :, 0]
  assert out.shape == (6, 7)  # (7 - 2) // 2 = 2 rows of zeros on each side (odd pixel squashed)
  np.testing.assert_array_equal(out[:, 0], [0, 0, 1, 1, 0, 0])
  tall = frames_lib.pad_to_square(tf.ones([1, 6, 2, 3], tf.uint8)).numpy()[0, :, :, 0]
  np.testing.assert_array_equal(tall[0], [0, 0, 1, 1, 0, 0])


def test_crop_view_offsets():
  x = tf.reshape(tf.range(4 * 8, dtype=tf.float32), [1, 4, 8, 1])
  for at, left in (("top", 0), ("center", 2), ("bottom", 4)):
    got = frames_lib.crop_view(x, 4, 4, at).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(got, np.arange(left, left + 4))


# ------------------------------------------------------------------ frames / tokens alignment

def _jpeg(level: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.full([16, 16, 3], level, np.uint8)).save(buf, format="JPEG", quality=100)
  return buf.getvalue()


def _block(sampling: str, num_frames: int = 4) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      num_frames=num_frames, sampling=sampling, resolution=8, norm="imagenet",
      inputs=dict(video=dict(reader="frames"),
                  vq_tokens=dict(reader="token_grid", height=2, width=2, align_with="video"))))


# the streams' own per-row input reading (their seeds and views), not a copy of it
train_read = train_stream._read_inputs  # pylint: disable=protected-access
eval_read = eval_stream._read_inputs  # pylint: disable=protected-access


def _frame_index(video: np.ndarray) -> np.ndarray:
  """Index i of solid frames of grey level 20 * i, from the normalised video [..., T, S, S, 3]."""
  mean, std = (np.asarray(v, np.float32) for v in video_ops.NORMS["imagenet"])
  pixels = (video * std + mean) * 255.0
  return np.round(pixels.mean(axis=(-3, -2, -1)) / 20.0).astype(int)


@pytest.mark.parametrize("sampling", ["", "rand", "headtail", "uniform", "segment_rand",
                                      "segment_middle"])
@pytest.mark.parametrize("length", [11, 3])
def test_aligned_tokens_are_those_of_the_sampled_frames(sampling, length):
  ex = {"video": tf.constant([_jpeg(20 * i) for i in range(length)]),
        "vq_tokens": tf.constant(np.broadcast_to(np.arange(length)[:, None, None],
                                                 [length, 2, 2]).astype(np.int16))}
  readers = modalities.make_readers(_block(sampling), "data.train")
  assert readers["vq_tokens"].num_frames == 4 and readers["vq_tokens"].sampling == sampling
  seen = set()
  for counter in range(6):
    seed = tf.constant([7, counter], tf.int64)
    for row in (train_read(readers, ex, seed), eval_read(readers, ex, seed, 0)):
      idx = _frame_index(row["video"].numpy())
      np.testing.assert_array_equal(row["vq_tokens"].numpy()[:, 0, 0], idx)
      np.testing.assert_array_equal(row["vq_mask"].numpy(), 1)
      seen.add(tuple(idx))
    views = eval_read(readers, ex, seed, 2)
    np.testing.assert_array_equal(views["vq_tokens"].numpy()[:, :, 0, 0],
                                  _frame_index(views["video"].numpy()))
  if sampling in ("", "rand", "segment_rand") and length == 11:
    assert len(seen) > 2  # the draws really vary with the seed (the check could fail)


def test_align_with_needs_a_frames_input_and_stride_1():
  block = _block("rand")
  block.inputs.vq_tokens.align_with = "audio"
  with pytest.raises(ValueError, match=r"align_with='audio': not a frames input"):
    modalities.make_readers(block, "data.train")
  block = _block("rand")
  block.inputs.vq_tokens.stride = 2
  with pytest.raises(ValueError, match=r"stride: must be 1 with align_with"):
    modalities.make_readers(block, "data.train")


# ------------------------------------------------------------------ command line

def _cli(argv, capsys) -> tuple[int, str]:
  code = cli.main(argv)
  return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args, message", [
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "train", "--data_dir",
      "{D}/nope", "--random_encoder"], r"--data_dir .*/nope: no such folder"),
    (["--builder", "moving_shape", "--split", "train", "--data_dir", "{D}", "--random_encoder"],
     r"no dataset builder data_builders/moving_shape/.*nearest: moving_shapes"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "tran", "--data_dir", "{D}",
      "--random_encoder"], r"--split='tran': dataset 'moving_shapes' .* has splits \["),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "train", "--data_dir", "{D}",
      "--encoder", "{D}/no_encoder"], r"--encoder .*/no_encoder: no such folder"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "train", "--data_dir", "{D}",
      "--random_encoder", "--fit", "stretch"], r"--fit='stretch': expected one of"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "train", "--data_dir", "{D}",
      "--random_encoder", "--num_workers", "2", "--worker_index", "2"],
     r"--worker_index=2 must be in \[0, --num_workers=2\)"),
    (["--builder", "moving_shapes_vq", "--config", "tiny", "--split", "val", "--data_dir", "{D}",
      "--random_encoder", "{TOKENS}"], r"--builder moving_shapes_vq: already has a feature"),
    (["--builder", "moving_shapes", "--config", "tiny", "--split", "val", "--data_dir", "{D}",
      "--random_encoder", "--feature", "frames"], r"--feature='frames': dataset 'moving_shapes' "
                                                  r"has no such feature"),
])
def test_cli_bad_input_is_one_line_exit_2(data_dir, capsys, args, message):
  if "{TOKENS}" in args:  # a token dataset as the source
    run.tokenize_split(_settings(data_dir, split="val"), CountingEncoder().encoder(),
                       echo=lambda _: None)
    args = [a for a in args if a != "{TOKENS}"]
    capsys.readouterr()
  code, err = _cli([a.replace("{D}", data_dir) for a in args], capsys)
  assert code == 2 and len(err.splitlines()) == 1, err
  assert err.startswith("python -m vlx.tokenize: error: ")
  assert __import__("re").search(message, err), err


def test_cli_random_dvae_encoder(data_dir, capsys):
  pytest.importorskip("vlx.layers.dvae", reason="the dVAE layer (helper H2) has not landed yet")
  small = json.dumps(dict(n_hid=64, n_blk_per_group=1, vocab_size=512))
  code = cli.main(["--builder", "moving_shapes", "--config", "tiny", "--split", "val",
                   "--data_dir", data_dir, "--random_encoder", "--random_encoder_config", small,
                   "--grid", "1", "--batch", "32", "--dtype", "bfloat16", "--compare_fp32"])
  out = capsys.readouterr()
  assert code == 0, out.err
  assert "random dVAE weights" in out.err
  assert "bfloat16 vs float32 on 32 frames: " in out.out
  rows = _rows(pipeline.get_builder("moving_shapes_vq", "tiny_g1_pad", data_dir), "val")
  codes = np.stack([r["vq_tokens"] for r in rows])
  assert codes.shape == (16, 8, 1, 1) and codes.min() >= 0 and codes.max() < 512


def test_training_batch_reads_frames_and_their_tokens(data_dir):
  """A token dataset read by the training stream: `video` (frames reader) and `vq_tokens`
  (token_grid, align_with='video') of one row are the same frames: the stand-in codes of the
  batch's own (de-normalised) frames equal its vq_tokens."""
  from configs import common  # pylint: disable=import-outside-toplevel
  run.tokenize_split(_settings(data_dir, split="train"), CountingEncoder().encoder(),
                     echo=lambda _: None)
  c = common.base_config()
  c.data.update(data_dir=data_dir, global_batch_size=8, shuffle_buffer=16,
                tokenizer="moving_shapes")
  c.data.train.update(builder="moving_shapes_vq", builder_config="tiny", num_frames=3,
                      resolution=56, norm="imagenet", max_text_len=16)
  c.data.train.inputs = ml_collections.ConfigDict(dict(
      video=dict(reader="frames"),
      vq_tokens=dict(reader="token_grid", height=7, width=7, align_with="video")))
  # pylint: disable-next=protected-access
  ds = train_stream._train_dataset(c, process_index=0, process_count=1)
  batch = next(ds.as_numpy_iterator())
  assert batch["vq_tokens"].shape == (8, 3, 7, 7) and batch["vq_mask"].all()
  mean, std = (np.asarray(v, np.float32) for v in video_ops.NORMS["imagenet"])
  pixels = (batch["video"] * std + mean).reshape(24, 56, 56, 3)
  codes = np.asarray(_standin_codes(pixels)).reshape(8, 3, 7, 7)
  assert np.abs(codes - batch["vq_tokens"]).max() <= 1   # float rounding of the normalisation
  shifted = np.roll(batch["vq_tokens"], 1, axis=1)        # the check can fail: frames differ
  assert np.abs(codes - shifted).max() > 1


def test_converted_encoder_gives_the_reference_codes(reference_dir, data_dir, tmp_path, capsys):
  """`--encoder DIR` = `python -m vlx.convert` of the reference's pickled dall_e Encoder
  (tiny_dalle): its codes are the fixture's tokens; the CLI tokenizes with it, bf16 compared."""
  from vlx.convert.__main__ import main as convert  # pylint: disable=import-outside-toplevel
  from vlx.data.tokenize import encoder  # pylint: disable=import-outside-toplevel
  fixture = reference_dir / "violet" / "tiny_dalle"
  out = str(tmp_path / "encoder")
  assert convert(["--family", "violet", "--checkpoint", str(fixture / "encoder.pkl"),
                  "--out", out]) == 0
  enc = encoder.converted_encoder(out)
  pixels = np.load(fixture / "inputs.npz")["pixels"].transpose(0, 2, 3, 1)
  np.testing.assert_array_equal(np.asarray(enc.fn(pixels)),
                                np.load(fixture / "outputs.npz")["tokens"])
  capsys.readouterr()
  code = cli.main(["--builder", "moving_shapes", "--config", "tiny", "--split", "val",
                   "--data_dir", data_dir, "--encoder", out, "--grid", "4", "--batch", "64",
                   "--dtype", "bfloat16", "--compare_fp32"])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  assert "bfloat16 vs float32 on 64 frames: " in printed.out and "WARNING" not in printed.err
  built = pipeline.get_builder("moving_shapes_vq", "tiny_g4_pad", data_dir)
  assert built.info.metadata["dtype"] == "bfloat16" and "converted(" in \
      built.info.metadata["encoder"]
  codes = np.stack([r["vq_tokens"] for r in _rows(built, "val")])
  assert codes.shape == (16, 8, 4, 4) and codes.max() < 512 and len(np.unique(codes)) > 5


def test_image_datasets_stay_image_datasets_through_metadata():
  class Info:  # a written dataset's info: what run.tokenize_split stores for an image source
    metadata = {"is_image": True}

  class Written:
    info = Info()

  assert pipeline.is_image_dataset(Written())

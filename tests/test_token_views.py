"""Token-grid clips and evaluation views (spec §1.5-1.7) and the frame_tokens reader.

The reference fixture (shared/reference/vimpac/tiny) gives per-crop token arrays and the
evaluation batch the reference code built from them (stride 2, 3 crops x 2 uniform clips).
"""
from __future__ import annotations

import io

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from vlx.data import eval_stream
from vlx.data.errors import DataConfigError
from vlx.data.modalities import frame_tokens, make_reader, token_grid

PAD = 8193
SEED = tf.constant([3, 4], tf.int64)
_TRACED = {}


def _read(reader, x, *, train=False, seed=SEED, view=0):
  """reader.read in graph mode on an input whose frame axis has unknown length (as TFDS decodes
  it), as numpy; outputs checked against reader.spec()."""
  x = np.asarray(x)
  shape = list(x.shape)
  shape[1 if getattr(reader, "spatial_views", 0) else 0] = None
  spec = tf.TensorSpec(shape, tf.as_dtype(x.dtype))
  key = (reader, train, view, spec)
  if key not in _TRACED:
    _TRACED[key] = tf.function(lambda v, s: reader.read(v, s, train=train, view=view),
                               input_signature=[spec, tf.TensorSpec([2], tf.int64)])
  out = {k: v.numpy() for k, v in _TRACED[key](x, seed).items()}
  for k, (want, dtype) in reader.spec().items():
    assert out[k].shape == want and out[k].dtype == dtype, k
  return out


def _ramp(length, views=0, hw=(2, 3)):
  """int16 [T, H, W] (or [V, T, H, W]) grid: every code is its frame index (+ 100 x its view)."""
  t = np.arange(length, dtype=np.int16)[:, None, None] * np.ones(hw, np.int16)
  return np.stack([t + 100 * v for v in range(views)]) if views else t


# ----------------------------------------------------------------------------- reference views

@pytest.fixture(scope="module")
def reference(reference_dir):
  return dict(np.load(reference_dir / "vimpac" / "tiny" / "inputs.npz"))


def test_eval_views_reproduce_the_reference_ft_codes(reference):
  """stride 2, 3 spatial views x 2 uniform clips: bit-exactly the reference's evaluation batch,
  read view by view and through eval_stream's whole-view hook."""
  reader = token_grid.from_config(dict(num_frames=4, height=6, width=6, stride=2, pad_id=PAD,
                                       spatial_views=3, test_clips=2), "inputs.vq_tokens")
  assert reader.reads_whole_views and reader.num_views == 6
  want = reference["ft_codes"]                       # [B, views, L, H, W], crop-major
  read_views = tf.function(lambda g: eval_stream._read_inputs(  # pylint: disable=protected-access
      {"vq_tokens": reader}, {"vq_tokens": g}, SEED, 6),
                           input_signature=[tf.TensorSpec([3, None, 6, 6], tf.int16)])
  for i in range(want.shape[0]):
    crops = np.stack([reference[f"ft_video{i}_crop{c}_tokens"] for c in range(3)]).astype(np.int16)
    for v in range(6):
      got = _read(reader, crops, view=v)
      np.testing.assert_array_equal(got["vq_tokens"], want[i, v])
    stream = {k: t.numpy() for k, t in read_views(crops).items()}
    np.testing.assert_array_equal(stream["vq_tokens"], want[i])
    real = min(crops.shape[1] // 2 + crops.shape[1] % 2, 4)   # frames 0, 2, ... of T
    np.testing.assert_array_equal(stream["vq_mask"], np.tile(np.arange(4) < real, (6, 1)))
  assert (want[1][:, 2:] == PAD).all()                    # the 3-frame video is PAD-padded


def test_reference_pretraining_clips_from_their_starts(reference):
  """clips=2 slices each clip as the reference did given its start (the draws are Python
  `random`'s; ours are stateless): pretrain_codes from pretrain_clip_starts."""
  reader = token_grid.from_config(dict(num_frames=3, height=4, width=4, pad_id=PAD, clips=2),
                                  "inputs.vq_tokens")
  for i, starts in enumerate(reference["pretrain_clip_starts"]):
    grid = tf.constant(reference[f"pretrain_video{i}_tokens"].astype(np.int16))
    for c, start in enumerate(starts):
      # pylint: disable-next=protected-access
      codes, _ = reader._clip(reader._checked(grid), tf.constant(int(start)))
      np.testing.assert_array_equal(codes.numpy(), reference["pretrain_codes"][i, c])


# ----------------------------------------------------------------------------- clips

def test_two_training_clips_are_independent_in_range_and_seeded():
  reader = token_grid.from_config(dict(num_frames=3, height=2, width=3, clips=2, pad_id=PAD),
                                  "inputs.vq_tokens")
  grid = _ramp(10)                                        # delta = 10 - 3 = 7
  pairs = []
  for i in range(60):
    seed = tf.constant([i, 5], tf.int64)
    got = _read(reader, grid, train=True, seed=seed)
    assert got["vq_tokens"].shape == (2, 3, 2, 3) and got["vq_mask"].all()
    starts = got["vq_tokens"][:, 0, 0, 0]
    for clip, start in zip(got["vq_tokens"], starts):
      np.testing.assert_array_equal(clip[:, 1, 2], start + np.arange(3))
    pairs.append(tuple(int(s) for s in starts))
    again = _read(reader, grid, train=True, seed=seed)
    np.testing.assert_array_equal(again["vq_tokens"], got["vq_tokens"])
  firsts, seconds = zip(*pairs)
  assert set(firsts) == set(seconds) == set(range(8))     # uniform over [0, delta] inclusive
  assert sum(a == b for a, b in pairs) < 20               # not the same draw twice
  assert len(set(pairs)) > 30                             # (60 draws of 64 equally likely pairs)


def test_short_videos_are_pad_padded_per_clip():
  reader = token_grid.from_config(dict(num_frames=4, height=2, width=3, clips=2, stride=2,
                                       pad_id=PAD), "inputs.vq_tokens")
  for train in (True, False):
    got = _read(reader, _ramp(3), train=train)            # frames 0, 2 then PAD
    np.testing.assert_array_equal(got["vq_tokens"][:, :, 0, 0], [[0, 2, PAD, PAD]] * 2)
    np.testing.assert_array_equal(got["vq_mask"], [[1, 1, 0, 0]] * 2)


def test_eval_clips_are_the_uniform_test_clips():
  """clips=2 in evaluation: the first clip starts at 0 and the last ends at the video end; with
  test_clips=2, view k holds the clips 2k, 2k + 1 of 4."""
  grid = _ramp(11)                                        # delta = 11 - 3 = 8
  two = token_grid.from_config(dict(num_frames=3, height=2, width=3, clips=2), "x")
  np.testing.assert_array_equal(_read(two, grid)["vq_tokens"][:, 0, 0, 0], [0, 8])
  four = token_grid.from_config(dict(num_frames=3, height=2, width=3, clips=2, test_clips=2), "x")
  assert four.num_views == 2
  np.testing.assert_array_equal(_read(four, grid, view=0)["vq_tokens"][:, 0, 0, 0], [0, 2])
  np.testing.assert_array_equal(_read(four, grid, view=1)["vq_tokens"][:, 0, 0, 0], [5, 8])


def test_training_reads_one_spatial_view_chosen_by_the_seed():
  reader = token_grid.from_config(dict(num_frames=3, height=2, width=3, spatial_views=3),
                                  "inputs.vq_tokens")
  grid = _ramp(6, views=3)
  chosen = set()
  for i in range(30):
    got = _read(reader, grid, train=True, seed=tf.constant([i, 1], tf.int64))["vq_tokens"]
    view, start = divmod(int(got[0, 0, 0]), 100)
    np.testing.assert_array_equal(got[:, 1, 1], 100 * view + start + np.arange(3))
    chosen.add(view)
  assert chosen == {0, 1, 2}


def test_defaults_keep_the_stream_windows():
  """The default reader is not a whole-view reader: eval_stream still cuts temporal windows."""
  reader = token_grid.from_config(dict(num_frames=2, height=2, width=3), "inputs.vq_tokens")
  assert not reader.reads_whole_views and reader.spec()["vq_tokens"][0] == ((2, 2, 3))
  out = eval_stream._read_inputs({"vq_tokens": reader},  # pylint: disable=protected-access
                                 {"vq_tokens": tf.constant(_ramp(9))}, SEED, 3)
  np.testing.assert_array_equal(out["vq_tokens"].numpy()[:, :, 0, 0], [[0, 1], [3, 4], [6, 7]])


# ----------------------------------------------------------------------------- frame_tokens

def _png(frame):
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="PNG")
  return buf.getvalue()


def _numpy_codes(frames, grid, levels):
  """The documented quantisation, for frames already (grid * 8) square: mean colour of each 8x8
  patch, floor(mean * levels / 256) per channel, id = r * levels^2 + g * levels + b."""
  t = frames.shape[0]
  means = frames.astype(np.float64).reshape(t, grid, 8, grid, 8, 3).mean(axis=(2, 4))
  q = np.floor(means * levels / 256).astype(np.int64)
  return q[..., 0] * levels ** 2 + q[..., 1] * levels + q[..., 2]


def test_frame_tokens_are_quantised_patch_colours():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, size=(5, 24, 24, 3), dtype=np.uint8)
  frames[:, :8, :8] = [255, 0, 128]                       # patch (0, 0): a known colour
  encoded = np.array([_png(f) for f in frames], dtype=object)
  reader = make_reader("frame_tokens", dict(grid=3, num_frames=4, stride=1, levels=5, pad_id=125),
                       "inputs.vq_tokens")
  assert isinstance(reader, frame_tokens.FrameTokens) and reader.decoder() is not None
  want = _numpy_codes(frames, 3, 5)
  got = _read(reader, encoded)                            # eval: frames 0..3
  np.testing.assert_array_equal(got["vq_tokens"], want[:4])
  assert (got["vq_tokens"][:, 0, 0] == 4 * 25 + 0 * 5 + 2).all() and got["vq_tokens"].max() < 125
  short = _read(reader, encoded[:2], train=True)
  np.testing.assert_array_equal(short["vq_tokens"][:2], want[:2])
  assert (short["vq_tokens"][2:] == 125).all() and short["vq_mask"].tolist() == [1, 1, 0, 0]
  # Any frame size is resized to grid * 8 first: a plain colour stays that colour's code.
  plain = np.zeros((1, 30, 52, 3), np.uint8) + np.array([64, 200, 10], np.uint8)
  codes = frame_tokens.frame_codes(tf.constant(plain), 3, 4).numpy()
  assert codes.shape == (1, 3, 3) and (codes == 1 * 16 + 3 * 4 + 0).all()


def test_frame_tokens_views_through_the_eval_stream(tiny_data_dir):
  """A frames dataset (moving_shapes) read as frame_tokens with 2 uniform test clips: 2 rows per
  video, each the reader's view over the whole video; a wrong num_views is one clear line."""
  from configs import common  # pylint: disable=import-outside-toplevel
  from vlx.data.pipeline import get_builder  # pylint: disable=import-outside-toplevel
  c = common.base_config()
  c.data.update(data_dir=tiny_data_dir, tokenizer="moving_shapes")
  entry = dict(reader="frame_tokens", grid=2, num_frames=2, stride=2, test_clips=2, pad_id=64)
  ev = common.classification_eval(builder="moving_shapes", builder_config="tiny", num_frames=2,
                                  resolution=16, max_text_len=8, num_views=2)
  ev.inputs = ml_collections.ConfigDict(dict(vq_tokens=entry))
  cat = {}
  for b in eval_stream.make_eval_batches(ev, c, batch_size=8):
    for k, v in b.items():
      cat.setdefault(k, []).append(v)
  cat = {k: np.concatenate(v) for k, v in cat.items()}
  keep = cat["valid"]
  assert cat["vq_tokens"].shape[1:] == (2, 2, 2) and keep.sum() % 2 == 0
  np.testing.assert_array_equal(cat["view_index"][keep], np.tile([0, 1], keep.sum() // 2))
  reader = make_reader("frame_tokens", entry, "inputs.vq_tokens")
  builder = get_builder("moving_shapes", "tiny", tiny_data_dir)
  first = next(iter(builder.as_dataset(split=ev.split, shuffle_files=False,
                                       decoders={"video": reader.decoder()})))
  for v in range(2):
    np.testing.assert_array_equal(cat["vq_tokens"][v], _read(reader, first["video"].numpy(),
                                                             view=v)["vq_tokens"])
  ev.num_views = 3
  with pytest.raises(DataConfigError, match=r"^evals\.<name>\.num_views=3: input 'vq_tokens' "
                     r"reads 2 views .*set num_views=2$") as err:
    next(eval_stream.make_eval_batches(ev, c, batch_size=8))
  assert "\n" not in str(err.value)


def test_frame_tokens_pretraining_clips_through_the_train_stream(tiny_data_dir):
  """clips=2 in a training block: vq_tokens [B, 2, L, grid, grid], the plan's pre-training rows."""
  from configs import common  # pylint: disable=import-outside-toplevel
  from vlx.data import train_stream  # pylint: disable=import-outside-toplevel
  c = common.base_config()
  c.data.update(data_dir=tiny_data_dir, global_batch_size=4, shuffle_buffer=8,
                tokenizer="moving_shapes")
  c.data.train.update(builder_config="tiny", num_frames=3, resolution=16, max_text_len=8)
  c.data.train.inputs = ml_collections.ConfigDict(dict(
      vq_tokens=dict(reader="frame_tokens", grid=2, clips=2, pad_id=64)))
  # pylint: disable-next=protected-access
  ds = train_stream._train_dataset(c, process_index=0, process_count=1)
  batch = next(ds.as_numpy_iterator())
  assert batch["vq_tokens"].shape == (4, 2, 3, 2, 2) and batch["vq_mask"].shape == (4, 2, 3)
  real = batch["vq_mask"].astype(bool)
  assert (batch["vq_tokens"][real] < 64).all() and (batch["vq_tokens"][~real] == 64).all()


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kind,cfg,message", [
    ("token_grid", dict(spatial_views=-1), r"^inputs\.x\.spatial_views: must be >= 0"),
    ("token_grid", dict(test_clips=0), r"^inputs\.x\.test_clips: must be >= 1"),
    ("token_grid", dict(clips=1.5), r"^inputs\.x\.clips: expected an integer"),
    ("token_grid", dict(clips=2, align_with="video"), r"^inputs\.x\.clips: must be 0 with "),
    ("frame_tokens", dict(spatial_views=3, grid=2), r"^inputs\.x\.spatial_views: must be 0"),
    ("frame_tokens", dict(), r"^inputs\.x\.grid: required"),
    ("frame_tokens", dict(grid=2, levels=1), r"^inputs\.x\.levels: must be >= 2"),
])
def test_config_errors_are_one_line(kind, cfg, message):
  base = dict(num_frames=2, height=2, width=2) if kind == "token_grid" else dict(num_frames=2)
  with pytest.raises(DataConfigError, match=message) as err:
    make_reader(kind, dict(base, **cfg), "inputs.x")
  assert "\n" not in str(err.value)


def test_stored_view_count_is_checked():
  reader = token_grid.from_config(dict(num_frames=2, height=2, width=3, spatial_views=3), "x")
  with pytest.raises(DataConfigError, match=r"^vq_tokens: stored grid view count is 2 but the "
                     r"reader's spatial_views is 3$"):
    reader.read(_ramp(4, views=2), SEED, train=False)
  with pytest.raises(DataConfigError, match=r"expected \[S, T, H, W\]"):
    reader.read(_ramp(4), SEED, train=False)

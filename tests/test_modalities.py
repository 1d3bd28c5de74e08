"""Audio, feature-sequence and token-grid readers: shapes, masks, crops, resampling, config errors,
and moving_shapes' audio track read through the audio reader."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data.modalities import audio, features, token_grid

SEED = tf.constant([3, 4], tf.int64)


_TRACED = {}


def _read(reader, x, *, train=False, seed=SEED):
  """reader.read in graph mode on an input of unknown length (as TFDS decodes a (None, ...)
  feature), returned as numpy; one trace per (reader, mode, input signature)."""
  x = np.asarray(x)
  spec = tf.TensorSpec([None] + list(x.shape[1:]), tf.as_dtype(x.dtype))
  key = (reader, train, spec)
  if key not in _TRACED:
    _TRACED[key] = tf.function(lambda v, s: reader.read(v, s, train=train),
                               input_signature=[spec, tf.TensorSpec([2], tf.int64)])
  out = {k: v.numpy() for k, v in _TRACED[key](x, seed).items()}
  for key, (shape, dtype) in reader.spec().items():  # spec() matches what read() yields
    assert out[key].shape == shape and out[key].dtype == dtype, key
  return out


def _peak_hz(wave, rate):
  return np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave)).argmax()]


def _tone(freq, seconds, rate):
  return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * rate))) / rate)
          ).astype(np.float32)


def _expected_mel_bin(reader, freq):
  """The loudest mel bin of a pure tone, computed in numpy (periodic Hann window, rfft, power)
  with TF's mel weights."""
  fft_length = 1 << (reader.frame_length - 1).bit_length()
  n = reader.frame_length
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
  power = np.abs(np.fft.rfft(_tone(freq, n / reader.sample_rate, reader.sample_rate) * window,
                             fft_length)) ** 2
  weights = tf.signal.linear_to_mel_weight_matrix(
      reader.num_mel_bins, fft_length // 2 + 1, reader.sample_rate, reader.fmin,
      reader.fmax or reader.sample_rate / 2).numpy()
  return int((power @ weights).argmax())

# ----------------------------------------------------------------------------- audio

def test_waveform_resampling_keeps_a_sines_frequency():
  reader = audio.from_config(dict(representation="waveform", sample_rate=16000,
                                  stored_rate=22050, seconds=0.5), "inputs.audio")
  out = _read(reader, _tone(440.0, 0.5, 22050))
  assert reader.keys == ("audio", "audio_mask")
  assert out["audio_mask"].sum() == 8000
  assert _peak_hz(out["audio"], 16000) == pytest.approx(440.0, abs=2.0)
  # Band-limited: the samples are the tone's at the new rate (away from the window's edges).
  np.testing.assert_allclose(out["audio"][400:-400], _tone(440.0, 0.5, 16000)[400:-400],
                             atol=0.02)


def test_int16_pcm_is_scaled_and_short_audio_padded():
  reader = audio.from_config(dict(representation="waveform", sample_rate=8000, seconds=1.0),
                             "inputs.audio")
  pcm = (_tone(300.0, 0.25, 8000) * 32767).astype(np.int16)
  out = _read(reader, pcm, train=True)
  assert out["audio_mask"].sum() == 2000 and out["audio_mask"][:2000].all()
  np.testing.assert_allclose(out["audio"][:2000], pcm / 32768.0, atol=1e-6)
  assert not out["audio"][2000:].any()


@pytest.mark.parametrize("representation", ["waveform", "log_mel"])
def test_empty_audio_is_zero_with_zero_mask(representation):
  reader = audio.from_config(dict(representation=representation, seconds=0.5), "inputs.audio")
  for train in (True, False):
    out = _read(reader, np.zeros([0], np.float32), train=train)
    assert not out["audio"].any() and not out["audio_mask"].any()


def test_log_mel_shape_mask_and_tone_bin():
  reader = audio.from_config(dict(seconds=1.0), "inputs.audio")   # EAO defaults: 16 kHz, 40 bins
  assert (reader.frame_length, reader.frame_step, reader.num_frames) == (400, 160, 100)
  out = _read(reader, _tone(1000.0, 0.5, 16000))
  mask = out["audio_mask"]
  assert out["audio"].shape == (100, 40) and mask.sum() == 50 and mask[:50].all()
  assert not out["audio"][50:].any()
  assert np.isfinite(out["audio"]).all()
  bins = out["audio"][5:45].argmax(-1)   # frames fully inside the tone
  assert (bins == _expected_mel_bin(reader, 1000.0)).all(), bins
  assert np.isclose(_read(reader, _tone(1000.0, 2.0, 16000))["audio_mask"].sum(), 100)


def test_audio_windows_train_random_eval_centred():
  ramp = np.arange(1000, dtype=np.float32) / 1000   # the first sample says where the window starts
  cfg = dict(representation="waveform", sample_rate=100, seconds=2.0)
  reader = audio.from_config(cfg, "inputs.audio")
  first = lambda **kw: round(float(_read(reader, ramp, **kw)["audio"][0]) * 1000)
  assert first() == 400                                  # centred: (1000 - 200) // 2
  starts = {first(train=True, seed=tf.constant([i, 0], tf.int64)) for i in range(8)}
  assert len(starts) > 1 and all(0 <= s <= 800 for s in starts)
  assert first(train=True) == first(train=True)          # a function of the seed


# ----------------------------------------------------------------------------- features

def _rows(n, d=4):
  return np.arange(n, dtype=np.float32)[:, None] * np.ones([1, d], np.float32)


def test_features_window_and_mask():
  reader = features.from_config(dict(dim=4, max_len=5), "inputs.features")
  out = _read(reader, _rows(12))
  np.testing.assert_array_equal(out["features"][:, 0], np.arange(5))   # eval: the first steps
  assert out["features_mask"].all()
  for i in range(4):
    got = _read(reader, _rows(12), train=True, seed=tf.constant([i, 1], tf.int64))
    steps = got["features"][:, 0]
    assert (np.diff(steps) == 1).all() and 0 <= steps[0] <= 7          # contiguous window
  short = _read(reader, _rows(3), train=True)
  np.testing.assert_array_equal(short["features_mask"], [1, 1, 1, 0, 0])
  np.testing.assert_array_equal(short["features"][:, 0], [0, 1, 2, 0, 0])
  empty = _read(reader, _rows(0))
  assert not empty["features"].any() and not empty["features_mask"].any()


def test_features_uniform_sampling_and_normalize():
  reader = features.from_config(dict(dim=4, max_len=4, select="uniform", normalize=True),
                                "inputs.features")
  x = _rows(40) + 1.0
  out = _read(reader, x)
  np.testing.assert_allclose(np.linalg.norm(out["features"], axis=-1), 1.0, rtol=1e-6)
  train = _read(reader, x, train=True)["features"]
  raw = features.from_config(dict(dim=4, max_len=4, select="uniform"), "f")
  steps = _read(raw, x, train=True)["features"][:, 0] - 1
  assert (np.diff(steps) > 0).all() and all(10 * i <= s < 10 * i + 10 for i, s in
                                            enumerate(steps)), steps
  assert train.shape == (4, 4)


def test_features_dim_is_checked():
  reader = features.from_config(dict(dim=8, max_len=2), "inputs.features")
  with pytest.raises(ValueError, match=r"D=4 but the reader's dim is 8"):
    reader.read(tf.zeros([3, 4]), SEED, train=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match="D differs from config dim 8"):
    fn = tf.function(lambda x: reader.read(x, SEED, train=False),
                     input_signature=[tf.TensorSpec([None, None], tf.float32)])
    fn(tf.zeros([3, 4]))


# ----------------------------------------------------------------------------- token grid

def test_token_grid_stride_crop_and_pad():
  grid = np.arange(10, dtype=np.int16)[:, None, None] * np.ones([1, 2, 3], np.int16)
  cfg = dict(num_frames=4, height=2, width=3, stride=2, pad_id=8193)
  reader = token_grid.from_config(cfg, "inputs.vq")
  assert reader.keys == ("vq_tokens", "vq_mask")
  out = _read(reader, grid)   # eval: from the first frame, every 2nd
  np.testing.assert_array_equal(out["vq_tokens"][:, 0, 0], [0, 2, 4, 6])
  assert out["vq_mask"].all() and (out["vq_tokens"] == out["vq_tokens"][:, :1, :1]).all()
  # VIMPAC: delta = (10 + 2 - 1) - 4 * 2 = 3, train starts drawn from [0, 3] inclusive.
  starts = set()
  for i in range(40):
    got = _read(reader, grid, train=True, seed=tf.constant([i, 2], tf.int64))
    frames = got["vq_tokens"][:, 0, 0]
    frames = frames[got["vq_mask"] == 1]
    starts.add(int(frames[0]))
    np.testing.assert_array_equal(frames, np.arange(frames[0], 10, 2)[:4])
  assert starts == {0, 1, 2, 3}
  short = _read(reader, grid[:3], train=True)
  np.testing.assert_array_equal(short["vq_tokens"][:, 1, 2], [0, 2, 8193, 8193])
  np.testing.assert_array_equal(short["vq_mask"], [1, 1, 0, 0])
  empty = _read(reader, grid[:0])
  assert (empty["vq_tokens"] == 8193).all() and not empty["vq_mask"].any()
  with pytest.raises(ValueError, match="stored grid width is 3 but the reader's width is 4"):
    token_grid.from_config(dict(cfg, width=4), "w").read(grid, SEED, train=False)


# ----------------------------------------------------------------------------- config errors

@pytest.mark.parametrize("module,cfg,message", [
    (audio, dict(representation="mfcc"), r"^inputs\.x\.representation: 'mfcc' is not one of"),
    (audio, dict(seconds=0), r"^inputs\.x\.seconds: must be > 0"),
    (audio, dict(sample_rate=8000, fmax=6000.0), r"^inputs\.x\.fmax: 6000.0 Hz is above"),
    (audio, dict(frame_length_ms=5.0), r"^inputs\.x\.frame_length_ms: 5.0 ms must be >="),
    (features, dict(max_len=4), r"^inputs\.x\.dim: the stored feature size D is required"),
    (features, dict(dim=4, max_len=4, select="random"), r"^inputs\.x\.select: 'random'"),
    (features, dict(dim="4", max_len=4), r"^inputs\.x\.dim: expected an integer"),
    (token_grid, dict(num_frames=4, height=2), r"^inputs\.x\.width: required"),
    (token_grid, dict(num_frames=4, height=2, width=2, stride=0), r"^inputs\.x\.stride: must be"),
])
def test_config_errors_are_one_line(module, cfg, message):
  with pytest.raises(ValueError, match=message) as err:
    module.from_config(dict(cfg, reader="x"), "inputs.x")
  assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- moving_shapes

def test_moving_shapes_audio_through_the_reader(tiny_data_dir):
  from data_builders.moving_shapes import moving_shapes_dataset_builder as msb
  from data_builders.moving_shapes import render
  builder = msb.Builder(config="tiny", data_dir=tiny_data_dir)
  stored = builder.info.features["audio"]
  rate = stored.sample_rate
  mel = audio.from_config(dict(sample_rate=rate, seconds=1.0), "inputs.audio")
  wave = audio.from_config(dict(representation="waveform", sample_rate=16000, stored_rate=rate,
                                seconds=1.0), "inputs.audio")
  examples = list(tfds.as_numpy(builder.as_dataset(split="test", shuffle_files=False)))
  colours = set()
  for ex in examples:
    colour = ex["colour"].decode()
    colours.add(colour)
    out = _read(mel, ex["audio"])
    assert out["audio_mask"].all()   # 8 frames at 8 fps = 1 s of audio fill the window
    mean = out["audio"][2:-2].mean(0)
    assert mean.argmax() == _expected_mel_bin(mel, render.PITCH[colour]), colour
    up = _read(wave, ex["audio"])["audio"]
    assert _peak_hz(up, 16000) == pytest.approx(render.PITCH[colour], abs=2.0)
  # Tones of different colours land in different mel bins (the check can tell them apart).
  bins = {_expected_mel_bin(mel, render.PITCH[c]) for c in colours}
  assert len(colours) >= 3 and len(bins) == len(colours)


# ----------------------------------------------------------------------------- builders

def _streams_corpus(root):
  """v0.mp4: 440 Hz tone (AAC, 22.05 kHz) + features [5, 3]; v1.mp4: silent + features [2, 3];
  v2.mkv: tone but no features file; v3.mkv: tone + features of the wrong D."""
  from vlx.data import builder_base as bb, testing  # pylint: disable=import-outside-toplevel
  feats = root / "features"
  feats.mkdir(parents=True)
  testing.write_video_with_audio(root / "v0.mp4", _tone(440.0, 1.0, 22050), 22050)
  testing.write_video(root / "v1.mp4", num_frames=8, fps=8)
  testing.write_video_with_audio(root / "v2.mkv", _tone(440.0, 1.0, 22050), 22050)
  testing.write_video_with_audio(root / "v3.mkv", _tone(440.0, 1.0, 22050), 22050)
  np.save(feats / "v0.npy", _rows(5, 3))
  np.save(feats / "v1.npy", _rows(2, 3) + 10)
  np.save(feats / "v3.npy", _rows(4, 2))
  index = bb.index_videos(feats, (".npy",))
  return [bb.VideoRecord(f"k{i}", str(root / name), dict(captions=[f"clip {i}"],
                                                         features=index.get(f"v{i}", "")))
          for i, name in enumerate(["v0.mp4", "v1.mp4", "v2.mkv", "v3.mkv"])]


def test_generate_examples_stores_audio_and_features(tmp_path):
  from vlx.data import builder_base as bb, testing  # pylint: disable=import-outside-toplevel
  records = _streams_corpus(tmp_path)
  config = bb.VideoBuilderConfig(name="c", fps=4, short_side=0)
  streams = bb.Streams(audio_rate=8000, features_dim=3)
  with testing.environ(VLX_BUILD_REPORT_DIR=str(tmp_path / "rep"), VLX_FRAME_CACHE=None):
    out = dict(bb.generate_examples(records, config, builder_name="toy", split="s",
                                    num_workers=1, streams=streams))
    assert sorted(out) == ["k0", "k1"]
    report = bb.last_report("toy", "s")
    assert (report["missing"], report["corrupt"]) == (1, 1)
    assert "features of shape (4, 2), expected [N, 3]" in report["corrupt_errors"][0]
    audio0 = out["k0"]["audio"]
    assert audio0.dtype == np.int16 and audio0.shape == (8000,)
    assert _peak_hz(audio0.astype(np.float32), 8000) == pytest.approx(440.0, abs=1.5)
    assert out["k1"]["audio"].shape == (0,)     # no audio stream: empty audio, still an example
    np.testing.assert_array_equal(out["k1"]["features"], _rows(2, 3) + 10)
    assert len(out["k0"]["video"]) == 4
    # Features only: no frames decoded, no `video`; the videos need not exist.
    only = bb.Streams(frames=False, features_dim=3)
    gone = [bb.VideoRecord(r.key, str(tmp_path / "nowhere.mp4"), r.fields) for r in records]
    feats = dict(bb.generate_examples(gone, config, builder_name="toy", split="f",
                                      num_workers=1, streams=only))
  assert sorted(feats) == ["k0", "k1"] and "video" not in feats["k0"]
  np.testing.assert_array_equal(feats["k0"]["features"], _rows(5, 3))
  spec = bb.video_features({}, only)
  assert "video" not in spec and spec["features"].shape == (None, 3)
  assert set(bb.video_features({}).keys()) == {"video", "video_id", "duration", "orig_fps",
                                              "start", "end"}   # the default is unchanged


def test_builder_streams_read_back_through_the_readers(tmp_path):
  from etils import epath  # pylint: disable=import-outside-toplevel
  from vlx.data import builder_base as bb, testing  # pylint: disable=import-outside-toplevel
  records = _streams_corpus(tmp_path / "manual")

  class StreamsToy(bb.VideoDatasetBuilder, skip_registration=True):
    code_path = pkg_dir_path = epath.Path(__file__).parent
    MANUAL_DOWNLOAD_INSTRUCTIONS = "the test writes it"
    BUILDER_CONFIGS = [bb.VideoBuilderConfig(name="c", fps=2, short_side=0)]
    STREAMS = bb.Streams(audio_rate=8000, features_dim=3)

    def _features(self):
      return bb.caption_features()

    def _split_records(self, manual_dir):
      return {"train": [r for r in records if r.key in ("k0", "k1")]}

  with testing.environ(VLX_BUILD_REPORT_DIR=str(tmp_path / "rep"), VLX_FRAME_CACHE=None,
                       VLX_BUILD_WORKERS="1"):
    builder = StreamsToy(config="c", data_dir=str(tmp_path / "data"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "manual")))
  rows = {e["video_id"].decode(): e for e in
          tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))}
  wave = audio.from_config(dict(representation="waveform", sample_rate=16000, stored_rate=8000,
                                seconds=1.0), "inputs.audio")
  got = _read(wave, rows["v0"]["audio"])
  assert got["audio_mask"].sum() == 16000
  assert _peak_hz(got["audio"], 16000) == pytest.approx(440.0, abs=1.5)
  assert not _read(wave, rows["v1"]["audio"])["audio_mask"].any()
  seq = features.from_config(dict(dim=3, max_len=4), "inputs.features")
  np.testing.assert_array_equal(_read(seq, rows["v1"]["features"])["features_mask"], [1, 1, 0, 0])


def test_token_grid_feature_round_trip_through_the_reader():
  # pylint: disable-next=import-outside-toplevel
  from tensorflow_datasets.core import example_parser, example_serializer
  from vlx.data import builder_base as bb  # pylint: disable=import-outside-toplevel
  feats = tfds.features.FeaturesDict({"vq_tokens": bb.token_grid_feature(2, 3)})
  grid = (np.arange(3 * 2 * 3) * 401 % 8192).astype(np.int16).reshape(3, 2, 3)
  info = feats.get_serialized_info()
  data = example_serializer.ExampleSerializer(info).serialize_example(
      feats.encode_example({"vq_tokens": grid}))
  stored = feats.decode_example(example_parser.ExampleParser(info).parse_example(data))
  reader = token_grid.from_config(dict(num_frames=4, height=2, width=3, pad_id=8193), "vq")
  out = _read(reader, stored["vq_tokens"].numpy())
  np.testing.assert_array_equal(out["vq_tokens"][:3], grid)
  assert (out["vq_tokens"][3] == 8193).all() and out["vq_mask"].tolist() == [1, 1, 1, 0]


def test_moving_shapes_audio_input_in_train_and_eval_batches(tiny_data_dir):
  """data.<block>.inputs.audio flows through the training and evaluation streams: every row's
  loudest mel bin is its clip's colour tone (train rows carry `colour` as an extra key)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from configs import common  # pylint: disable=import-outside-toplevel
  from data_builders.moving_shapes import render  # pylint: disable=import-outside-toplevel
  from vlx.data import eval_stream, train_stream  # pylint: disable=import-outside-toplevel
  inputs = ml_collections.ConfigDict(dict(
      video=dict(reader="frames"),
      audio=dict(reader="audio", feature="audio", stored_rate=8000, sample_rate=8000,
                 seconds=1.0)))
  c = common.base_config()
  c.data.update(data_dir=tiny_data_dir, global_batch_size=8, shuffle_buffer=16,
                tokenizer="moving_shapes")
  c.data.train.update(builder_config="tiny", num_frames=2, resolution=16, max_text_len=16)
  c.data.train.inputs = inputs
  mel = audio.from_config(inputs.audio, "inputs.audio")
  ds = train_stream._train_dataset(c, process_index=0, process_count=1, extra_keys=("colour",))
  batch = next(ds.as_numpy_iterator())
  assert batch["audio"].shape == (8, 100, 40) and batch["audio_mask"].all()
  assert batch["video"].shape == (8, 2, 16, 16, 3)
  for row, colour in zip(batch["audio"], batch["colour"]):
    assert row[2:-2].mean(0).argmax() == _expected_mel_bin(mel, render.PITCH[colour.decode()])
  ev = common.retrieval_eval(builder="moving_shapes", builder_config="tiny", num_frames=2,
                             resolution=16, max_text_len=16)
  ev.inputs = inputs
  rows = [b for b in eval_stream.make_eval_batches(ev, c, batch_size=8, process_index=0,
                                                   process_count=1)]
  assert all(b["audio"].shape == (8, 100, 40) for b in rows)
  assert sum(int(b["audio_mask"][:, 0].sum()) for b in rows) == 16   # 16 test clips, real audio


# ----------------------------------------------------------------------------- frames


def test_frames_antialias_field_reaches_the_resize():
  """A 1-pixel checkerboard shrunk 64 -> 20 (uniform sampling of 2 of 3 identical frames):
  antialiased bilinear averages it to grey, plain bilinear samples it; both equal TF's resize."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  from vlx.data import video_ops  # pylint: disable=import-outside-toplevel
  from vlx.data.modalities import frames  # pylint: disable=import-outside-toplevel
  board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
  frame = np.repeat(board[:, :, None], 3, axis=2)
  encoded = np.stack([tf.io.encode_png(frame).numpy()] * 3)
  cfg = ml_collections.ConfigDict(dict(num_frames=2, resolution=20, norm="clip"))
  assert frames.from_config(cfg, "config.evals.x").antialias  # default: antialiased
  outs = {}
  for antialias in (True, False):
    cfg.antialias = antialias
    reader = frames.from_config(cfg, "config.evals.x")
    assert reader.antialias is antialias
    outs[antialias] = _read(reader, encoded)["video"]
    want = video_ops.normalize(tf.image.resize(tf.cast(frame, tf.float32)[None], [20, 20],
                                               method="bilinear", antialias=antialias))
    np.testing.assert_allclose(outs[antialias][0], want.numpy()[0], atol=1e-5)
  spatial_std = lambda v: v[..., 0].std()   # one channel: the spread over the pixels
  assert spatial_std(outs[True]) < 0.5 * spatial_std(outs[False])   # averaged vs sampled

"""vlx.data.media: every container decodes; fps resampling keeps the right frames; resize, cut."""
import numpy as np
import pytest

from vlx.data import media, testing

CONTAINERS = (".mp4", ".webm", ".avi", ".mkv", ".gif")


def _source_index(frame: np.ndarray, num_frames: int, seed: int = 0) -> int:
  """Which source frame of pattern_frames(num_frames, ..., seed) `frame` shows (nearest by MSE,
  after resizing the references to the frame's size)."""
  h, w = frame.shape[:2]
  refs = testing.pattern_frames(num_frames, 48 if h <= w else 64, 64 if h <= w else 32, seed)
  refs = refs[:, ::refs.shape[1] // h, ::refs.shape[2] // w][:, :h, :w]
  err = ((refs.astype(np.float32) - frame.astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
  return int(np.argmin(err))


@pytest.mark.parametrize("ext", CONTAINERS)
def test_every_container_decodes_all_frames(tmp_path, ext):
  path = tmp_path / f"v{ext}"
  fps = 10 if ext == ".gif" else 8  # GIF delays are whole centiseconds
  testing.write_video(path, num_frames=16, height=48, width=64, fps=fps, seed=3)
  frames, meta = media.decode_video(str(path), fps=0, short_side=0)
  assert frames.shape == (16, 48, 64, 3) and frames.dtype == np.uint8
  assert meta["num_frames"] == 16
  assert meta["orig_fps"] == pytest.approx(fps, rel=0.05)
  assert meta["duration"] == pytest.approx(16 / fps, abs=0.06)
  assert [_source_index(f, 16, seed=3) for f in frames] == list(range(16))
  if ext != ".gif":  # GIF's 332 palette is coarse; lossy codecs stay close to the source
    ref = testing.pattern_frames(16, 48, 64, seed=3)
    assert np.abs(frames.astype(int) - ref).mean() < 4


@pytest.mark.parametrize("fps,expected", [(2, [0, 4, 8, 12]), (4, [0, 2, 4, 6, 8, 10, 12, 14]),
                                          (3, [0, 2, 5, 8, 10, 13]),
                                          (16, [i // 2 for i in range(32)])])
def test_fps_resampling_by_timestamp(tmp_path, fps, expected):
  """16 frames at 8 fps = 2 s: the frame on screen at k / fps is frame floor(8 k / fps)."""
  path = tmp_path / "v.mp4"
  testing.write_video(path, num_frames=16, fps=8)
  frames, meta = media.decode_video(str(path), fps=fps, short_side=0)
  assert meta["num_frames"] == len(expected) == len(frames)
  assert [_source_index(f, 16) for f in frames] == expected


def test_short_side_resize_never_upscales(tmp_path):
  path = tmp_path / "v.webm"
  testing.write_video(path, num_frames=4, height=48, width=64, fps=4)
  assert media.decode_video(str(path), fps=0, short_side=24)[0].shape == (4, 24, 32, 3)
  assert media.decode_video(str(path), fps=0, short_side=100)[0].shape == (4, 48, 64, 3)
  tall = tmp_path / "t.mp4"
  testing.write_video(tall, num_frames=2, height=64, width=32, fps=4)
  assert media.decode_video(str(tall), fps=0, short_side=16)[0].shape == (2, 32, 16, 3)
  assert media.resized_size(240, 320, 256) == (240, 320)
  assert media.resized_size(480, 854, 256) == (256, 455)


def test_cut_and_max_frames(tmp_path):
  path = tmp_path / "v.mkv"
  testing.write_video(path, num_frames=16, fps=8)
  frames, meta = media.decode_video(str(path), fps=4, short_side=0, start=0.5, end=1.5)
  assert [_source_index(f, 16) for f in frames] == [4, 6, 8, 10]
  assert meta["duration"] == pytest.approx(2.0, abs=0.01)  # of the whole video
  every, _ = media.decode_video(str(path), fps=0, short_side=0, start=1.0)
  assert [_source_index(f, 16) for f in every] == list(range(8, 16))
  capped, meta = media.decode_video(str(path), fps=0, short_side=0, max_frames=4)
  assert [_source_index(f, 16) for f in capped] == [0, 5, 10, 15] and meta["num_frames"] == 4
  with pytest.raises(media.MediaError, match="no frames in"):
    media.decode_video(str(path), fps=1, short_side=0, start=5.0, end=6.0)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_image_is_one_frame_video(tmp_path, ext):
  path = tmp_path / f"i{ext}"
  testing.write_image(path, height=48, width=64, seed=1)
  frames, meta = media.decode_video(str(path), fps=2, short_side=24)
  assert frames.shape == (1, 24, 32, 3)
  assert meta == dict(duration=0.0, orig_fps=0.0, num_frames=1)


@pytest.mark.parametrize("name", ["bad.mp4", "bad.webm", "bad.gif", "bad.jpg"])
def test_corrupt_empty_missing_raise_media_error_naming_file(tmp_path, name):
  path = tmp_path / name
  testing.write_corrupt(path)
  with pytest.raises(media.MediaError, match=name):
    media.decode_video(str(path), fps=1, short_side=0)
  empty = tmp_path / f"empty_{name}"
  empty.write_bytes(b"")
  with pytest.raises(media.MediaError, match=f"empty_{name}: empty file"):
    media.decode_video(str(empty), fps=1, short_side=0)
  with pytest.raises(media.MediaError, match="not found"):
    media.decode_video(str(tmp_path / "nope.mp4"), fps=1, short_side=0)


def test_truncated_video_is_media_error_or_partial(tmp_path):
  """A download cut short: header kept, most data gone -> MediaError, never a crash."""
  path = tmp_path / "v.mp4"
  testing.write_video(path, num_frames=16, fps=8)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 3])
  with pytest.raises(media.MediaError, match="v.mp4"):
    media.decode_video(str(path), fps=1, short_side=0)


def test_encode_jpeg_roundtrip():
  frame = testing.pattern_frames(1, 32, 48)[0]
  data = media.encode_jpeg(frame)
  assert data[:2] == b"\xff\xd8" and media.encode_jpeg(frame) == data
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  back = np.asarray(Image.open(io.BytesIO(data)))
  assert back.shape == (32, 48, 3) and np.abs(back.astype(int) - frame).mean() < 3


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
  return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(
      np.float32)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
  return float(np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave)).argmax()])


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])   # AAC (lossy, padded frames), 16-bit PCM
def test_decode_audio_resamples_and_cuts(tmp_path, ext):
  path = tmp_path / f"a{ext}"
  testing.write_video_with_audio(path, _tone(440.0, 1.0, 22050), 22050, num_frames=8, fps=8)
  wave, rate = media.decode_audio(str(path), 16000)
  assert rate == 16000 and wave.dtype == np.float32 and wave.shape == (16000,)
  assert _peak_hz(wave, 16000) == pytest.approx(440.0, abs=1.5)
  assert np.abs(wave[2000:-2000]).max() == pytest.approx(0.5, abs=0.05)
  cut, _ = media.decode_audio(str(path), 8000, start=0.25, end=0.75)
  assert cut.shape == (4000,) and _peak_hz(cut, 8000) == pytest.approx(440.0, abs=2.5)
  frames, _ = media.decode_video(str(path), fps=8, short_side=0)   # the frames still decode
  assert frames.shape == (8, 48, 64, 3)


def test_decode_audio_keeps_channels_unless_mono(tmp_path):
  import wave as wav  # pylint: disable=import-outside-toplevel
  left, right = _tone(300.0, 0.5, 8000), _tone(700.0, 0.5, 8000)
  with wav.open(str(tmp_path / "s.wav"), "wb") as f:
    f.setnchannels(2), f.setsampwidth(2), f.setframerate(8000)
    f.writeframes((np.stack([left, right], 1) * 32767).astype(np.int16).tobytes())
  both, _ = media.decode_audio(str(tmp_path / "s.wav"), 8000, mono=False)
  assert both.shape == (4000, 2)
  np.testing.assert_allclose(both, np.stack([left, right], 1), atol=1e-3)
  mono, _ = media.decode_audio(str(tmp_path / "s.wav"), 8000)
  assert mono.shape == (4000,)
  spectrum = np.abs(np.fft.rfft(mono))   # both channels are in the downmix
  assert spectrum[150] > 0.2 * spectrum.max() and spectrum[350] > 0.2 * spectrum.max()


def test_decode_audio_without_audio_stream_or_file(tmp_path):
  testing.write_video(tmp_path / "silent.mp4", num_frames=4, height=16, width=16, fps=4)
  with pytest.raises(media.NoAudioError, match=r"silent\.mp4: no audio stream"):
    media.decode_audio(str(tmp_path / "silent.mp4"), 16000)
  with pytest.raises(media.MediaError, match=r"gone\.mp4: file not found"):
    media.decode_audio(str(tmp_path / "gone.mp4"), 16000)
  testing.write_corrupt(tmp_path / "bad.mp4")
  with pytest.raises(media.MediaError, match=r"bad\.mp4"):
    media.decode_audio(str(tmp_path / "bad.mp4"), 16000)

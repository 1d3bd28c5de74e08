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

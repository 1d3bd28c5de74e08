"""Small media files generated at test time, and a TFDS test case for video dataset builders.

Builder tests write their official-layout annotation files and tiny videos into a temp dir when
the test class starts (no binary dummy_data checked in), including at least one corrupt file, so
every test exercises the skip-and-count path of builder_base.generate_examples.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import tempfile
from fractions import Fraction
from typing import Collection, Iterable, Mapping, Sequence

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vlx.data import builder_base


CODECS = {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx", ".avi": "mpeg4", ".gif": "gif"}
_PIX_FMT = {"libx264": "yuv420p", "libvpx": "yuv420p", "mpeg4": "yuv420p", "gif": "rgb8"}


def pattern_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
  """uint8 [T, H, W, 3]: a per-seed colour gradient whose brightness bar moves with t.

  Smooth content (not noise) so lossy codecs keep it recognisable; frame t has a bright vertical
  bar at column ~ t * W / T, which lets tests tell which source frame was kept.
  """
  rng = np.random.default_rng(seed)
  base = rng.integers(40, 200, size=3)
  ys = np.linspace(0, 1, height)[:, None, None]
  xs = np.linspace(0, 1, width)[None, :, None]
  img = base + 40 * ys - 30 * xs
  frames = np.repeat(img[None], num_frames, 0)
  bar = max(width // 8, 2)
  for t in range(num_frames):
    left = (t * width) // max(num_frames, 1)
    frames[t, :, left:left + bar] = 250
  return np.clip(frames, 0, 255).astype(np.uint8)


def write_video(path, *, num_frames: int = 8, height: int = 48, width: int = 64, fps: int = 8,
                seed: int = 0) -> None:
  """Encodes pattern_frames(...) with the codec of the extension (.mp4 .mkv .webm .avi .gif)."""
  path = pathlib.Path(path)
  ext = path.suffix.lower()
  if ext not in CODECS:
    raise ValueError(f"{path}: extension {ext!r} not one of {sorted(CODECS)}")
  path.parent.mkdir(parents=True, exist_ok=True)
  codec = CODECS[ext]
  frames = pattern_frames(num_frames, height, width, seed)
  with av.open(str(path), mode="w") as container:
    stream = container.add_stream(codec, rate=Fraction(fps))
    stream.width, stream.height = width, height
    stream.pix_fmt = _PIX_FMT[codec]
    if codec == "libx264":
      stream.options = {"preset": "ultrafast", "crf": "18"}
    for i, arr in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
      if codec == "gif":
        frame = frame.reformat(format="rgb8")
      frame.pts = i
      frame.time_base = Fraction(1, fps)
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_image(path, *, height: int = 48, width: int = 64, seed: int = 0) -> None:
  """One test frame as an image; format from the extension (.jpg .png .webp .bmp)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(pattern_frames(1, height, width, seed)[0]).save(path)


def write_corrupt(path) -> None:
  """A file with the right extension whose bytes no decoder accepts."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"\x00not a media file\x00" * 16)


def write_videos(paths: Mapping[str, os.PathLike | str], *, corrupt: str | Collection[str] = (),
                 missing: str | Collection[str] = (), first_seed: int = 0, num_frames: int = 4,
                 height: int = 32, width: int = 40, fps: int = 8) -> None:
  """A tiny test video (write_video, seed first_seed + position) at each {name: path}, except
  the names in `missing` (not written: the build counts them missing) and in `corrupt`
  (write_corrupt: the build counts them corrupt)."""
  corrupt, missing = ({x} if isinstance(x, str) else set(x) for x in (corrupt, missing))
  for seed, (name, path) in enumerate(paths.items(), first_seed):
    if name in missing:
      continue
    if name in corrupt:
      write_corrupt(path)
    else:
      write_video(path, num_frames=num_frames, height=height, width=width, fps=fps, seed=seed)


@contextlib.contextmanager
def raises_annotation_error(file: os.PathLike | str, line: int | None, field: str,
                            expected: str = ""):
  """Expects the block to raise builder_base.AnnotationError naming `file` (a path, or just the
  file name), `line` (None: none) and `field`, whose expectation contains `expected`."""
  with pytest.raises(builder_base.AnnotationError) as info:
    yield info
  e = info.value
  name = os.fspath(file)
  got_file = e.file if os.sep in name else os.path.basename(e.file)
  assert (got_file, e.line, e.field) == (name, line, field), f"unexpected error: {e}"
  assert expected in e.expected, f"{expected!r} not in the expectation of: {e}"
  where = f"{e.file}:{line}" if line is not None else e.file
  assert re.match(re.escape(f"{where}: field '{field}': expected "), str(e)), str(e)


def by_video_id(examples: Iterable[dict]) -> dict[str, dict]:
  """{video_id: example} of numpy examples (check_examples' list, a built split)."""
  return {ex["video_id"].decode(): ex for ex in examples}


def examples_by_id(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, dict]:
  """{video_id: example (numpy)} of a built split."""
  return by_video_id(tfds.as_numpy(builder.as_dataset(split=split)))


REPORT_COUNTS = ("annotated", "found", "missing", "corrupt")


def build(builder_cls, config: str, manual_dir, data_dir) -> tfds.core.DatasetBuilder:
  """Builds one config of a builder outside VideoBuilderTestCase (e.g. the configs it does not
  test on the same dummy data); reports go to <data_dir>/reports."""
  builder = builder_cls(config=config, data_dir=os.fspath(data_dir))
  with environ(**{builder_base.REPORT_ENV: os.path.join(os.fspath(data_dir), "reports")}):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def report_counts(builder_name: str, split: str, config: str | None = None) -> dict[str, int]:
  """The REPORT_COUNTS of the last build report of (builder, split); checks its config."""
  report = builder_base.last_report(builder_name, split)
  if config is not None:
    assert report["config"] == config, (f"the last {builder_name}/{split} report is of config "
                                        f"{report['config']}, not {config}")
  return {k: report[k] for k in REPORT_COUNTS}


def label_rows(examples: Sequence[dict], *extra: str) -> list[tuple]:
  """Sorted (video_id, label, label_name, *extra fields) of classification examples, as Python
  values: what a classification builder test compares with its hand-written expectation."""
  def py(v):
    return v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
  return sorted(tuple(py(ex[k]) for k in ("video_id", "label", "label_name", *extra))
                for ex in examples)


def decoded(values: Sequence[bytes]) -> list[str]:
  """bytes -> str of a Text / Sequence(Text) feature read back as numpy."""
  return [v.decode() for v in values]


class VideoBuilderTestCase(tfds.testing.DatasetBuilderTestCase):
  """DatasetBuilderTestCase whose dummy data (manual_dir) is written by `make_dummy_data`.

  Subclasses set DATASET_CLASS, SPLITS (and BUILDER_CONFIG_NAMES_TO_TEST) and implement
  `make_dummy_data(root)`; may override `check_examples`. Optionally
  EXPECTED_REPORTS = {split: {'found': N, 'missing': K, 'corrupt': C, ...}} is checked against
  builder_base.last_report after each config's build, and EXPECTED_LABEL_NAMES (classification
  builders) against the built `label` feature. `make_dummy_data = staticmethod(write_layout)`
  reuses a module-level writer.
  """
  EXPECTED_REPORTS: Mapping[str, Mapping[str, int]] = {}
  EXPECTED_LABEL_NAMES: Sequence[str] | None = None   # classification: label.names after a build
  # Builders may use os/open (they read local manual_dir files); TFDS's gfile-only rule is for
  # datasets hosted on remote storage.
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False
  SKIP_CHECKSUMS = True

  def test_session(self, *args, **kwargs):
    """TF's graph-mode session helper (TFDS calls it); hidden from pytest, which would otherwise
    collect it as a test and report it skipped."""
    return super().test_session(*args, **kwargs)
  test_session.__test__ = False

  @classmethod
  def make_dummy_data(cls, root: pathlib.Path) -> None:
    raise NotImplementedError(f"{cls.__name__} must implement make_dummy_data(root)")

  @classmethod
  def setUpClass(cls):
    cls._dummy_root = tempfile.mkdtemp(prefix=f"vlx_{cls.__name__}_")
    root = pathlib.Path(cls._dummy_root) / "manual"
    root.mkdir()
    cls.make_dummy_data(root)
    cls.EXAMPLE_DIR = str(root)
    # Reports into the temp dir; decode inline (a pool buys nothing for a few tiny files and
    # test_builder_base covers it).
    cls._env = environ(**{builder_base.REPORT_ENV: os.path.join(cls._dummy_root, "reports"),
                          builder_base.WORKERS_ENV: "1", builder_base.CACHE_ENV: None})
    cls._env.__enter__()
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    cls._env.__exit__(None, None, None)
    shutil.rmtree(cls._dummy_root, ignore_errors=True)

  def check_examples(self, config_name: str, split: str, examples: list[dict]) -> None:
    """Override to check the built examples (numpy, ordered by key hash) of each split."""

  def _download_and_prepare_as_dataset(self, builder):
    super()._download_and_prepare_as_dataset(builder)
    for split, expected in self.EXPECTED_REPORTS.items():
      report = builder_base.last_report(builder.name, split)
      got = {k: report[k] for k in expected}
      self.assertEqual(got, dict(expected), f"{builder.name}/{split} build report: {report}")
    self.assertEqual(set(builder.info.splits), set(self.SPLITS), "built splits")
    if self.EXPECTED_LABEL_NAMES is not None:
      self.assertEqual(list(builder.info.features["label"].names), list(self.EXPECTED_LABEL_NAMES))
    if type(self).check_examples is not VideoBuilderTestCase.check_examples:
      for split in self.SPLITS:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        self.check_examples(builder.builder_config.name, split, list(tfds.as_numpy(ds)))


@contextlib.contextmanager
def environ(**values: str | None):
  """Sets environment variables for a `with` block (None removes one); restores them after."""
  old = {k: os.environ.get(k) for k in values}
  def put(items):
    for k, v in items:
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  put(values.items())
  try:
    yield
  finally:
    put(old.items())


_AUDIO_CODECS = {".mp4": ("aac", "fltp"), ".mkv": ("pcm_s16le", "s16")}


def write_video_with_audio(path, audio: np.ndarray, sample_rate: int, *, num_frames: int = 8,
                           height: int = 48, width: int = 64, fps: int = 8, seed: int = 0) -> None:
  """write_video's frames plus a mono audio track (float32 [N] in [-1, 1]): .mp4 -> AAC,
  .mkv -> 16-bit PCM."""
  path = pathlib.Path(path)
  codec, fmt = _AUDIO_CODECS[path.suffix.lower()]
  path.parent.mkdir(parents=True, exist_ok=True)
  frames = pattern_frames(num_frames, height, width, seed)
  with av.open(str(path), mode="w") as container:
    video = container.add_stream(CODECS[path.suffix.lower()], rate=Fraction(fps))
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    sound = container.add_stream(codec, rate=sample_rate, layout="mono")
    for i, arr in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
      frame.pts, frame.time_base = i, Fraction(1, fps)
      container.mux(video.encode(frame))
    container.mux(video.encode())
    audio = np.asarray(audio, np.float32)
    pcm = audio if fmt == "fltp" else (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    chunk = sound.codec_context.frame_size or 1024
    for start in range(0, len(pcm), chunk):
      frame = av.AudioFrame.from_ndarray(pcm[None, start:start + chunk], format=fmt,
                                         layout="mono")
      frame.sample_rate, frame.pts = sample_rate, start
      frame.time_base = Fraction(1, sample_rate)
      container.mux(sound.encode(frame))
    container.mux(sound.encode())

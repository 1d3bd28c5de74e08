"""Shared pieces of the video dataset builders: annotation readers and finders, config, features,
`generate_examples`, which decodes videos in a process pool and reports what it could not use, and
the VideoDatasetBuilder base class (the TFDS plumbing, so each builder holds only its own parsing).

Real corpora are never complete (dead links, partial downloads, truncated files), so a build skips
missing and undecodable videos, counts them, and says so at the end ("found N of M annotated
videos ...") and in a JSON report, instead of failing after hours of decoding.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import itertools
import json
import logging
import multiprocessing
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from vlx.data import frame_cache, media
from vlx.data import release_layout
# A manual dir that does not hold what a build needs (CLIs print the one-line message, exit 2).
from vlx.data.release_layout import DatasetLayoutError, Layout, Missing  # noqa: F401
# The annotation readers are part of this module's API (builders use them as bb.read_csv, ...).
from vlx.data.annotations import (AnnotationError, entry_field, find_file, read_csv,  # noqa: F401
                                  read_json, read_jsonl, require)

log = logging.getLogger(__name__)
CACHE_ENV = "VLX_FRAME_CACHE"            # a frame cache folder (see vlx.data.extract_frames)
WORKERS_ENV = "VLX_BUILD_WORKERS"        # decode processes (default: all cores)
REPORT_ENV = "VLX_BUILD_REPORT_DIR"      # build reports (default ~/.cache/vlx/build_reports)
JPEG_QUALITY = 90
_NUM_NAMES = 10                          # missing / corrupt names quoted in the summary


@dataclasses.dataclass
class VideoBuilderConfig(tfds.core.BuilderConfig):
  """Decode settings of a video builder config (frames stored per second, resize, cap)."""
  fps: float = 1.0          # frames stored per second (0 = every frame)
  short_side: int = 256     # 0 = keep
  max_frames: int = 0       # 0 = no cap
  frame_cache: str = ""     # a frame cache folder to read/fill (VLX_FRAME_CACHE overrides)


@dataclasses.dataclass(frozen=True)
class VideoRecord:
  """One example to build: which video (and which part of it) plus its other features."""
  key: str                  # unique example key within the split
  video_path: str           # absolute; may not exist (counted as missing, not an error)
  fields: dict              # every non-video feature of the example, ready for tfds
  start: float | None = None   # seconds: clip cut from a longer video
  end: float | None = None


@dataclasses.dataclass(frozen=True)
class Streams:
  """What a builder stores per example besides its own fields: the builder's opt-in class
  attribute `STREAMS` (the default, frames only, is what every builder stored before).

  frames        `video`: JPEG frames of record.video_path (False: no `video` feature, e.g. a
                builder of pre-computed features only; the videos need not exist then unless
                audio is stored)
  audio_rate    > 0: `audio`, the first audio track of record.video_path (cut to the record's
                start/end) downmixed to mono and resampled to this rate with PyAV at build time,
                stored as int16 PCM (2 bytes a sample; the audio reader scales it to [-1, 1]; set
                its stored_rate to this rate). A video without an audio stream stores empty audio
                (the reader yields zeros with mask 0).
  features_dim  > 0: `features` float32 [N, D] (N varies per clip): the .npy file whose path the
                builder puts in record.fields['features'] (e.g. from
                index_videos(features_dir, ('.npy',))); a missing file counts as missing, a file
                that is not [N, D] as corrupt.
  Audio and features are decoded per build (the frame cache holds frames only).
  """
  frames: bool = True
  audio_rate: int = 0
  features_dim: int = 0

  @property
  def needs_video(self) -> bool:
    return self.frames or self.audio_rate > 0


FRAMES_ONLY = Streams()


def stream_features(streams: Streams) -> dict[str, Any]:
  """The TFDS features of the optional `audio` / `features` streams (none for FRAMES_ONLY)."""
  out: dict[str, Any] = {}
  if streams.audio_rate > 0:
    out["audio"] = tfds.features.Tensor(
        shape=(None,), dtype=np.int16, encoding=tfds.features.Encoding.BYTES,
        doc=f"mono 16-bit PCM at {streams.audio_rate} Hz")
  if streams.features_dim > 0:
    out["features"] = tfds.features.Tensor(shape=(None, streams.features_dim), dtype=np.float32)
  return out


def token_grid_feature(height: int, width: int) -> tfds.features.Tensor:
  """A grid of discrete codes per frame (e.g. dVAE codes < 32768) [T, height, width], stored as
  int16 bytes; a builder puts it in its `_features()` (e.g. as 'vq_tokens') and the array in
  record.fields. vlx.data.modalities.token_grid reads it."""
  return tfds.features.Tensor(shape=(None, height, width), dtype=np.int16,
                              encoding=tfds.features.Encoding.BYTES)


def token_views_feature(views: int, height: int, width: int) -> tfds.features.Tensor:
  """Code grids of `views` spatial views of every frame, [views, T, height, width] int16 bytes
  (`python -m vlx.tokenize --views`: all views of a video in one record)."""
  return tfds.features.Tensor(shape=(views, None, height, width), dtype=np.int16,
                              encoding=tfds.features.Encoding.BYTES)


def video_features(extra: Mapping[str, Any], streams: Streams = FRAMES_ONLY
                   ) -> tfds.features.FeaturesDict:
  """`extra` plus the features every video builder has (see data_contract.md) and `streams`'."""
  frames = {"video": tfds.features.Video((None, None, None, 3), encoding_format="jpeg")} \
      if streams.frames else {}
  return tfds.features.FeaturesDict({
      **extra,
      **frames,
      **stream_features(streams),
      "video_id": tfds.features.Text(),
      "duration": np.float32,
      "orig_fps": np.float32,
      "start": np.float32,
      "end": np.float32,
  })


def texts() -> tfds.features.Sequence:
  """Sequence(Text): `captions`, `segment_captions`, `mc_choices`, ..."""
  return tfds.features.Sequence(tfds.features.Text())


def caption_features(**extra) -> dict[str, Any]:
  """`captions`: every caption of the clip (+ `extra`)."""
  return {"captions": texts(), **extra}


def qa_features(**extra) -> dict[str, Any]:
  """Open-ended QA: `qa` Sequence({question, answer, qtype}) (+ `extra`)."""
  text = tfds.features.Text()
  return {"qa": tfds.features.Sequence({"question": text, "answer": text, "qtype": text}),
          **extra}


def mc_features(**extra) -> dict[str, Any]:
  """Multiple choice: `question` ('' when the options are captions), `mc_choices`, `mc_answer`."""
  return {"question": tfds.features.Text(), "mc_choices": texts(), "mc_answer": np.int32, **extra}


def classification_features(**extra) -> dict[str, Any]:
  """`label` ClassLabel + `label_name` Text (+ `extra`): the classification features. The names
  are unknown until the annotation files are read: set them with VideoDatasetBuilder.set_label_names
  while building (TFDS stores them in label.labels.txt)."""
  return {"label": tfds.features.ClassLabel(), "label_name": tfds.features.Text(), **extra}


def index_videos(folders, extensions: Sequence[str], *, recursive: bool = True
                 ) -> dict[str, str]:
  """{file stem: path} of the files with one of `extensions` (any case) under `folders` (one
  folder or a list; absent ones are skipped). Walks in sorted order; the first path found for a
  stem wins, so earlier folders take precedence."""
  if isinstance(folders, (str, os.PathLike)):
    folders = [folders]
  exts = {e.lower() for e in extensions}
  index: dict[str, str] = {}
  for top in map(os.fspath, folders):
    if not os.path.isdir(top):
      continue
    for folder, dirs, files in os.walk(top):
      dirs.sort()
      if not recursive:
        dirs.clear()
      for f in sorted(files):
        stem, ext = os.path.splitext(f)
        if ext.lower() in exts and stem not in index:
          index[stem] = os.path.join(folder, f)
  return index


# ----------------------------------------------------------------------------- decoding workers

@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  fps: float
  short_side: int
  max_frames: int
  cache: str  # the settings folder of the frame cache, '' for none
  streams: Streams = FRAMES_ONLY


def decode_settings(config: VideoBuilderConfig, cache: str | None = None,
                    streams: Streams = FRAMES_ONLY) -> DecodeSettings:
  """What decode_record needs: the config's fps / short side / cap, the cache folder
  (`cache`, else VLX_FRAME_CACHE, else config.frame_cache; '' = none) and the builder's streams."""
  if cache is None:
    cache = os.environ.get(CACHE_ENV) or getattr(config, "frame_cache", "") or ""
  settings = (float(config.fps), int(config.short_side), int(config.max_frames))
  folder = frame_cache.settings_dir(cache, *settings) if cache else ""
  return DecodeSettings(*settings, cache=folder, streams=streams)


def decode_record(record: VideoRecord, s: DecodeSettings) -> tuple[str, Any]:
  """('ok', (jpegs, meta, cached)) | ('missing', None) | ('corrupt', message) for one record; the
  `audio` / `features` streams of s.streams (if any) go to meta['streams']."""
  if not s.streams.needs_video:
    status, payload = "ok", ([], {}, False)
  elif not s.streams.frames:
    status = "ok" if os.path.exists(record.video_path) else "missing"
    payload = ([], {}, False) if status == "ok" else None
  else:
    status, payload = _decode_frames(record, s)
  if status != "ok" or s.streams == FRAMES_ONLY:
    return status, payload
  try:
    extra = read_streams(record, s.streams)
  except FileNotFoundError:
    return "missing", None
  except media.MediaError as e:
    return "corrupt", str(e)
  jpegs, meta, cached = payload
  return "ok", (jpegs, {**meta, "streams": extra}, cached)


def read_streams(record: VideoRecord, streams: Streams) -> dict[str, np.ndarray]:
  """{'audio': int16 [N], 'features': float32 [N, D]} as `streams` asks (see Streams).
  FileNotFoundError: no features file; MediaError: undecodable audio or a bad features file."""
  out = {}
  if streams.audio_rate > 0:
    try:
      wave, _ = media.decode_audio(record.video_path, streams.audio_rate, start=record.start,
                                   end=record.end)
    except media.NoAudioError:
      wave = np.zeros([0], np.float32)
    out["audio"] = np.round(np.clip(wave, -1.0, 1.0) * 32767).astype(np.int16)
  if streams.features_dim > 0:
    path = record.fields.get("features")
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
      raise FileNotFoundError(f"{record.key}: features file {path!r} not found")
    try:
      feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise media.MediaError(f"{path}: cannot read features ({e})") from e
    if feats.ndim != 2 or feats.shape[1] != streams.features_dim:
      raise media.MediaError(f"{path}: features of shape {feats.shape}, expected "
                             f"[N, {streams.features_dim}]")
    out["features"] = feats.astype(np.float32)
  return out


def _decode_frames(record: VideoRecord, s: DecodeSettings) -> tuple[str, Any]:
  """('ok', (jpegs, meta, cached)) | ('missing', None) | ('corrupt', message) for one record."""
  entry = frame_cache.entry_path(s.cache, record.video_path, record.start, record.end) \
      if s.cache else ""
  if entry:
    hit = frame_cache.load(entry, record.video_path)
    if hit is not None:
      jpegs, meta, error = hit
      return ("corrupt", error) if error else ("ok", (jpegs, meta, True))
  if not os.path.exists(record.video_path):
    return "missing", None
  try:
    frames, meta = media.decode_video(record.video_path, fps=s.fps, short_side=s.short_side,
                                      max_frames=s.max_frames, start=record.start, end=record.end)
  except media.MediaError as e:
    if entry:
      frame_cache.store(entry, record.video_path, error=str(e))
    return "corrupt", str(e)
  jpegs = [media.encode_jpeg(f, JPEG_QUALITY) for f in frames]
  if entry:
    frame_cache.store(entry, record.video_path, jpegs=jpegs, meta=meta)
  return "ok", (jpegs, meta, False)


def _decode_task(args):
  return decode_record(*args)


def _num_workers(num_workers: int | None) -> int:
  if num_workers is None:
    num_workers = int(os.environ.get(WORKERS_ENV) or 0) or os.cpu_count() or 1
  return max(1, num_workers)


def map_records(records: Iterable[VideoRecord], s: DecodeSettings, num_workers: int | None,
                window: int = 0) -> Iterator[tuple[VideoRecord, tuple[str, Any]]]:
  """(record, decode_record(record)) in order, decoded in a process pool of `num_workers`.

  Records are consumed `window` at a time (default 512 per worker), so a 10M-record corpus never
  sits in memory at once.
  """
  workers = _num_workers(num_workers)
  window = window or 512 * workers
  it = iter(records)
  first = list(itertools.islice(it, window))
  if workers <= 1 or len(first) <= 1:
    for r in itertools.chain(first, it):
      yield r, decode_record(r, s)
    return
  # forkserver, not fork: the parent may run JAX/TF thread pools, and a forked child can deadlock
  # on a lock one of their threads held. Workers start clean (one import each, per build).
  methods = multiprocessing.get_all_start_methods()
  ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
  with ctx.Pool(min(workers, len(first)), initializer=media.set_decode_threads,
                initargs=(1,)) as pool:
    batch = first
    while batch:
      chunk = max(1, min(16, len(batch) // (workers * 8)))
      results = pool.imap(_decode_task, [(r, s) for r in batch], chunksize=chunk)
      yield from zip(batch, results)
      batch = list(itertools.islice(it, window))


# ----------------------------------------------------------------------------- reports

_REPORTS: dict[tuple[str, str], dict] = {}
_COLLECTOR: Callable | None = None


def last_report(builder_name: str, split: str) -> dict:
  """What the last generate_examples of (builder, split) in this process counted."""
  try:
    return dict(_REPORTS[(builder_name, split)])
  except KeyError:
    raise KeyError(f"no build report for {builder_name}/{split} in this process (built: "
                   f"{sorted('/'.join(k) for k in _REPORTS)})") from None


def _report_path(builder_name: str, config_name: str, split: str) -> str:
  folder = os.environ.get(REPORT_ENV) or os.path.expanduser("~/.cache/vlx/build_reports")
  return os.path.join(folder, f"{builder_name}-{config_name or 'default'}-{split}.json")


def _finish_report(report: dict) -> None:
  msg = (f"{report['builder']}/{report['split']}: found {report['found']} of "
         f"{report['annotated']} annotated videos ({report['missing']} missing, "
         f"{report['corrupt']} corrupt/undecodable skipped)")
  if report["records"] != report["annotated"] or report["failed_clips"]:
    msg += (f"; {report['examples']} of {report['records']} examples written "
            f"({report['failed_clips']} clips of found videos could not be cut)")
  if report["missing_videos"]:
    msg += f"\n  missing, e.g.: {', '.join(report['missing_videos'])}"
  if report["corrupt_videos"]:
    msg += "\n  corrupt, e.g.: " + "; ".join(report["corrupt_errors"])
  path = _report_path(report["builder"], report["config"], report["split"])
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(report, f, indent=1)
    msg += f"\n  report: {path}"
  except OSError as e:
    msg += f"\n  (could not write the report to {path}: {e})"
  report["message"] = msg
  _REPORTS[(report["builder"], report["split"])] = report
  log.info(msg)
  print(msg, flush=True)


@contextlib.contextmanager
def collect_records(consume: Callable[[str, str, VideoBuilderConfig, Iterable[VideoRecord]], None]
                    | None = None):
  """Inside this block generate_examples decodes nothing: it hands (builder, split, config,
  records) to `consume`, or appends them (records listed) to the yielded list. This is how
  extract_frames learns a builder's videos without decoding them."""
  global _COLLECTOR
  got: list = []
  previous = _COLLECTOR
  _COLLECTOR = consume or (lambda b, sp, c, recs: got.append((b, sp, c, list(recs))))
  try:
    yield got
  finally:
    _COLLECTOR = previous


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


class _Tally:
  """Counts per distinct video file; holds path hashes, not paths (10M-video corpora)."""

  def __init__(self):
    self.annotated, self.found, self.missing = set(), set(), set()
    self.missing_names: list[str] = []
    self.errors: dict[str, str] = {}        # path -> first MediaError message
    self.error_records: list[int] = []      # path hash of every record that failed to decode
    self.records = self.examples = self.cached = self.frames = 0

  def add(self, path: str, status: str, payload) -> None:
    h = hash(path)
    self.records += 1
    self.annotated.add(h)
    if status == "missing":
      if h not in self.missing and len(self.missing_names) < _NUM_NAMES:
        self.missing_names.append(os.path.basename(path))
      self.missing.add(h)
    elif status == "corrupt":
      self.errors.setdefault(path, payload)
      self.error_records.append(h)
    else:
      self.found.add(h)
      self.examples += 1
      self.cached += payload[2]
      self.frames += len(payload[0])

  def report(self, **head) -> dict:
    corrupt = sorted(p for p in self.errors if hash(p) not in self.found)
    return dict(
        **head, annotated=len(self.annotated), found=len(self.found), missing=len(self.missing),
        corrupt=len(corrupt), records=self.records, examples=self.examples,
        failed_clips=sum(h in self.found for h in self.error_records), cached=self.cached,
        frames=self.frames, missing_videos=self.missing_names,
        corrupt_videos=[os.path.basename(p) for p in corrupt[:_NUM_NAMES]],
        corrupt_errors=[self.errors[p] for p in corrupt[:_NUM_NAMES]])


def generate_examples(records: Iterable[VideoRecord], config: VideoBuilderConfig, *,
                      builder_name: str, split: str, num_workers: int | None = None,
                      where: str = "", streams: Streams = FRAMES_ONLY
                      ) -> Iterator[tuple[str, dict]]:
  """(key, example) per decodable record, decoded in a process pool; counts what it skips.

  `records` may be a generator: it is read in windows, never held whole. A split that ends with
  no example raises DatasetLayoutError (one line naming `where` the videos were looked for, how
  many were annotated and one path tried).
  """
  if _COLLECTOR is not None:
    _COLLECTOR(builder_name, split, config, records)
    return
  s = decode_settings(config, streams=streams)
  t0 = time.time()
  tally = _Tally()
  tried = ""
  for rec, (status, payload) in map_records(records, s, num_workers):
    tally.add(rec.video_path, status, payload)
    tried = tried or rec.video_path
    if tally.records % 1000 == 0:
      log.info("%s/%s: %d records (%.1f/s)", builder_name, split, tally.records,
               tally.records / (time.time() - t0))
    if status != "ok":
      continue
    jpegs, meta, _ = payload
    has_cut = rec.start is not None or rec.end is not None
    example = dict(rec.fields)
    example.update(
        video=jpegs,
        video_id=rec.fields.get("video_id") or _stem(rec.video_path),
        duration=float(meta.get("duration", 0.0)), orig_fps=float(meta.get("orig_fps", 0.0)),
        start=float(rec.start or 0.0) if has_cut else -1.0,
        end=float(rec.end) if rec.end is not None else -1.0)
    example.update(meta.get("streams", {}))
    if not streams.frames:
      del example["video"]
    yield rec.key, example
  report = tally.report(builder=builder_name, config=config.name, split=split,
                       seconds=round(time.time() - t0, 3))
  _finish_report(report)
  if not report["examples"]:
    raise DatasetLayoutError(release_layout.empty_split_message(
        f"{builder_name}/{config.name}", split, where or "the manual dir", report["annotated"],
        tried, report["corrupt"], (report["corrupt_errors"] or [""])[0]))


# ----------------------------------------------------------------------------- builder base

class VideoDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """The plumbing every video builder shares: version, DatasetInfo from `_features()` +
  HOMEPAGE / CITATION, and `_split_generators` -> generate_examples over `_split_records()`.

  A dataset's `Builder(VideoDatasetBuilder)` is registered by TFDS as usual (this abstract base is
  not) and keeps `code_path = epath.Path(__file__)` and its MANUAL_DOWNLOAD_INSTRUCTIONS; it only
  implements `_features` and `_split_records` (its own parsing of the official files).
  """
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = ""
  CITATION = ""      # BibTeX, '' = none
  STREAMS = FRAMES_ONLY  # what else is stored per example (audio, pre-computed features): Streams

  @abc.abstractmethod
  def _features(self) -> Mapping[str, Any]:
    """The dataset's own features for self.builder_config (video_features adds the common ones)."""

  @abc.abstractmethod
  def _split_records(self, manual_dir: str) -> Mapping[str, Iterable[VideoRecord] | Missing]:
    """{split: records}. Parse eagerly (lists) so annotation errors surface before any decoding;
    a generator per split streams huge corpora (it runs when the split is built). A split whose
    files are absent maps to release_layout.Missing(files): the others are built."""

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {"citation": self.CITATION} if self.CITATION else {}
    return self.dataset_info_from_configs(features=video_features(self._features(), self.STREAMS),
                                          homepage=self.HOMEPAGE, **extra)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    name = f"{self.name}/{self.builder_config.name}"
    splits = release_layout.buildable(self._split_records(manual_dir), name, manual_dir)
    # cached frames need no video file, nor do pre-computed features
    if not decode_settings(self.builder_config).cache and self.STREAMS.needs_video:
      release_layout.check_videos_present(splits, name, manual_dir)
    return {split: self._generate_examples(split, recs, manual_dir)
            for split, recs in splits.items()}

  def _generate_examples(self, split: str, records: Iterable[VideoRecord], where: str = ""):
    yield from generate_examples(records, self.builder_config, builder_name=self.name,
                                 split=split, where=where, streams=self.STREAMS)

  def set_label_names(self, names: Sequence[str]) -> None:
    """Names of the `label` ClassLabel, read from the annotation files while building. A builder
    restored from a data_dir keeps its stored names; different ones raise (use a fresh data_dir)."""
    label = self.info.features["label"]
    if label.num_classes is None:
      label.names = list(names)
    elif list(label.names) != list(names):
      raise ValueError(f"{self.name}/{self.builder_config.name}: the class list changed since "
                       f"this data_dir was built ({len(label.names)} -> {len(names)} names, "
                       f"{list(label.names)[:5]}... -> {list(names)[:5]}...); use a fresh data_dir")

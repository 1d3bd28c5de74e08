"""Decoding videos, GIFs and images into resampled uint8 frames (PyAV + PIL), JPEG encoding, and
decoding audio tracks into resampled float32 waveforms (PyAV).

Builders store frames at a fixed rate chosen per dataset (`fps`) rather than every decoded frame:
the frame kept for sample time tau is the one on screen at tau (last frame with pts <= tau), so a
clip of D seconds gives about D * fps frames whatever its native rate, and two builds agree.
Anything wrong with a file (empty, truncated, not a video) raises MediaError naming it; a build
counts and skips those instead of failing after hours of work.
"""
from __future__ import annotations

import io
import math
import os

import av
import numpy as np
from PIL import Image, ImageSequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_EPS = 1e-6
# FFmpeg decode threads per video: 0 = FFmpeg's choice (all cores), 1 = single-threaded, which
# builder processes use (the pool already keeps every core busy).
_decode_threads = 0


def set_decode_threads(n: int) -> None:
  global _decode_threads
  _decode_threads = int(n)


class MediaError(Exception):
  """Corrupt, empty or undecodable media: a build skips the file and counts it."""


class NoAudioError(MediaError):
  """The file decodes but has no audio stream (a silent video: builders store empty audio)."""


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(H, W) with min(H, W) == short_side keeping the aspect; never upscales (0 = keep)."""
  short = min(height, width)
  if short_side <= 0 or short <= short_side:
    return height, width
  scale = short_side / short
  if height <= width:
    return short_side, max(1, int(round(width * scale)))
  return max(1, int(round(height * scale))), short_side


def spread_indices(n: int, k: int) -> np.ndarray:
  """`k` indices evenly spread over range(n), first and last included (all of them if n <= k)."""
  if k <= 0 or n <= k:
    return np.arange(n)
  return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  """uint8 [H, W, 3] -> JPEG bytes (deterministic: same frame, same bytes)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _image_frames(path: str, short_side: int) -> tuple[np.ndarray, dict]:
  with Image.open(path) as im:
    im = im.convert("RGB")
    h, w = resized_size(im.height, im.width, short_side)
    if (h, w) != (im.height, im.width):
      im = im.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    frame = np.asarray(im, np.uint8)
  return frame[None], dict(duration=0.0, orig_fps=0.0, num_frames=1)


def _gif_with_pil(path: str) -> list[tuple[float, float, Image.Image]]:
  """(time, duration, RGB frame) of every GIF frame: PIL handles GIFs PyAV's demuxer rejects."""
  out, t = [], 0.0
  with Image.open(path) as im:
    for frame in ImageSequence.Iterator(im):
      dur = max(float(frame.info.get("duration", 100) or 100), 10.0) / 1000.0
      out.append((t, dur, frame.convert("RGB")))
      t += dur
  return out


class _Sampler:
  """Streams (time, frame) pairs and keeps the frames shown at start + k / fps (or all of them)."""

  def __init__(self, fps: float, start: float, end: float, to_array):
    self.fps, self.start, self.end, self.to_array = fps, start, end, to_array
    self.frames: list[np.ndarray] = []
    self.k = 0
    self.prev = None  # (time, frame, cached array)

  def _target(self) -> float:
    return self.start + self.k / self.fps

  def _emit_prev_until(self, limit: float) -> None:
    t, frame, arr = self.prev
    while self._target() < limit - _EPS and self._target() < self.end - _EPS:
      if arr is None:
        arr = self.to_array(frame)
        self.prev = (t, frame, arr)
      self.frames.append(arr)
      self.k += 1

  def push(self, t: float, frame) -> bool:
    """Adds a frame; False once frames past `end` need not be decoded any more."""
    if self.fps <= 0:
      if t >= self.end - _EPS:
        return False
      if t >= self.start - _EPS:
        self.frames.append(self.to_array(frame))
      return True
    if self.prev is not None:
      self._emit_prev_until(t)
    if self._target() >= self.end - _EPS:
      return False
    self.prev = (t, frame, None)
    return True

  def finish(self, last_end: float) -> list[np.ndarray]:
    if self.fps > 0 and self.prev is not None:
      self._emit_prev_until(last_end)
    return self.frames


def _decode_av(path: str, fps: float, short_side: int, start: float, end: float
               ) -> tuple[list[np.ndarray], dict]:
  with av.open(path) as container:
    if not container.streams.video:
      raise MediaError(f"{path}: no video stream")
    stream = container.streams.video[0]
    if _decode_threads != 1:
      stream.thread_type = "AUTO"
      if _decode_threads > 1:
        stream.codec_context.thread_count = _decode_threads
    tb = float(stream.time_base) if stream.time_base else 0.0
    rate = stream.average_rate or stream.guessed_rate
    orig_fps = float(rate) if rate else 0.0
    offset = stream.start_time * tb if stream.start_time is not None and tb else 0.0
    if stream.duration is not None and tb:
      duration = float(stream.duration * tb)
    elif container.duration is not None:
      duration = container.duration / av.time_base
    else:
      duration = 0.0
    size = None
    def to_array(frame):
      nonlocal size
      if size is None:
        size = resized_size(frame.height, frame.width, short_side)
      return frame.to_ndarray(width=size[1], height=size[0], format="rgb24",
                              interpolation="AREA")
    if start > 0 and tb:
      try:
        container.seek(int((start + offset) / tb), stream=stream, backward=True)
      except av.error.FFmpegError:
        container.seek(0, stream=stream)
    sampler = _Sampler(fps, start, end, to_array)
    last_t, last_dur, index = -1.0, 1.0 / orig_fps if orig_fps else 0.0, 0
    for frame in container.decode(stream):
      if frame.pts is not None and tb:
        t = frame.pts * tb - offset
      else:
        t = index / orig_fps if orig_fps else float(index)
      index += 1
      if frame.duration and tb:
        last_dur = frame.duration * tb
      last_t = max(last_t, t)
      if not sampler.push(t, frame):
        break
    if index == 0:
      raise MediaError(f"{path}: no decodable frames" + (f" from {start:g} s" if start else ""))
    decoded_end = last_t + last_dur
    duration = max(duration, decoded_end) if end == math.inf else (duration or decoded_end)
    frames = sampler.finish(min(decoded_end, end))
  return frames, dict(duration=float(duration), orig_fps=orig_fps)


def _decode_gif_pil(path: str, fps: float, short_side: int, start: float, end: float
                    ) -> tuple[list[np.ndarray], dict]:
  items = _gif_with_pil(path)
  if not items:
    raise MediaError(f"{path}: no decodable frames")
  def to_array(im):
    h, w = resized_size(im.height, im.width, short_side)
    if (h, w) != (im.height, im.width):
      im = im.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(im, np.uint8)
  sampler = _Sampler(fps, start, end, to_array)
  for t, _, im in items:
    if not sampler.push(t, im):
      break
  duration = items[-1][0] + items[-1][1]
  frames = sampler.finish(min(duration, end))
  return frames, dict(duration=duration, orig_fps=len(items) / duration)


def decode_video(path: str, *, fps: float, short_side: int, max_frames: int = 0,
                 start: float | None = None, end: float | None = None
                 ) -> tuple[np.ndarray, dict]:
  """uint8 [T, H, W, 3] frames of `path` resampled to `fps` and resized to `short_side`.

  fps 0 keeps every decoded frame; short_side 0 keeps the size (never upscales); start/end cut the
  clip to [start, end) seconds; max_frames > 0 keeps that many evenly spread frames. Images are
  1-frame videos. meta = {'duration', 'orig_fps', 'num_frames'}. Raises MediaError naming `path`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MediaError(f"{path}: file not found")
  if os.path.getsize(path) == 0:
    raise MediaError(f"{path}: empty file")
  lo = max(float(start), 0.0) if start is not None else 0.0
  hi = float(end) if end is not None and end >= 0 else math.inf
  if hi <= lo:
    raise MediaError(f"{path}: empty cut [start={start}, end={end}]")
  ext = os.path.splitext(path)[1].lower()
  try:
    if ext in IMAGE_EXTENSIONS:
      frames, meta = _image_frames(path, short_side)
    else:
      try:
        frame_list, meta = _decode_av(path, fps, short_side, lo, hi)
      except (av.error.FFmpegError, MediaError):
        if ext != ".gif":
          raise
        frame_list, meta = _decode_gif_pil(path, fps, short_side, lo, hi)
      if not frame_list:
        raise MediaError(f"{path}: no frames in [{lo}, {hi}) seconds "
                         f"(video lasts {meta['duration']:.2f} s)")
      frames = np.stack(frame_list)
  except MediaError:
    raise
  except (av.error.FFmpegError, OSError, ValueError, EOFError, SyntaxError, RuntimeError) as e:
    raise MediaError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e
  if max_frames > 0 and len(frames) > max_frames:
    frames = frames[spread_indices(len(frames), max_frames)]
  meta["num_frames"] = int(len(frames))
  return frames, meta


def decode_audio(path: str, sample_rate: int, *, mono: bool = True, start: float | None = None,
                 end: float | None = None) -> tuple[np.ndarray, int]:
  """float32 samples of the first audio stream of `path` resampled to `sample_rate` (PyAV's
  AudioResampler: FFmpeg's swresample), in [-1, 1]: [N] when `mono` (FFmpeg's downmix of the
  channels), else [N, channels]. start/end cut [start, end) seconds. Returns
  (samples, sample_rate). A file without an audio stream raises NoAudioError (builders store empty
  audio for it); anything else wrong raises MediaError naming `path`."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MediaError(f"{path}: file not found")
  lo = max(float(start), 0.0) if start is not None else 0.0
  hi = float(end) if end is not None and end >= 0 else math.inf
  if hi <= lo:
    raise MediaError(f"{path}: empty cut [start={start}, end={end}]")
  try:
    with av.open(path) as container:
      if not container.streams.audio:
        raise NoAudioError(f"{path}: no audio stream")
      stream = container.streams.audio[0]
      # Encoders pad the last frame (AAC: to 1024 samples): keep the stream's stated duration.
      stated = float(stream.duration * stream.time_base) if stream.duration and \
          stream.time_base else math.inf
      resampler = av.AudioResampler(format="flt", layout="mono" if mono else None,
                                    rate=int(sample_rate))
      chunks: list[np.ndarray] = []   # [samples, channels] each ('flt' is packed/interleaved)
      def add(frames):
        for r in frames:
          chunks.append(r.to_ndarray().reshape(-1, len(r.layout.channels)))
      for frame in container.decode(stream):
        add(resampler.resample(frame))
      add(resampler.resample(None))
  except MediaError:
    raise
  except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as e:
    raise MediaError(f"{path}: cannot decode audio ({type(e).__name__}: {e})") from e
  samples = (np.concatenate(chunks) if chunks else np.zeros((0, 1))).astype(np.float32)
  first = int(round(lo * sample_rate))
  last = int(round(min(hi, stated) * sample_rate)) if min(hi, stated) < math.inf else len(samples)
  samples = samples[first:last]
  return (samples[:, 0] if mono else samples), int(sample_rate)

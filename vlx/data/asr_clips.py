"""Clips of narrated videos for pre-training (training task 'asr_clips', vlx.data.tasks): each
training record is a whole video (stored feature sequences, a log-mel spectrogram and its ASR
segments); the stream unrolls it into `n_clips` consecutive rows, so a batch of B rows holds
B / n_clips videos and the clips of one video are negatives of each other.

Per clip (shared/reference/eao/spec.md section 4, "HowTo100M pre-training sampling"):
  - a random start in [0, seconds - min_time] (seconds = the video's whole seconds:
    floor(duration + audio_centre), the reference's frames_to_time of its spectrogram), end =
    start + min_time;
  - if an ASR segment covers the start (else: the end), the clip is that segment, extended with
    the nearer neighbouring segment (by the resulting span; the later one when only it exists, the
    earlier one when only that exists) until it spans >= min_time; its text is the segments'
    words (the regex [\\w']+, in the order they were added: the reference appends earlier
    segments' words after the first segment's) joined by spaces; otherwise the text is '';
  - every stored video feature `name` of `video` (rate r per second) is cut to
    [int(start * r), int(end * r) + 1);
  - the audio feature (rate `audio_rate` frames per second, time first) is cut from
    frame(start + audio_offset) to frame(start + audio_offset + audio_seconds) for ASR clips
    (frame(t) = floor((t - audio_centre) * rate), librosa's time_to_frames with n_fft / 2 =
    12.5 ms at 100 frames/s; audio_seconds = 0: to frame(end + audio_offset)) and
    frame(start) .. + audio_frames for clips without ASR; at most `audio_frames` frames
    (0 = no cap) are kept.
The readers of the inputs (vlx.data.modalities) then read the cut windows (e.g. the first 12 video
tokens, 768 audio frames).

Randomness: one uniform per clip from (config.seed, salt seeds.STREAM_SALTS['clips'], the global
counter of the video's first row), so batches depend only on (seed, step), resume included.

Config: config.data.train.clips (all optional):
  n_clips (10), min_time (8.0 s), audio_offset (4.0 s; the reference's text-audio misalignment
  flag, 0 = aligned), audio_seconds (8.0; 0 = the clip's own length), audio_frames (768; 0 = the
  whole window), audio ('audio': the spectrogram feature [n, bins], '' = none), audio_rate (100.0),
  audio_centre (0.0125 s), video ({'features_2d': 1.0, 'features_3d': 1.5}: feature -> steps per
  second), asr ('asr': Sequence({start, end, text})), duration ('duration': seconds).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from vlx.data import seeds
from vlx.data.errors import DataConfigError

TEXT_KEY = "caption"          # the row's clip text (tokenized by the task)
WORDS = re.compile(r"[\w']+")
DEFAULT_VIDEO = (("features_2d", 1.0), ("features_3d", 1.5))


@dataclasses.dataclass(frozen=True)
class ClipSettings:
  """config.data.train.clips (see the module docstring)."""
  n_clips: int = 10
  min_time: float = 8.0
  audio_offset: float = 4.0
  audio_seconds: float = 8.0
  audio_frames: int = 768
  audio: str = "audio"
  audio_rate: float = 100.0
  audio_centre: float = 0.0125
  video: tuple[tuple[str, float], ...] = DEFAULT_VIDEO
  asr: str = "asr"
  duration: str = "duration"

  @property
  def features(self) -> tuple[str, ...]:
    """The TFDS features the sampling reads and cuts."""
    return (self.asr, self.duration, *(n for n, _ in self.video),
            *((self.audio,) if self.audio else ()))


def settings(t, where: str = "config.data.train.clips") -> ClipSettings:
  """ClipSettings of data block `t` (its optional `clips` ConfigDict); one-line errors."""
  cfg = t.get("clips", None) or {}
  known = {f.name for f in dataclasses.fields(ClipSettings)}
  unknown = sorted(set(cfg.keys()) - known)
  if unknown:
    raise DataConfigError(f"{where}: unknown field(s) {unknown}; expected some of {sorted(known)}")
  kw: dict[str, Any] = {}
  for f in dataclasses.fields(ClipSettings):
    if f.name not in cfg:
      continue
    value = cfg[f.name]
    try:
      if f.name == "video":
        kw[f.name] = tuple((str(k), float(v)) for k, v in dict(value).items())
      elif f.name in ("n_clips", "audio_frames"):
        kw[f.name] = int(value)
      elif f.name in ("audio", "asr", "duration"):
        kw[f.name] = str(value or "")
      else:
        kw[f.name] = float(value)
    except (TypeError, ValueError):
      raise DataConfigError(f"{where}.{f.name}={value!r}: not a valid value") from None
  s = ClipSettings(**kw)
  if s.n_clips < 1:
    raise DataConfigError(f"{where}.n_clips={s.n_clips}: expected >= 1")
  if s.min_time <= 0 or s.audio_rate <= 0 or s.audio_frames < 0 or s.audio_seconds < 0:
    raise DataConfigError(f"{where}: min_time and audio_rate must be > 0, audio_frames and "
                          "audio_seconds >= 0")
  if not s.video or any(r <= 0 for _, r in s.video):
    raise DataConfigError(f"{where}.video={dict(s.video)}: expected {{feature: steps per second "
                          "> 0}}")
  return s


def check_features(s: ClipSettings, builder, where: str = "config.data.train.clips") -> None:
  """Every feature the sampling reads is in the dataset."""
  have = set(builder.info.features)
  missing = [n for n in s.features if n not in have]
  if missing:
    raise DataConfigError(f"{where}: dataset {builder.name} has no feature(s) {missing} (it has "
                          f"{sorted(have)}); set clips.video / clips.audio / clips.asr")


# ----------------------------------------------------------------------------- numpy windows

def _frame(t: float, s: ClipSettings) -> int:
  return math.floor((t - s.audio_centre) * s.audio_rate)


def _segment_span(starts, ends, texts, ind: int, min_time: float) -> tuple[int, int, list[str]]:
  """The segments [a, b] around `ind` spanning >= min_time and their words (reference order)."""
  a = b = ind
  words = WORDS.findall(texts[ind])
  last = len(starts) - 1
  while ends[b] - starts[a] < min_time:
    if a > 0 and b < last:
      if ends[b] - starts[a - 1] <= ends[b + 1] - starts[a]:
        a -= 1
        words += WORDS.findall(texts[a])
      else:
        b += 1
        words += WORDS.findall(texts[b])
    elif a > 0:
      a -= 1
      words += WORDS.findall(texts[a])
    elif b < last:
      b += 1
      words += WORDS.findall(texts[b])
    else:
      break
  return a, b, words


def clip_windows(u: Sequence[float], duration: float, starts: Sequence[float],
                 ends: Sequence[float], texts: Sequence[str], s: ClipSettings) -> dict:
  """The clips of one video for uniforms `u` [k]: start / end seconds, the [lo, hi) step range of
  every video feature (video_lo / video_hi [P, k], P = len(s.video)), the audio frame range
  (audio_lo / audio_hi [k]) and the texts (list of k str)."""
  starts, ends = np.asarray(starts, np.float64), np.asarray(ends, np.float64)
  texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in texts]
  seconds = math.floor(float(duration) + s.audio_centre)
  out = dict(start=[], end=[], audio_lo=[], audio_hi=[], text=[])
  for ui in np.asarray(u, np.float64):
    start = float(ui) * max(0.0, seconds - s.min_time)
    end = start + s.min_time
    ind = None
    if len(starts):
      i0 = max(0, int(np.searchsorted(starts, start, side="left")) - 1)
      i1 = max(0, int(np.searchsorted(starts, end, side="left")) - 1)
      if starts[i0] <= start <= ends[i0]:
        ind = i0
      elif starts[i1] <= end <= ends[i1]:
        ind = i1
    if ind is None:
      lo = max(0, _frame(start, s))
      hi = lo + (s.audio_frames or int(round(s.min_time * s.audio_rate)))
      text = ""
    else:
      a, b, words = _segment_span(starts, ends, texts, ind, s.min_time)
      start, end = float(starts[a]), float(ends[b])
      audio_start = start + s.audio_offset
      audio_end = audio_start + s.audio_seconds if s.audio_seconds > 0 else end + s.audio_offset
      lo, hi = max(0, _frame(audio_start, s)), _frame(audio_end, s)
      if s.audio_frames:
        hi = min(hi, lo + s.audio_frames)
      text = " ".join(words)
    for key, value in (("start", start), ("end", end), ("audio_lo", lo),
                       ("audio_hi", max(hi, lo)), ("text", text)):
      out[key].append(value)
  out["video_lo"] = [[int(t * r) for t in out["start"]] for _, r in s.video]
  out["video_hi"] = [[int(t * r) + 1 for t in out["end"]] for _, r in s.video]
  return out


def _windows_np(u, duration, starts, ends, texts, s: ClipSettings):
  w = clip_windows(u, duration, starts, ends, texts, s)
  k = len(u)
  return (np.asarray(w["video_lo"], np.int64).reshape(len(s.video), k),
          np.asarray(w["video_hi"], np.int64).reshape(len(s.video), k),
          np.asarray(w["audio_lo"], np.int64), np.asarray(w["audio_hi"], np.int64),
          np.asarray([t.encode("utf-8") for t in w["text"]], object))


# ----------------------------------------------------------------------------- TF unrolling

def clip_uniforms(seed: tf.Tensor, n_clips: int) -> tf.Tensor:
  """float64 [n_clips] in [0, 1): the clip starts' draws of one video."""
  return tf.random.stateless_uniform([n_clips], seed, dtype=tf.float64)


def video_seed(ctx, v: tf.Tensor, n_clips: int) -> tf.Tensor:
  """The seed of host video v (its rows are v * n_clips ...): by its first row's global counter."""
  return ctx.example_seed("clips", ctx.counter_of(v * n_clips))


def cut_clips(ex: Mapping[str, tf.Tensor], seed: tf.Tensor, s: ClipSettings) -> tf.data.Dataset:
  """The n_clips rows of one decoded video `ex`: its keys, with the video / audio features cut
  to each clip's window, the ASR and duration features dropped and TEXT_KEY added."""
  k = s.n_clips
  asr = ex[s.asr]
  lo, hi, alo, ahi, text = tf.numpy_function(
      lambda *a: _windows_np(*a, s), [clip_uniforms(seed, k), ex[s.duration], asr["start"],
                                      asr["end"], asr["text"]],
      [tf.int64, tf.int64, tf.int64, tf.int64, tf.string], stateful=False)
  lo, hi = (tf.ensure_shape(x, [len(s.video), k]) for x in (lo, hi))
  alo, ahi, text = (tf.ensure_shape(x, [k]) for x in (alo, ahi, text))
  rest = {key: value for key, value in ex.items()
          if key not in (s.asr, s.duration, s.audio, *(n for n, _ in s.video))}

  def clip(i):
    row = dict(rest)
    for p, (name, _) in enumerate(s.video):
      row[name] = ex[name][lo[p, i]:hi[p, i]]
    if s.audio:
      row[s.audio] = ex[s.audio][alo[i]:ahi[i]]
    row[TEXT_KEY] = text[i]
    return row

  return tf.data.Dataset.range(k).map(clip)


def unroll(base: tf.data.Dataset, ctx, s: ClipSettings) -> tf.data.Dataset:
  """Training rows from ctx.first_example on: the host's videos (`base`, ctx.n_host of them)
  shuffled epoch after epoch by (seed, epoch) as one-row-per-record tasks are, each unrolled into
  s.n_clips consecutive rows."""
  k = s.n_clips
  if ctx.local_batch % k:
    raise DataConfigError(f"config.data.global_batch_size per process ({ctx.local_batch}) is not "
                          f"divisible by config.data.train.clips.n_clips={k} (a batch holds "
                          "whole videos)")
  first = ctx.first_example // k
  videos = seeds.shuffled_epochs(base, ctx.n_host, seed=ctx.seed, salt="shuffle",
                                 buffer=ctx.buffer, first=first).enumerate(start=first)
  return videos.flat_map(lambda v, ex: cut_clips(ex, video_seed(ctx, v, k), s))

"""Audio reader: a stored mono waveform -> fixed-length `audio` waveform or log-mel spectrogram.

Follows the audio input of shared/reference/eao/spec.md section 4 ("Audio",
dataset/utils.py: create_audio_features): a 40-band mel spectrogram at 16 kHz with a 10 ms hop
(n_fft 400 = 25 ms windows), the first `num_audio_STFT_frames` frames kept, zero padded, mask = 1
for the real frames; 768 frames (7.68 s, 12 DAVEnet tokens) in pre-training. The defaults below are
that setting (`seconds` = 7.68 -> 768 frames). The spec leaves the spectrogram's log/normalisation
open (section 9): this reader takes log(mel power + log_eps), with no further normalisation.

Storage and resampling: builders store mono audio at one rate per dataset (vlx.data.builder_base
decodes and resamples it with PyAV at build time, int16 PCM; moving_shapes stores float32 at
8 kHz). When the config's `sample_rate` differs from the stored rate (`stored_rate`), the reader
resamples at read time in TF: it cuts the window at the stored rate first, then resamples that
fixed-size window band-limited (FFT: spectrum truncated or zero-extended), so shapes stay static.

Windowing: train crops a random `seconds` window (seeded by the row's seed); eval takes the centred
window (of the view's temporal window, which the evaluation stream passes for views). Shorter
audio is zero padded and `<key>_mask` says which samples (waveform) or frames (log-mel: a frame is
real when its first sample is) are real; empty audio gives all zeros with an all-zero mask.

Config (`data.<split>.inputs.<name>`, reader='audio'):
  feature         TFDS feature to read ('audio')
  key             batch key ('audio'); the mask is `<key>_mask`
  representation  'log_mel' -> [frames, num_mel_bins] float32 | 'waveform' -> [samples] float32
  sample_rate     rate the model sees (16000)
  stored_rate     rate the builder stored (0 = sample_rate, no resampling)
  seconds         window length (7.68); samples = round(seconds * sample_rate),
                  frames = samples // frame_step
  num_mel_bins (40), frame_length_ms (25), frame_step_ms (10), fmin (0), fmax (0 = Nyquist),
  log_eps (1e-6): the log-mel transform (Hann window, FFT size = next power of two)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from vlx.data.modalities import windows
from vlx.data.modalities.fields import Fields

REPRESENTATIONS = ("log_mel", "waveform")
_PCM_SCALE = 1.0 / 32768.0   # integer samples are 16-bit PCM


@dataclasses.dataclass(frozen=True)
class AudioReader:
  """See the module docstring for the fields."""
  feature: str = "audio"
  key: str = "audio"
  representation: str = "log_mel"
  sample_rate: int = 16000
  stored_rate: int = 0
  seconds: float = 7.68
  num_mel_bins: int = 40
  frame_length_ms: float = 25.0
  frame_step_ms: float = 10.0
  fmin: float = 0.0
  fmax: float = 0.0
  log_eps: float = 1e-6

  @property
  def keys(self) -> tuple[str, ...]:
    return (self.key, self.key + "_mask")

  @property
  def source_rate(self) -> int:
    return self.stored_rate or self.sample_rate

  @property
  def num_samples(self) -> int:
    return int(round(self.seconds * self.sample_rate))

  @property
  def source_samples(self) -> int:
    return int(round(self.seconds * self.source_rate))

  @property
  def frame_length(self) -> int:
    return int(round(self.frame_length_ms * self.sample_rate / 1000.0))

  @property
  def frame_step(self) -> int:
    return int(round(self.frame_step_ms * self.sample_rate / 1000.0))

  @property
  def num_frames(self) -> int:
    return self.num_samples // self.frame_step

  def decoder(self) -> Any:
    return None  # the stored tensor is the waveform

  def spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
    if self.representation == "waveform":
      return {self.key: ((self.num_samples,), np.float32),
              self.key + "_mask": ((self.num_samples,), np.int32)}
    return {self.key: ((self.num_frames, self.num_mel_bins), np.float32),
            self.key + "_mask": ((self.num_frames,), np.int32)}

  def read(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool, view: int = 0
           ) -> dict[str, tf.Tensor]:
    del view  # evaluation views arrive as the view's temporal window of `encoded`
    wave, real = self.window(encoded, seed, train=train)
    if self.representation == "waveform":
      mask = tf.sequence_mask(real, self.num_samples, dtype=tf.int32)
      return {self.key: wave * tf.cast(mask, tf.float32), self.key + "_mask": mask}
    real_frames = tf.minimum((real + self.frame_step - 1) // self.frame_step, self.num_frames)
    mask = tf.sequence_mask(real_frames, self.num_frames, dtype=tf.int32)
    mel = self.log_mel(wave) * tf.cast(mask, tf.float32)[:, None]
    return {self.key: mel, self.key + "_mask": mask}

  def window(self, encoded: tf.Tensor, seed: tf.Tensor, *, train: bool
             ) -> tuple[tf.Tensor, tf.Tensor]:
    """(float32 [num_samples] waveform at sample_rate, int32 number of real samples in it)."""
    x = tf.convert_to_tensor(encoded)
    if x.dtype.is_integer:
      x = tf.cast(x, tf.float32) * _PCM_SCALE
    x = tf.cast(x, tf.float32)
    if x.shape.rank == 2:  # [N, channels] -> mono
      x = tf.reduce_mean(x, axis=-1)
    x = tf.reshape(x, [-1])
    n_src = self.source_samples
    start = windows.window_start(tf.shape(x)[0], n_src, seed, train=train)
    wave, mask = windows.crop_or_pad(x, start, n_src)
    real = tf.reduce_sum(mask)
    if n_src != self.num_samples:
      wave = resample(wave, self.num_samples)
      real = (real * self.num_samples + n_src // 2) // n_src
    return wave, real

  def log_mel(self, wave: tf.Tensor) -> tf.Tensor:
    """float32 [num_samples] -> log mel power [num_frames, num_mel_bins] (frame f starts at sample
    f * frame_step; the end is zero padded so exactly num_samples // frame_step frames fit)."""
    wave = tf.pad(wave, [[0, self.frame_length - self.frame_step]])
    fft_length = 1 << max(self.frame_length - 1, 1).bit_length()
    stft = tf.signal.stft(wave, self.frame_length, self.frame_step, fft_length,
                          window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.square(tf.abs(stft))
    weights = tf.signal.linear_to_mel_weight_matrix(
        self.num_mel_bins, fft_length // 2 + 1, self.sample_rate, self.fmin,
        self.fmax or self.sample_rate / 2.0)
    mel = tf.matmul(power, weights)
    return tf.ensure_shape(tf.math.log(mel + self.log_eps), [self.num_frames, self.num_mel_bins])


def resample(wave: tf.Tensor, num_out: int) -> tf.Tensor:
  """Band-limited resampling of a fixed-length float32 [N] signal to [num_out] samples: its FFT
  spectrum truncated (downsampling: no aliasing) or zero-extended, amplitude kept."""
  num_in = int(wave.shape[0])
  if num_in == num_out:
    return wave
  if num_in == 0 or num_out == 0:
    return tf.zeros([num_out], tf.float32)
  spectrum = tf.signal.rfft(wave)
  keep = min(num_in, num_out) // 2 + 1
  spectrum = tf.pad(spectrum[:keep], [[0, num_out // 2 + 1 - keep]])
  out = tf.signal.irfft(spectrum, fft_length=[num_out]) * (num_out / num_in)
  return tf.ensure_shape(out, [num_out])


def from_config(cfg: Any, where: str) -> AudioReader:
  """AudioReader from `cfg` (see the module docstring); one-line errors name `where.<field>`."""
  f = Fields(cfg, where)
  d = AudioReader()
  reader = AudioReader(
      feature=f.str("feature", d.feature), key=f.str("key", d.key),
      representation=f.str("representation", d.representation, REPRESENTATIONS),
      sample_rate=f.int("sample_rate", d.sample_rate, low=1),
      stored_rate=f.int("stored_rate", d.stored_rate, low=0),
      seconds=f.float("seconds", d.seconds, low=0.0, strict=True),
      num_mel_bins=f.int("num_mel_bins", d.num_mel_bins, low=1),
      frame_length_ms=f.float("frame_length_ms", d.frame_length_ms, low=0.0, strict=True),
      frame_step_ms=f.float("frame_step_ms", d.frame_step_ms, low=0.0, strict=True),
      fmin=f.float("fmin", d.fmin, low=0.0), fmax=f.float("fmax", d.fmax, low=0.0),
      log_eps=f.float("log_eps", d.log_eps, low=0.0, strict=True))
  if reader.num_samples < 1:
    raise f.error("seconds", f"{reader.seconds} s at {reader.sample_rate} Hz is no sample")
  if reader.representation == "log_mel":
    nyquist = reader.sample_rate / 2.0
    if reader.frame_step < 1 or reader.frame_length < reader.frame_step:
      raise f.error("frame_length_ms", f"{reader.frame_length_ms} ms must be >= frame_step_ms "
                    f"({reader.frame_step_ms} ms) and both >= 1 sample at {reader.sample_rate} Hz")
    if reader.num_frames < 1:
      raise f.error("seconds", f"{reader.seconds} s holds no {reader.frame_step_ms} ms frame")
    if reader.fmax > nyquist:
      raise f.error("fmax", f"{reader.fmax} Hz is above the Nyquist rate {nyquist:g} Hz")
    if reader.fmin >= (reader.fmax or nyquist):
      raise f.error("fmin", f"{reader.fmin} Hz must be below fmax ({reader.fmax or nyquist:g} Hz)")
  return reader

"""Everything-at-Once config checks (Family.validate_config): one ValueError naming the field.

The audio token mask (spec §2.3, the reference's `create_audio_tokens`) max-pools the frame mask
over windows of ceil(frames / tokens) frames, which only lines up with DAVEnet's tokens when the
number of spectrogram frames is a multiple of the DAVEnet stride (2 ** stages: 768 / 64 in the
releases); any other length fails deep inside the model, so it is checked here for every data
block that reads audio.
"""
from __future__ import annotations

from typing import Any

from vlx.models.eao import inputs


def audio_frames(entry: Any) -> int | None:
  """Spectrogram frames an `inputs.audio` entry yields ('audio' reader: its log-mel window;
  'features' reader: max_len); None when not determinable here."""
  reader = entry.get("reader", "")
  if reader == "features":
    return int(entry.get("max_len", 0) or 0) or None
  if reader == "audio" and entry.get("representation", "log_mel") == "log_mel":
    rate = int(entry.get("sample_rate", 16000) or 16000)
    samples = int(round(float(entry.get("seconds", 7.68)) * rate))
    step = int(round(float(entry.get("frame_step_ms", 10.0)) * rate / 1000.0))
    return samples // step if step > 0 else None
  return None


def validate_config(config: Any) -> None:
  m = config.model
  kind = m.get("text_input", "features")
  if kind not in inputs.TEXT_INPUTS:
    raise ValueError(f"config.model.text_input={kind!r}: expected one of {inputs.TEXT_INPUTS}")
  if kind == "clip" and int(m.clip.embed_dim) != int(m.text_dim):
    raise ValueError(f"config.model.text_dim={m.text_dim} must equal config.model.clip.embed_dim="
                     f"{m.clip.embed_dim} (the CLIP text tower's per-word features)")
  if kind == "word_vectors" and int(m.get("word_vocab_size", 0)) < 1:
    raise ValueError("config.model.word_vocab_size must be >= 1 (the rows of vectors.npy) with "
                     "text_input='word_vectors'")
  stride = 2 ** len(tuple(m.davenet.layers))
  blocks = [("config.data.train", config.data.train)]
  blocks += [(f"config.evals.{name}", e) for name, e in config.get("evals", {}).items()]
  for where, block in blocks:
    entry = (block.get("inputs", None) or {}).get("audio", None)
    if entry is None:
      continue
    frames = audio_frames(entry)
    if frames is not None and frames % stride:
      raise ValueError(f"{where}.inputs.audio gives {frames} spectrogram frames, not a multiple "
                       f"of the DAVEnet stride {stride} (2 ** len(config.model.davenet.layers)); "
                       "the audio token mask needs it (e.g. seconds 0.96 -> 96 frames)")

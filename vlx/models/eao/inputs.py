"""The model-input adapter of Everything-at-Once: pipeline batch -> the model's inputs.

Batch keys (docs: /work/notes/EAO_PLAN.md, "Batch keys of an EAO batch"):
  text   `text_ids` int32 [B, L] + `text_mask` (the configured tokenizer's ids), turned into float
         features by the model's FROZEN text front end (`model.text_input`):
           'word_vectors'  a table [word_vocab_size + 1, text_dim]: row 0 = zeros (padding), row
                           i = the i-th vector of `python -m vlx.data.word2vec`'s vectors.npy
                           (tokenizer `words:<vocab.txt>`: id = line number + 1); filled from
                           config.init.word_vectors (prepare_fresh_state). The demo keeps it
                           random (a stand-in for word2vec: any fixed, distinct word vectors);
           'clip'          a CLIP text tower (vlx.layers.clip.word_features: SOT dropped, the
                           first `clip_max_words` positions, mask before EOT; ids = CLIP BPE);
                           filled from config.init.clip (an OpenAI .pt or open_clip state dict);
           'features'      no front end: the batch must carry float `text`.
         A float `text` [B, Lt, Dt] + `text_mask` (hand-made batches, the parity fixture) passes
         through whatever `text_input` is.
  video  `video` float32 [B, Nv, Dv] + `video_mask`: passes through.
  audio  `audio` float32 [B, T, mel] + `audio_mask` (time first, as the readers yield it) ->
         the model's [B, mel, T]; `audio_STFT_nframes` passes through when present.
Only the modalities present in the batch are returned.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

TEXT_INPUTS = ("features", "word_vectors", "clip")
FROZEN_PARAMS = (r"^(word_vectors|clip_text)/",)   # the frozen text front ends


class WordVectors(nnx.Module):
  """A frozen word-vector table [vocab + 1, dim]; row 0 (padding) is zero."""

  def __init__(self, vocab_size: int, dim: int, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
    table = jax.random.normal(rngs.params(), (vocab_size + 1, dim), jnp.float32)
    table = table.at[0].set(0.0).astype(param_dtype)
    self.table = nnx.Param(table)

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.table[...], ids, axis=0).astype(jnp.float32)


def text_front_end(cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs
                   ) -> tuple[WordVectors | None, Any]:
  """(word_vectors, clip_text) modules of a model config; None where `text_input` needs none."""
  kind = cfg.get("text_input", "features")
  if kind not in TEXT_INPUTS:
    raise ValueError(f"eao model config text_input={kind!r}; expected one of {TEXT_INPUTS}")
  if kind == "word_vectors":
    if int(cfg.get("word_vocab_size", 0)) < 1:
      raise ValueError("eao model config text_input='word_vectors' needs word_vocab_size >= 1 "
                       "(the rows of vectors.npy)")
    return WordVectors(int(cfg.word_vocab_size), int(cfg.text_dim), rngs=rngs), None
  if kind == "clip":
    from vlx.layers import clip  # pylint: disable=import-outside-toplevel
    tower = clip.ClipTextTower(clip.ClipConfig(**dict(cfg.clip)), rngs=rngs)
    return None, tower
  return None, None


def text_features(model, ids: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(float features [B, L', Dt], mask [B, L']) of token ids through the frozen front end."""
  kind = getattr(model, "text_input", "features")
  if kind == "word_vectors":
    feats = model.word_vectors(ids) * (mask > 0)[..., None].astype(jnp.float32)
    return jax.lax.stop_gradient(feats), mask
  if kind == "clip":
    from vlx.layers import clip  # pylint: disable=import-outside-toplevel
    feats, cmask = clip.word_features(model.clip_text, ids, model.clip_max_words)
    return jax.lax.stop_gradient(feats), cmask
  raise ValueError("the batch has text_ids but config.model.text_input='features': set "
                   "text_input to 'word_vectors' or 'clip', or feed float `text` features")


def model_inputs(model, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """The model's input dict from a pipeline batch (see the module docstring)."""
  out: dict[str, jax.Array] = {}
  if "text" in batch:
    out["text"], out["text_mask"] = batch["text"], batch["text_mask"]
  elif "text_ids" in batch:
    out["text"], out["text_mask"] = text_features(model, batch["text_ids"], batch["text_mask"])
  if "video" in batch:
    video = batch["video"]
    if video.ndim != 3:
      raise ValueError(f"eao batch key 'video' has shape {tuple(video.shape)}: expected features "
                       "[B, Nv, Dv] (a 'features' or 'frame_features' reader)")
    out["video"] = video
    out["video_mask"] = batch.get("video_mask", jnp.ones(video.shape[:2], jnp.int32))
  if "audio" in batch:
    audio = batch["audio"]
    out["audio"] = jnp.swapaxes(audio, 1, 2)
    out["audio_mask"] = batch.get("audio_mask", jnp.ones(audio.shape[:2], jnp.int32))
    if "audio_STFT_nframes" in batch:
      out["audio_STFT_nframes"] = batch["audio_STFT_nframes"]
  return out


# ------------------------------------------------------------------ filling the frozen front end


def _flat_params(module) -> dict[str, Any]:
  """{'a/b/c': array} of a module's nnx.Params (paths relative to it)."""
  from vlx import optim  # pylint: disable=import-outside-toplevel
  state = nnx.to_pure_dict(nnx.state(module, nnx.Param))
  return {optim.path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(state)[0]}


def load_word_vectors(model, directory: str) -> int:
  """Fills `model.word_vectors` from `directory`/vectors.npy ([V, D] float, row i = the word on
  line i + 1 of vocab.txt, as `python -m vlx.data.word2vec` writes); returns V."""
  import pathlib  # pylint: disable=import-outside-toplevel

  import numpy as np  # pylint: disable=import-outside-toplevel

  from vlx import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(directory) / "vectors.npy"
  if not path.is_file():
    raise FileNotFoundError(f"config.init.word_vectors={directory!r}: no vectors.npy there (write "
                            "it with `python -m vlx.data.word2vec`)")
  vectors = np.load(path, mmap_mode="r", allow_pickle=False)
  table = np.concatenate([np.zeros((1,) + vectors.shape[1:], np.float32),
                          np.asarray(vectors, np.float32)], axis=0)
  ckpt.fill_module(model.word_vectors, {"table": table},
                   f"config.init.word_vectors={directory!r} does not fit the model's table",
                   "config.model.word_vocab_size must be the rows of vectors.npy and "
                   "config.model.text_dim its width")
  return int(vectors.shape[0])


def load_clip_text(model, path: str, variant: str, head_width: int = 64) -> int:
  """Fills `model.clip_text` with the text tower of a CLIP file (OpenAI .pt / open_clip state
  dict, read without executing code); returns the number of arrays loaded."""
  import pathlib  # pylint: disable=import-outside-toplevel

  from vlx import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
  from vlx.layers import clip_rules  # pylint: disable=import-outside-toplevel
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"config.init.clip={path!r}: no such file (OpenAI's ViT-B-32.pt or an "
                            "open_clip state dict)")
  loaded = clip_rules.load(clip_rules.read_checkpoint(path), variant=variant,
                           head_width=head_width)
  return ckpt.fill_module(model.clip_text, _flat_params(loaded.text),
                          f"config.init.clip={path!r} does not fit model.clip_text",
                          "config.model.clip sizes must match the file's text tower")


def prepare_fresh_state(model, config) -> None:
  """Family hook after a fresh init: fills the frozen text front end from config.init
  (`word_vectors`: a `vlx.data.word2vec` output dir; `clip`: a CLIP file). A random table is
  kept only when config.model.random_word_vectors is True (demos: a stand-in for word2vec)."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  kind = getattr(model, "text_input", "features")
  init = config.get("init", {}) or {}
  if kind == "word_vectors":
    directory = init.get("word_vectors", "") or ""
    if directory:
      n = load_word_vectors(model, directory)
      logging.info("eao: %d word vectors from %s (frozen)", n, directory)
    elif not config.model.get("random_word_vectors", False):
      raise ValueError("config.model.text_input='word_vectors' needs config.init.word_vectors="
                       "DIR (vocab.txt + vectors.npy of `python -m vlx.data.word2vec`; tokenizer "
                       "'words:DIR/vocab.txt')")
    else:
      logging.info("eao: random frozen word vectors (config.model.random_word_vectors)")
  elif kind == "clip":
    path = init.get("clip", "") or ""
    if not path:
      raise ValueError("config.model.text_input='clip' needs config.init.clip=PATH (OpenAI's "
                       "ViT-B-32.pt or an open_clip state dict: the frozen text tower)")
    sizes = config.model.clip
    variant = "openai" if sizes.get("activation", "quick_gelu") == "quick_gelu" else "open_clip"
    n = load_clip_text(model, path, variant, int(sizes.text_width) // int(sizes.text_heads))
    logging.info("eao: CLIP text tower from %s (%d arrays, frozen)", path, n)

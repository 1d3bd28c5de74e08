"""Everything-at-Once retrieval scorers of the family contract (spec §6, trainer.eval):
encode_texts / encode_videos / retrieval_scores and RETRIEVAL_MODES.

The reference runs `model(data, force_cross_modal=True)` on every eval row (a clip with its caption,
video and audio) and compares embeddings by cosine (`sim_matrix`: both sides divided by
max(||x||, 1e-8)). A mode 'x2y' ranks the y embeddings for each x embedding (rows = queries), e.g.
t2v = sim(text_embed, video_embed), t2va = sim(text_embed, va_embed) (va_embed: the joint
video+audio pass of the fusion transformer), t2v+a = sim(text_embed, v+a_embed) (late fusion).
Embeddings live on the side whose rows they are computed from:
  texts  (encode_texts, one row per caption; pair embeddings use the row's own clip):
         text_embed, tv_embed, ta_embed, t+v_embed, t+a_embed
  videos (encode_videos, one row per clip): video_embed, audio_embed, va_embed, v+a_embed
Modes whose queries are clip rows (v2t, a2v, v2ta, ...) need one caption per clip (the
reference's eval_caption; evals.<name>.all_captions False): then text row i belongs to clip i and
the generic eval's ground truth is the diagonal.

Encode options (`evals.<name>.encode_options`, static keyword arguments of both encoders) give
the long-video strategies of the reference's evaluation configs (spec §6, `LONG_VIDEO`):
  clips (0 = off), clip_tokens (12), clip_frames (768), clip_min_audio (0.7): every row is cut
    into `clips` consecutive clips of clip_tokens video tokens and clip_frames audio frames (the
    row's text repeated), embedded clip by clip and averaged per row over its kept clips: clip 0,
    and clip i > 0 when the row's remaining audio nframes - i * clip_frames exceeds
    clip_min_audio * clip_frames (the reference gives the others id '-1'); without audio every
    clip is kept.
  audio_max_tokens / audio_pooling: the model's long-audio pooling (spec §2.6) for this eval
    ('max_pool' / 'nearest' to 12 tokens in the *_max / *_nearest configs); the video side of
    those strategies is the features reader's selection (data side).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from vlx.models.eao import inputs
from vlx.objectives.cosine_contrastive import cosine_sim

MODALITY_KEYS = {"text": ("text", "text_ids", "text_mask"),
                 "video": ("video", "video_mask"),
                 "audio": ("audio", "audio_mask", "audio_STFT_nframes")}
TEXT_ROW = ("t", "tv", "ta", "t+v", "t+a")       # embeddings of encode_texts
VIDEO_ROW = ("v", "a", "va", "v+a")              # embeddings of encode_videos
# The 18 tasks of the reference's configs (tiny fixture metrics_*); the paper's main one is t2va.
RETRIEVAL_MODES = ("t2v", "t2va", "t2a", "t2v+a", "v2t", "va2t", "a2t", "v+a2t", "v2a", "a2v",
                   "v2ta", "ta2v", "a2tv", "tv2a", "v2t+a", "t+a2v", "a2t+v", "t+v2a")
# evals.<name>.encode_options per long-video strategy (spec §6 table; video tokens / audio frames
# of the rows: 'at_once' 48 / 3072 on MSR-VTT, 72 / 4608 on YouCook2; 'max' / 'nearest' also
# select 12 video tokens in the features reader). n_clips: 4 (MSR-VTT) or 6 (YouCook2).
CLIP_DEFAULTS = dict(clip_tokens=12, clip_frames=768, clip_min_audio=0.7)


def long_video_options(strategy: str, n_clips: int = 4) -> dict[str, Any]:
  """encode_options of a long-video strategy: 'at_once', 'clips', 'max' or 'nearest'."""
  if strategy == "at_once":
    return {}
  if strategy == "clips":
    return dict(clips=int(n_clips), **CLIP_DEFAULTS)
  if strategy in ("max", "nearest"):
    return dict(audio_max_tokens=12, audio_pooling="max_pool" if strategy == "max" else "nearest")
  raise ValueError(f"long-video strategy {strategy!r}: expected at_once, clips, max or nearest")


def _only(batch: Mapping[str, jax.Array], modalities: tuple[str, ...]) -> dict[str, jax.Array]:
  keys = {k for m in modalities for k in MODALITY_KEYS[m]}
  return {k: v for k, v in batch.items() if k in keys}


# -- clip-wise evaluation ---------------------------------------------------------------------
def _fit(x: jax.Array, axis: int, size: int) -> jax.Array:
  """x cut or zero padded to `size` along `axis`."""
  n = x.shape[axis]
  if n >= size:
    return jax.lax.slice_in_dim(x, 0, size, axis=axis)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, size - n)
  return jnp.pad(x, pad)


def cut_clips(x: Mapping[str, jax.Array], clips: int, clip_tokens: int, clip_frames: int,
              clip_min_audio: float) -> tuple[dict[str, jax.Array], jax.Array]:
  """Model inputs of B rows -> (inputs of B * clips rows, row-major: row b clip i at b*clips+i;
  kept [B, clips] bool); see the module docstring for which clips are kept."""
  b = next(iter(x.values())).shape[0]
  out = {}
  for k in ("text", "text_mask"):
    if k in x:
      out[k] = jnp.repeat(x[k], clips, axis=0)
  if "video" in x:
    v = _fit(x["video"], 1, clips * clip_tokens)
    out["video"] = v.reshape((b * clips, clip_tokens) + v.shape[2:])
    out["video_mask"] = _fit(x["video_mask"], 1, clips * clip_tokens).reshape(b * clips, -1)
  kept = jnp.ones((b, clips), bool)
  if "audio" in x:                                     # model layout [B, mel, T]
    a = _fit(x["audio"], 2, clips * clip_frames)
    a = a.reshape(b, a.shape[1], clips, clip_frames).transpose(0, 2, 1, 3)
    out["audio"] = a.reshape(b * clips, a.shape[2], clip_frames)
    mask = _fit(x["audio_mask"], 1, clips * clip_frames)
    out["audio_mask"] = mask.reshape(b * clips, clip_frames)
    nframes = x.get("audio_STFT_nframes")
    nframes = jnp.sum(x["audio_mask"] > 0, axis=1) if nframes is None else nframes
    nframes = jnp.minimum(nframes.astype(jnp.float32), clips * clip_frames)
    rest = nframes[:, None] - jnp.arange(clips)[None, :] * clip_frames
    kept = (jnp.arange(clips)[None, :] == 0) | (rest > clip_min_audio * clip_frames)
  return out, kept


# -- encoders ---------------------------------------------------------------------------------
def embeddings(model, batch: Mapping[str, jax.Array], modalities: tuple[str, ...], *,
               clips: int = 0, clip_tokens: int = 12, clip_frames: int = 768,
               clip_min_audio: float = 0.7, audio_max_tokens: int | None = None,
               audio_pooling: str | None = None) -> dict[str, jax.Array]:
  """Every `*_embed` of `model(inputs, force_cross_modal=True)` (eval mode) over the batch's
  `modalities` that are present, keyed by the short names of TEXT_ROW / VIDEO_ROW ('t', 'va',
  't+v', ...); with `clips` averaged per row over its kept clips."""
  x = inputs.model_inputs(model, _only(batch, modalities))   # every model call goes through it
  kept = None
  if clips:
    x, kept = cut_clips(x, int(clips), int(clip_tokens), int(clip_frames), float(clip_min_audio))
  out = model(x, force_cross_modal=True, audio_max_tokens=audio_max_tokens,
              audio_pooling=audio_pooling)
  short = {"text_embed": "t", "video_embed": "v", "audio_embed": "a"}
  emb = {short.get(k, k[:-len("_embed")]): v.astype(jnp.float32) for k, v in out.items()
         if k.endswith("_embed")}
  if kept is not None:
    w = kept.astype(jnp.float32)
    emb = {k: jnp.einsum("bc,bcp->bp", w, v.reshape(w.shape + v.shape[1:]))
           / jnp.sum(w, axis=1, keepdims=True) for k, v in emb.items()}
  return emb


def encode_texts(model, batch: Mapping[str, jax.Array], **options) -> dict[str, jax.Array]:
  """Per caption row: text_embed and, when the row's clip is in the batch, the embeddings of the
  text fused with it (tv, ta) or late-fused (t+v, t+a); keys TEXT_ROW."""
  emb = embeddings(model, batch, ("text", "video", "audio"), **options)
  return {k: v for k, v in emb.items() if k in TEXT_ROW}


def encode_videos(model, batch: Mapping[str, jax.Array], **options) -> dict[str, jax.Array]:
  """Per clip row: video, audio, va (joint pass) and v+a (late fusion) embeddings; keys
  VIDEO_ROW (those of the modalities present)."""
  emb = embeddings(model, batch, ("video", "audio"), **options)
  return {k: v for k, v in emb.items() if k in VIDEO_ROW}


def split_mode(mode: str) -> tuple[str, str]:
  """'x2y' -> (x, y), each one of TEXT_ROW or VIDEO_ROW."""
  if mode not in RETRIEVAL_MODES:
    raise ValueError(f"retrieval mode {mode!r}; expected one of {RETRIEVAL_MODES}")
  x, y = mode.split("2")
  return x, y


def retrieval_scores(model, texts: Mapping[str, jax.Array], videos: Mapping[str, jax.Array], *,
                     mode: str = "t2v") -> jax.Array:
  """sim_matrix(x_embed, y_embed) of mode 'x2y' -> float32 [rows of x, rows of y] (queries =
  rows). Query-clip modes need as many texts as clips (one caption per clip)."""
  del model
  x, y = split_mode(mode)

  def side(code: str) -> jax.Array:
    src, what = (texts, "encode_texts") if code in TEXT_ROW else (videos, "encode_videos")
    if code not in src:
      raise ValueError(f"retrieval mode {mode!r} needs the {code!r} embedding of {what}, which "
                       f"this model / eval batch does not give (has {sorted(src)})")
    return src[code]

  rows, cols = side(x), side(y)
  if x in VIDEO_ROW:
    nt, nv = len(next(iter(texts.values()))), len(next(iter(videos.values())))
    if nt != nv:
      raise ValueError(f"retrieval mode {mode!r} ranks for each clip: it needs one caption per "
                       f"clip (evals.<name>.all_captions False), got {nt} texts for {nv} clips")
  return cosine_sim(rows, cols)

"""VIOLET downstream scoring (spec §6): the pair forward shared by the objectives and the eval
scorers of the family contract (encode_videos / encode_texts / retrieval_scores / pair_scores /
qa_logits / mc_scores).

Every head reads the cross-modal output at the text [CLS] (`Violet.score`, spec §0.2). Retrieval
('vtm', the reference's eval_retrieval.py) runs every (text, video) pair through the cross-modal
transformer and ranks videos per text by sigmoid(fc) (no temperature); the video features
(`encode_video`, the reference's go_feat) are computed once per clip. 'vtc' is this port's cheap
first stage (not in the reference): the same transformer on the video alone and on the text
alone, pooled (`vtc_features`) and compared by cosine; 'rerank' (vlx.evals.retrieval) re-scores
each text's top-k 'vtc' videos with `pair_scores`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.layers import common
from vlx.models.violet import forward

RETRIEVAL_MODES = ("vtm", "vtc", "rerank")
TEMPERATURE = forward.TEMPERATURE   # retrieval training / VTM logits: fc(...) / 0.05 (spec §0.5)


def rngs_for(rng: jax.Array | None, train: bool) -> nnx.Rngs | None:
  """Dropout streams in training; None (deterministic) in evaluation."""
  return nnx.Rngs(dropout=rng) if train and rng is not None else None


def pair_logits(model, feat_img: jax.Array, feat_txt: jax.Array, mask_txt: jax.Array, *,
                deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
  """fc(cross([video | text])[:, Lv]) of aligned rows -> float32 [N, k] (all-ones video mask)."""
  return forward.pair_logits(model, feat_img, forward.video_mask(feat_img), feat_txt,
                             mask_txt, deterministic=deterministic, rngs=rngs)


# -- the cheap contrastive first stage (not in the reference) ------------------------------
def vtc_video(model, feat_img: jax.Array, *, deterministic: bool = True,
              rngs: nnx.Rngs | None = None) -> jax.Array:
  """The cross-modal transformer on the video alone, mean over its tokens, L2-normalised
  -> float32 [B, D]."""
  b, _, d = feat_img.shape
  empty = jnp.zeros((b, 0, d), feat_img.dtype)
  out = model.cross(feat_img, forward.video_mask(feat_img), empty,
                    jnp.zeros((b, 0), jnp.int32), deterministic=deterministic, rngs=rngs)
  return common.l2_normalize(jnp.mean(out.astype(jnp.float32), axis=1))


def vtc_text(model, feat_txt: jax.Array, mask_txt: jax.Array, *, deterministic: bool = True,
             rngs: nnx.Rngs | None = None) -> jax.Array:
  """The cross-modal transformer on the text alone, its [CLS] output, L2-normalised [B, D]."""
  b, _, d = feat_txt.shape
  empty = jnp.zeros((b, 0, d), feat_txt.dtype)
  out = model.cross(empty, jnp.zeros((b, 0), jnp.int32), feat_txt, mask_txt,
                    deterministic=deterministic, rngs=rngs)
  return common.l2_normalize(out[:, 0])


# -- family contract ------------------------------------------------------------------------
def encode_videos(model, batch: dict) -> dict[str, jax.Array]:
  """feat_img [B, Lv, D] (go_feat, once per clip) and the 'vtc' embedding [B, D]."""
  feat_img = model.encode_video(batch["video"])
  return dict(feat_img=feat_img, vtc_video=vtc_video(model, feat_img))


def encode_texts(model, batch: dict) -> dict[str, jax.Array]:
  """Token ids / mask (embedded again per pair: cheap) and the 'vtc' embedding [B, D]."""
  ids, mask = batch["text_ids"], batch["text_mask"]
  return dict(text_ids=ids, text_mask=mask,
              vtc_text=vtc_text(model, model.embed_text(ids), mask))


def pair_probs(model, texts: dict, videos: dict) -> jax.Array:
  """[Nt, Nv] sigmoid(fc) of every (text, video) pair; one video at a time against every text
  (`lax.map`), so memory grows with Nt, not Nt x Nv."""
  graphdef, state = nnx.split(model)
  ids, mask = texts["text_ids"], texts["text_mask"]
  nt = ids.shape[0]

  def one_video(feat):
    m = nnx.merge(graphdef, state)
    feat_txt = m.embed_text(ids)
    img = jnp.broadcast_to(feat[None], (nt,) + feat.shape)
    return jax.nn.sigmoid(pair_logits(m, img, feat_txt, mask)[:, 0])

  return jax.lax.map(one_video, videos["feat_img"]).T


def pair_scores(model, texts: dict, videos: dict) -> jax.Array:
  """sigmoid(fc) of aligned rows (text i, video i) -> [N] in (0, 1) ('rerank')."""
  feat_txt = model.embed_text(texts["text_ids"])
  return jax.nn.sigmoid(pair_logits(model, videos["feat_img"], feat_txt,
                                    texts["text_mask"])[:, 0])


def retrieval_scores(model, texts: dict, videos: dict, *, mode: str = "vtm") -> jax.Array:
  """[Nt, Nv]: 'vtm' = sigmoid(fc) of every pair (eval_retrieval.py), 'vtc' = cosine of the
  single-modality embeddings. 'rerank' is two-stage and run by vlx.evals.retrieval."""
  if mode == "vtm":
    return pair_probs(model, texts, videos)
  if mode == "vtc":
    return texts["vtc_text"] @ videos["vtc_video"].T
  raise ValueError(f"retrieval mode {mode!r}; expected 'vtm' or 'vtc' (or 'rerank' through "
                   "the eval)")


def qa_logits(model, batch: dict) -> jax.Array:
  """[B, num_answers] answer logits (family contract)."""
  return forward.qaoe_logits(model, batch["video"], batch["text_ids"], batch["text_mask"])


def mc_scores(model, batch: dict) -> jax.Array:
  """[B, K] option logits of a multiple-choice batch (choice_ids / choice_mask [B, K, X])."""
  for key in ("video", "choice_ids", "choice_mask"):
    if key not in batch:
      raise ValueError(f"mc_scores: batch has no {key!r} (task 'multiple_choice')")
  return forward.qamc_logits(model, batch["video"], batch["choice_ids"], batch["choice_mask"])

"""All-in-one downstream scoring (spec §5): option scores, answer / class logits, retrieval.

Every head reads `cls_feats` (pooled text [CLS] of the joint pass). The reference permutes the
patch tokens of every frame at random in evaluation too (spec §3.3.4), and the temporal roll then
moves random patches; `config.model.eval_patch_order='random'` (default) does the same with a
reproducible order per clip (`eval_patch_perm`), 'raster' keeps the identity order. Training draws
a fresh random order per step (objectives.py).
"""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

RETRIEVAL_MODES = ("vtm", "vtc", "itc")   # 'itc' = alias of 'vtc' (ind_itc embeddings)
EVAL_PERM_SEED = 0                          # the fixed key of the eval patch orders
# Batch keys naming a row's clip, in order of preference (vlx/data/tasks.py EVAL_KEYS).
_ROW_KEYS = ("video_index", "example_index")


def _rngs(rng: jax.Array | None, train: bool) -> nnx.Rngs | None:
  return nnx.Rngs(dropout=rng) if train and rng is not None else None


def eval_patch_perm(model, video: jax.Array, row_index: jax.Array,
                    view_index: jax.Array | int = 0) -> jax.Array | None:
  """[B, T, P] evaluation patch order of every frame, or None (raster) when the model's
  `eval_patch_order` is 'raster'.

  Row b's order depends only on (row_index[b], view_index[b]), never on the batch it sits in:
  `k = fold_in(fold_in(key(EVAL_PERM_SEED), row_index[b]), view_index[b])`, then
  `argsort(uniform(k, (T, P)), axis=-1)` (an independent uniform permutation per frame, like
  the reference's multinomial and objectives.random_patch_perm)."""
  if getattr(model, "eval_patch_order", "random") == "raster":
    return None
  b, t, h, w = video.shape[:4]
  p = int(model.transformer.patch_embed.proj.kernel.shape[0])
  n = (h // p) * (w // p)
  rows = jnp.broadcast_to(jnp.asarray(row_index, jnp.int32).reshape(-1), (b,))
  views = jnp.broadcast_to(jnp.asarray(view_index, jnp.int32).reshape(-1), (b,))
  base = jax.random.key(EVAL_PERM_SEED)

  def one(row, view):
    k = jax.random.fold_in(jax.random.fold_in(base, row), view)
    return jnp.argsort(jax.random.uniform(k, (t, n)), axis=-1).astype(jnp.int32)

  return jax.vmap(one)(rows, views)


def batch_patch_perm(model, batch: dict) -> jax.Array | None:
  """eval_patch_perm of an eval batch: rows keyed by `video_index` (else `example_index`; with
  neither, the row's position in the batch, which then depends on the batch composition) and
  `view_index` (retrieval / classification views; 0 when absent). Padding rows (index -1) get
  some order; their outputs are dropped."""
  video = batch["video"]
  key = next((k for k in _ROW_KEYS if k in batch), None)
  rows = batch[key] if key is not None else jnp.arange(video.shape[0], dtype=jnp.int32)
  return eval_patch_perm(model, video, rows, batch.get("view_index", 0))


def per_video(embeds: jax.Array, masks: jax.Array, batch: int,
              num_frames: int) -> tuple[jax.Array, jax.Array]:
  """embed_video's [B*T, l, D] / [B*T, l] as [B, T, l, D] / [B, T, l]."""
  return (embeds.reshape(batch, num_frames, *embeds.shape[1:]),
          masks.reshape(batch, num_frames, masks.shape[-1]))


def option_cls_feats(model, option_ids: jax.Array, option_mask: jax.Array, video: jax.Array, *,
                     patch_perm: jax.Array | None = None, deterministic: bool = True,
                     rngs: nnx.Rngs | None = None) -> jax.Array:
  """cls_feats [B, K, D] of each option text k paired with its row's video (embedded once)."""
  b, k, length = option_ids.shape
  t = video.shape[1]
  emb, msk = model.embed_video(video, patch_perm, deterministic=deterministic, rngs=rngs)
  emb, msk = per_video(emb, msk, b, t)
  emb = jnp.repeat(emb, k, axis=0)                  # row b*K + k: video b
  msk = jnp.repeat(msk, k, axis=0)
  out = model.infer(option_ids.reshape(b * k, length), option_mask.reshape(b * k, length),
                    video_embeds=emb, video_masks=msk, deterministic=deterministic, rngs=rngs)
  return out["cls_feats"].reshape(b, k, -1)


def option_scores(model, cls_feats: jax.Array, head: str, *, deterministic: bool = True,
                  rngs: nnx.Rngs | None = None) -> jax.Array:
  """[B, K] scores of option features [B, K, D]: 'rank' (rank_output = ITM match row) for
  multiple_choice / irtr, 'mc_vqa' (mc_vqa_classifier) for mc_vqa."""
  b, k, d = cls_feats.shape
  flat = cls_feats.reshape(b * k, d)
  if head == "rank":
    s = model.rank_output(flat)
  elif head == "mc_vqa":
    s = model.mc_vqa_classifier(flat, deterministic=deterministic, rngs=rngs)
  else:
    raise ValueError(f"option head {head!r}: expected 'rank' or 'mc_vqa'")
  return s.reshape(b, k).astype(jnp.float32)


def mc_head(model) -> str:
  """The multiple-choice head a model was built for: mc_vqa_classifier when it has one."""
  return "mc_vqa" if hasattr(model, "mc_vqa_classifier") else "rank"


def mc_scores(model, batch: dict) -> jax.Array:
  """[B, K] option scores of a multiple-choice batch (choice_ids / choice_mask [B, K, L])."""
  for key in ("video", "choice_ids", "choice_mask"):
    if key not in batch:
      raise ValueError(f"mc_scores: batch has no {key!r} (task 'multiple_choice')")
  feats = option_cls_feats(model, batch["choice_ids"], batch["choice_mask"], batch["video"],
                           patch_perm=batch_patch_perm(model, batch))
  return option_scores(model, feats, mc_head(model))


def answer_logits(model, batch: dict, *, rng: jax.Array | None = None,
                  train: bool = False, patch_perm: jax.Array | None = None) -> jax.Array:
  """[B, num_qa_labels] vqa_classifier logits of (text_ids, video): open-ended QA answers, or
  action classes with a fixed prompt text (K400 / HMDB51)."""
  if not hasattr(model, "vqa_classifier"):
    raise ValueError("the model has no vqa_classifier: set config.model.heads.num_qa_labels > 0")
  rngs = _rngs(rng, train)
  out = model.infer(batch["text_ids"], batch["text_mask"], batch["video"], patch_perm=patch_perm,
                    deterministic=not train, rngs=rngs)
  return model.vqa_classifier(out["cls_feats"], deterministic=not train,
                              rngs=rngs).astype(jnp.float32)


def qa_logits(model, batch: dict) -> jax.Array:
  """[B, num_labels] answer logits (family contract), in the eval patch order."""
  return answer_logits(model, batch, patch_perm=batch_patch_perm(model, batch))


def class_logits(model, batch: dict) -> jax.Array:
  """[B, C] class logits of one view per row (family contract; the eval averages views); each
  view (`view_index`) of a clip has its own patch order."""
  return answer_logits(model, batch, patch_perm=batch_patch_perm(model, batch))


# -- retrieval (family contract) -----------------------------------------------------------
def encode_videos(model, batch: dict) -> dict[str, jax.Array]:
  """Video embeddings for exact VTM ([B, T, l, D], embedded once per video as the reference's
  compute_irtr_recall) and, with the itc head, the projected video CLS for VTC. Both use the
  row's eval patch order (`batch_patch_perm`: video_index + view_index); VTM / re-rank pair these
  embeddings with the texts, so a clip keeps one order across all its pairs in a view."""
  video = batch["video"]
  perm = batch_patch_perm(model, batch)
  emb, msk = model.embed_video(video, perm)
  emb, msk = per_video(emb, msk, video.shape[0], video.shape[1])
  out = dict(video_embeds=emb, video_masks=msk)
  if hasattr(model, "vid_proj"):
    out["itc_video"] = model.infer_video_only(video, patch_perm=perm)["image_feats"][:, 0]
  return out


def encode_texts(model, batch: dict) -> dict[str, jax.Array]:
  out = dict(text_ids=batch["text_ids"], text_mask=batch["text_mask"])
  if hasattr(model, "txt_proj"):
    feats = model.infer_text_only(batch["text_ids"], batch["text_mask"])["text_feats"]
    out["itc_text"] = feats[:, 0]
  return out


def pair_rank_scores(model, texts: dict, videos: dict, head: str = "rank") -> jax.Array:
  """[Nv, Nt] rank_output scores (or [Nv, Nt, 2] ITM logits for head='itm') of every pair;
  one joint pass per (video, all texts)."""
  graphdef, state = nnx.split(model)
  ids, mask = texts["text_ids"], texts["text_mask"]

  def one_video(v):
    m = nnx.merge(graphdef, state)
    emb, msk = v
    cls = m.infer(ids, mask, video_embeds=emb[None], video_masks=msk[None])["cls_feats"]
    if head == "itm":
      return m.itm_score(cls).astype(jnp.float32)
    return m.rank_output(cls)[:, 0].astype(jnp.float32)

  return jax.lax.map(one_video, (videos["video_embeds"], videos["video_masks"]))


def pair_scores(model, texts: dict, videos: dict) -> jax.Array:
  """sigmoid(rank_output) of aligned rows (text i, video i), [N], in (0, 1): the re-ranking
  step of the eval's 'rerank' mode keeps these above every VTC-only score."""
  out = model.infer(texts["text_ids"], texts["text_mask"], video_embeds=videos["video_embeds"],
                    video_masks=videos["video_masks"])
  return jax.nn.sigmoid(model.rank_output(out["cls_feats"])[:, 0].astype(jnp.float32))


def retrieval_scores(model, texts: dict, videos: dict, *, mode: str = "vtm") -> jax.Array:
  """[Nt, Nv]: 'vtm' = rank_output over every pair (the reference's compute_irtr_recall);
  'vtc' / 'itc' = cosine of the ind_itc embeddings (compute_ind_irtr_recall)."""
  if mode == "vtm":
    return pair_rank_scores(model, texts, videos).T
  if mode in ("vtc", "itc"):
    if "itc_text" not in texts or "itc_video" not in videos:
      raise ValueError(f"retrieval mode {mode!r} needs the itc head (txt_proj / vid_proj): set "
                       "config.model.heads.itc=True, or use mode 'vtm'")
    from vlx.objectives.cosine_contrastive import cosine_sim
    return cosine_sim(texts["itc_text"], videos["itc_video"])
  raise ValueError(f"retrieval mode {mode!r}; expected one of {RETRIEVAL_MODES} or 'rerank'")


# -- VCOP labels and the reference's retrieval metrics ---------------------------------------
def permutation_index(orders: jax.Array) -> jax.Array:
  """[B] index of each row of `orders` [B, T] in itertools.permutations(range(T)) (lexicographic
  rank: Lehmer code)."""
  t = orders.shape[-1]
  fact = jnp.asarray([math.factorial(t - 1 - i) for i in range(t)], jnp.int32)
  smaller_after = jnp.sum((orders[:, None, :] < orders[:, :, None])
                          & (jnp.arange(t)[None, :] > jnp.arange(t)[:, None])[None], axis=-1)
  return jnp.sum(smaller_after * fact, axis=-1).astype(jnp.int32)


def permutations_table(t: int) -> np.ndarray:
  """[T!, T]: row i = the i-th permutation of itertools.permutations(range(T))."""
  return np.asarray(list(itertools.permutations(range(t))), np.int32)


def _metric_row(ranks: np.ndarray) -> np.ndarray:
  return np.asarray([100 * np.mean(ranks < 1), 100 * np.mean(ranks < 5),
                     100 * np.mean(ranks < 10), 100 * np.mean(ranks < 50),
                     np.median(ranks) + 1, np.mean(ranks) + 1], np.float64)


def reference_retrieval_metrics(sim_t2v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([R1,R5,R10,R50,MedR,MeanR] text->video, the same video->text) of a square sim matrix with
  text i <-> video i, tie rules of spec §5: t2v optimistic (ties rank first), v2t averaged."""
  sim = np.asarray(sim_t2v, np.float64)
  gt = np.diag(sim)
  t2v = np.sum(sim > gt[:, None], axis=1)                       # optimistic ties
  col = sim.T
  above = np.sum(col > gt[:, None], axis=1)
  ties = np.sum(col == gt[:, None], axis=1)                     # includes the GT itself
  v2t = above + (ties - 1) / 2.0                                 # mean of the tied positions
  return _metric_row(t2v.astype(np.float64)), _metric_row(v2t)

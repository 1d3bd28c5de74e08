"""VIOLET downstream objectives (spec §6): `OBJECTIVES[name](model, batch, *, rng, train) ->
(loss, metrics)`; vlx.models.violet.objectives dispatches to them.

* 'ret' (main_retrieval.py): every (video i, text j) pair of a group of rows through the
  cross-modal transformer, scores[i, j] = fc(out[:, Lv]) / 0.05, CE row-wise against the diagonal
  (for each VIDEO a softmax over the texts). The reference runs under DataParallel, so each GPU
  scores only its own `size_batch` rows (6): the model attribute `ret_group` (config.model.
  ret_group; 0 = the whole batch) reproduces that grouping.
* 'vtc' (this port's, not the reference's): symmetric InfoNCE of the single-modality embeddings
  (tasks.vtc_video / vtc_text) / 0.05, which trains the cheap first stage of 'rerank'.
* 'qa' (main_qaoe.py): CE of fc's [B, num_answers] logits with `label`.
* 'mc' (main_qamc.py): video encoded once and repeated per option, logits [B, O] (no
  temperature), CE with `label`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from vlx.models.violet import forward, tasks
from vlx.objectives import contrastive


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def _groups(b: int, group: int) -> int:
  """Rows per pairing group: `group` when it divides the batch, else the whole batch."""
  if group <= 0 or group >= b:
    return b
  if b % group:
    raise ValueError(f"config.model.ret_group={group} must divide the batch of {b} rows")
  return group


def ret_scores(model, batch: dict, *, rng: jax.Array | None = None,
               train: bool = False) -> jax.Array:
  """[G, g, g] retrieval training scores (row = video, column = text, / 0.05) of the batch cut
  into G groups of g = `model.ret_group` rows."""
  rngs = tasks.rngs_for(rng, train)
  det = not train
  feat_img = model.encode_video(batch["video"], deterministic=det, rngs=rngs)
  feat_txt = model.embed_text(batch["text_ids"], deterministic=det, rngs=rngs)
  mask = batch["text_mask"]
  b = feat_img.shape[0]
  g = _groups(b, int(getattr(model, "ret_group", 0) or 0))
  n = b // g
  # pairs (i, j) inside each group, group-major then i-major: one cross-modal call for all
  base = jnp.arange(n)[:, None] * g
  rows = (base + jnp.repeat(jnp.arange(g), g)[None]).reshape(-1)
  cols = (base + jnp.tile(jnp.arange(g), g)[None]).reshape(-1)
  s = tasks.pair_logits(model, feat_img[rows], feat_txt[cols], mask[cols], deterministic=det,
                        rngs=rngs)
  return s[:, 0].reshape(n, g, g) / tasks.TEMPERATURE


def ret(model, batch: dict, *, rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
  scores = ret_scores(model, batch, rng=rng, train=train)
  n, g, _ = scores.shape
  flat = scores.reshape(n * g, g)
  target = jnp.tile(jnp.arange(g), n)
  return contrastive.info_nce(flat, target), {"ret_acc": _accuracy(flat, target)}


def vtc(model, batch: dict, *, rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
  rngs = tasks.rngs_for(rng, train)
  det = not train
  feat_img = model.encode_video(batch["video"], deterministic=det, rngs=rngs)
  feat_txt = model.embed_text(batch["text_ids"], deterministic=det, rngs=rngs)
  v = tasks.vtc_video(model, feat_img, deterministic=det, rngs=rngs)
  t = tasks.vtc_text(model, feat_txt, batch["text_mask"], deterministic=det, rngs=rngs)
  out = contrastive.vtc(v, t, jnp.asarray(tasks.TEMPERATURE, jnp.float32))
  target = jnp.arange(v.shape[0])
  return out["loss"], {"vtc_acc": _accuracy(out["sim_t2v"], target)}


def qa(model, batch: dict, *, rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
  logits = forward.qaoe_logits(model, batch["video"], batch["text_ids"], batch["text_mask"],
                               deterministic=not train, rngs=tasks.rngs_for(rng, train))
  labels = batch["label"].astype(jnp.int32)
  return contrastive.info_nce(logits, labels), {"qa_acc": _accuracy(logits, labels)}


def mc(model, batch: dict, *, rng: jax.Array, train: bool) -> tuple[jax.Array, dict]:
  logits = forward.qamc_logits(model, batch["video"], batch["choice_ids"], batch["choice_mask"],
                               deterministic=not train, rngs=tasks.rngs_for(rng, train))
  labels = batch["label"].astype(jnp.int32)
  return contrastive.info_nce(logits, labels), {"mc_acc": _accuracy(logits, labels)}


OBJECTIVES: dict[str, Callable[..., tuple[Any, dict]]] = {"ret": ret, "vtc": vtc, "qa": qa,
                                                          "mc": mc}

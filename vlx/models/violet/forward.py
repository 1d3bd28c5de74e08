"""VIOLET forward passes shared by the objectives, the tasks and the parity runner: the
pre-training step's outputs (spec §5.2–5.3) and the downstream scores (spec §6).

Every function takes already-normalised channels-last video [B,T,H,W,3] and int token ids; the
outputs are float32. Temperatures are the reference's literal 0.05.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.objectives.contrastive import cross_entropy, info_nce
from vlx.objectives.masked_lm import masked_lm

TEMPERATURE = 0.05
IGNORE = -1          # label of positions that are not predicted (CrossEntropyLoss(ignore_index=-1))


def video_mask(feat_img: jax.Array) -> jax.Array:
  """EncImg's video attention mask: all ones [B, Lv] (int32)."""
  return jnp.ones(feat_img.shape[:2], jnp.int32)


def features(model, video: jax.Array | None, ids: jax.Array, *, deterministic: bool = True,
             rngs: nnx.Rngs | None = None, feat_img: jax.Array | None = None
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """go_feat: (feat_img [B,Lv,D], mask_img [B,Lv], feat_txt [B,X,D]); `feat_img` given = the
  video features computed already (video is then not encoded again)."""
  if feat_img is None:
    feat_img = model.encode_video(video, deterministic=deterministic, rngs=rngs)
  feat_txt = model.embed_text(ids, deterministic=deterministic, rngs=rngs)
  return feat_img, video_mask(feat_img), feat_txt


def pretrain_outputs(model, *, video_masked: jax.Array | None, ids_masked: jax.Array,
                     text_mask: jax.Array, vtm_neg: jax.Array, mtm_labels: jax.Array,
                     mvm_labels: jax.Array, deterministic: bool = True,
                     rngs: nnx.Rngs | None = None, feat_img: jax.Array | None = None
                     ) -> dict[str, jax.Array]:
  """One pre-training step's tensors (VIOLET_Pretrain.forward + Agent_Pretrain.step).

  vtm_neg [B, O-1]: text indices of the negatives of row i (video i fixed); labels -1 = ignored.
  Returns feat_img, feat_txt, cross_out, mtm/mvm/vtm logits, loss_* (CE means over the
  non-ignored entries; 0 when there are none), loss_total = mtm + mvm + vtm, acc_* (argmax ==
  label over the non-ignored entries; VTM: column 0 wins). `feat_img`: already encoded
  video_masked (then video_masked may be None)."""
  kw = dict(deterministic=deterministic, rngs=rngs)
  feat_img, mask_img, feat_txt = features(model, video_masked, ids_masked, feat_img=feat_img,
                                          **kw)
  out = model.cross(feat_img, mask_img, feat_txt, text_mask, **kw)
  lv = feat_img.shape[1]
  mtm_logits = model.mlm_logits(out[:, lv:])
  mvm_logits = model.mvm_logits(out[:, :lv], **kw)
  vtm_logits = model.vtm_logits(feat_img, mask_img, feat_txt, text_mask, vtm_neg,
                                temperature=TEMPERATURE, **kw)
  mtm = masked_lm(mtm_logits, mtm_labels, ignore=IGNORE)
  mvm = masked_lm(mvm_logits, mvm_labels, ignore=IGNORE)
  vtm_labels = jnp.zeros((vtm_logits.shape[0],), jnp.int32)
  loss_vtm = info_nce(vtm_logits, vtm_labels)
  acc_vtm = jnp.mean((jnp.argmax(vtm_logits, -1) == 0).astype(jnp.float32))
  return dict(feat_img=feat_img, mask_img=mask_img, feat_txt=feat_txt, cross_out=out,
              mtm_logits=mtm_logits, mvm_logits=mvm_logits, vtm_logits=vtm_logits,
              vtm_labels=vtm_labels, loss_mtm=mtm["loss"], loss_mvm=mvm["loss"],
              loss_vtm=loss_vtm, loss_total=mtm["loss"] + mvm["loss"] + loss_vtm,
              acc_mtm=mtm["acc"].astype(jnp.float32), acc_mvm=mvm["acc"].astype(jnp.float32),
              acc_vtm=acc_vtm, count_mtm=mtm["count"], count_mvm=mvm["count"])


# -- downstream (spec §6) -------------------------------------------------------------------
def pair_logits(model, feat_img: jax.Array, mask_img: jax.Array, feat_txt: jax.Array,
                mask_txt: jax.Array, *, deterministic: bool = True,
                rngs: nnx.Rngs | None = None) -> jax.Array:
  """fc(cross(video n, text n)[:, Lv]) for aligned rows -> [N, k] (no temperature)."""
  out = model.cross(feat_img, mask_img, feat_txt, mask_txt, deterministic=deterministic,
                    rngs=rngs)
  return model.score(out, feat_img.shape[1], deterministic=deterministic, rngs=rngs)


def all_pairs(model, feat_img: jax.Array, mask_img: jax.Array, feat_txt: jax.Array,
              mask_txt: jax.Array, *, deterministic: bool = True,
              rngs: nnx.Rngs | None = None) -> jax.Array:
  """fc score of every (video i, text j), i-major -> [Nv, Nt] (row = video, no temperature)."""
  nv, nt = feat_img.shape[0], feat_txt.shape[0]
  vi = jnp.repeat(jnp.arange(nv), nt)
  tj = jnp.tile(jnp.arange(nt), nv)
  s = pair_logits(model, feat_img[vi], mask_img[vi], feat_txt[tj], mask_txt[tj],
                  deterministic=deterministic, rngs=rngs)
  return s[:, 0].reshape(nv, nt)


def retrieval_train_scores(model, video: jax.Array | None, ids: jax.Array, mask: jax.Array, *,
                           deterministic: bool = True, rngs: nnx.Rngs | None = None,
                           feat_img: jax.Array | None = None) -> jax.Array:
  """main_retrieval: scores[i, j] = fc(cross(video i, text j)) / 0.05, row = video [B, B]."""
  feat_img, mask_img, feat_txt = features(model, video, ids, deterministic=deterministic,
                                          rngs=rngs, feat_img=feat_img)
  return all_pairs(model, feat_img, mask_img, feat_txt, mask,
                   deterministic=deterministic, rngs=rngs) / TEMPERATURE


def retrieval_loss(scores: jax.Array) -> jax.Array:
  """CE(scores, arange(B)) row-wise: for each video a softmax over the texts."""
  return info_nce(scores)


def retrieval_eval_probs(model, feat_img: jax.Array, mask_img: jax.Array, feat_txt: jax.Array,
                         mask_txt: jax.Array) -> jax.Array:
  """eval_retrieval: prob[t, v] = sigmoid(fc(cross(video v, text t))) -> [Nt, Nv], row = text."""
  return jax.nn.sigmoid(all_pairs(model, feat_img, mask_img, feat_txt, mask_txt).T)


def qamc_logits(model, video: jax.Array | None, ids: jax.Array, mask: jax.Array, *,
                deterministic: bool = True, rngs: nnx.Rngs | None = None,
                feat_img: jax.Array | None = None) -> jax.Array:
  """main_qamc: texts [B, O, X]; the video encoded once and repeated per option (b-major)
  -> logits [B, O] (no temperature)."""
  b, o, x = ids.shape
  if feat_img is None:
    feat_img = model.encode_video(video, deterministic=deterministic, rngs=rngs)
  feat_txt = model.embed_text(ids.reshape(b * o, x), deterministic=deterministic, rngs=rngs)
  rows = jnp.repeat(jnp.arange(b), o)
  s = pair_logits(model, feat_img[rows], video_mask(feat_img)[rows], feat_txt,
                  mask.reshape(b * o, x), deterministic=deterministic, rngs=rngs)
  return s[:, 0].reshape(b, o)


def qaoe_logits(model, video: jax.Array | None, ids: jax.Array, mask: jax.Array, *,
                deterministic: bool = True, rngs: nnx.Rngs | None = None,
                feat_img: jax.Array | None = None) -> jax.Array:
  """main_qaoe: logits [B, num_answers] at the text [CLS]."""
  feat_img, mask_img, feat_txt = features(model, video, ids, deterministic=deterministic,
                                          rngs=rngs, feat_img=feat_img)
  return pair_logits(model, feat_img, mask_img, feat_txt, mask, deterministic=deterministic,
                     rngs=rngs)


def classification(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """CE mean and argmax predictions / accuracy (QA-MC, QA-OE)."""
  pred = jnp.argmax(logits, -1)
  return dict(loss=jnp.mean(cross_entropy(logits, labels)), pred=pred,
              acc=jnp.mean((pred == labels).astype(jnp.float32)))

"""VIOLET objectives (family contract): pre-training VTM + MLM + MVM (spec §5) and the downstream
objectives of vlx.models.violet.downstream (spec §6).

Pre-training step (Agent_Pretrain.masking + step): the attention each token receives is computed
on the UNMASKED inputs in eval mode without gradient (the attended branch's weights), masks are
drawn per sample (vlx.models.violet.masking), MVM targets come from the batch or the frozen dVAE
(vlx.models.violet.dvae_targets), the masked inputs go through forward.pretrain_outputs, and the
three losses come from that one forward pass. An objective with weight 0 is not masked for:
without 'mvm' no video patch is blacked out (and no dVAE runs), without 'mlm' no text token.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.models.violet import dvae_targets, forward, masking
from vlx.models.violet.data import KEY as SPECIAL_KEY

PRETRAIN = ("vtm", "mlm", "mvm")
DOWNSTREAM = ("ret", "vtc", "qa", "mc")
OBJECTIVES = PRETRAIN + DOWNSTREAM
METRICS = {"vtm": ("acc_vtm", "vtm_acc"), "mlm": ("acc_mtm", "mlm_acc"),
           "mvm": ("acc_mvm", "mvm_acc")}
ATTENDED_PROB = 0.5   # per sample: attended (1) vs blockwise (0) masking, np.random.choice([0, 1])


def text_specials(batch: dict) -> tuple[jax.Array, jax.Array]:
  """(special ids [B,3] = [CLS], [SEP], [PAD]; [MASK] id [B]) of the batch's tokenizer
  (vlx.models.violet.data), the BERT ids when the batch does not say."""
  ids = batch["text_ids"]
  if SPECIAL_KEY in batch:
    s = batch[SPECIAL_KEY].astype(jnp.int32)
    return s[:, :3], s[:, 3]
  b = ids.shape[0]
  special = jnp.broadcast_to(jnp.asarray(masking.SPECIAL_IDS, jnp.int32), (b, 3))
  return special, jnp.full((b,), masking.MASK_ID, jnp.int32)


def attention_received(model, video: jax.Array, ids: jax.Array, text_mask: jax.Array
                       ) -> jax.Array:
  """get_att on the unmasked inputs: eval mode, no gradient -> float32 [B, Lv+X]."""
  video, ids = jax.lax.stop_gradient(video), jax.lax.stop_gradient(ids)
  feat_img, mask_img, feat_txt = forward.features(model, video, ids)
  return jax.lax.stop_gradient(model.attention_received(feat_img, mask_img, feat_txt, text_mask))


def draw_masks(model, batch: dict, key: jax.Array, *, active: frozenset[str]
               ) -> dict[str, jax.Array]:
  """Masks (mtm_mask, mvm_mask, branch) for this batch, zeroed for inactive objectives."""
  video, ids, text_mask = batch["video"], batch["text_ids"], batch["text_mask"]
  t, height, width = video.shape[1:4]
  grid = (height // masking.PATCH, width // masking.PATCH)
  special, _ = text_specials(batch)
  att = attention_received(model, video, ids, text_mask) if ATTENDED_PROB > 0 else None
  masks = masking.sample_masks(key, ids, att, num_frames=t, grid=grid,
                               attended_prob=ATTENDED_PROB, special_ids=special)
  if "mlm" not in active:
    masks["mtm_mask"] = jnp.zeros_like(masks["mtm_mask"])
  if "mvm" not in active:
    masks["mvm_mask"] = jnp.zeros_like(masks["mvm_mask"])
  return masks


def pretrain_forward(model, batch: dict, *, active: frozenset[str], rng: jax.Array,
                     train: bool, masks: dict | None = None, vtm_neg: jax.Array | None = None
                     ) -> dict[str, jax.Array]:
  """forward.pretrain_outputs on this batch's masked inputs, plus the masks and targets used.

  `masks` ({mtm_mask [B,X], mvm_mask [B,T,h,w]}) and `vtm_neg` [B, O-1] replace the random
  draws (parity with recorded reference draws)."""
  if not hasattr(model, "mvm_head"):
    raise ValueError("objectives 'vtm' / 'mlm' / 'mvm' need config.model.head='pretrain'")
  k_mask, k_neg, k_drop = jax.random.split(rng, 3)
  video, ids = batch["video"], batch["text_ids"]
  b, t, height, width = video.shape[:4]
  grid = (height // masking.PATCH, width // masking.PATCH)
  if masks is None:
    masks = draw_masks(model, batch, k_mask, active=active)
  if "mvm" in active:
    vq = dvae_targets.targets(model, batch, grid)
  else:
    vq = jnp.zeros((b, t) + grid, jnp.int32)
  _, mask_id = text_specials(batch)
  video_m, ids_m, mtm_labels, mvm_labels = masking.apply_masks(
      video, ids, masks["mtm_mask"], masks["mvm_mask"], vq, mask_id=mask_id)
  if vtm_neg is None:
    vtm_neg = masking.vtm_negatives(k_neg, b)
  out = forward.pretrain_outputs(
      model, video_masked=video_m, ids_masked=ids_m, text_mask=batch["text_mask"],
      vtm_neg=vtm_neg, mtm_labels=mtm_labels, mvm_labels=mvm_labels, deterministic=not train,
      rngs=nnx.Rngs(dropout=k_drop) if train else None)
  out.update(masks, vq_tokens=vq, mtm_labels=mtm_labels, mvm_labels=mvm_labels, vtm_neg=vtm_neg,
             video_masked=video_m, ids_masked=ids_m)
  return out


def _downstream(model, batch: dict, active: set[str], rng: jax.Array, train: bool):
  from vlx.models.violet import downstream  # pylint: disable=import-outside-toplevel
  losses, metrics = {}, {}
  for i, name in enumerate(n for n in DOWNSTREAM if n in active):
    loss, m = downstream.OBJECTIVES[name](model, batch, rng=jax.random.fold_in(rng, i),
                                          train=train)
    losses[name] = loss
    metrics.update(m)
  return losses, metrics


def objectives(model, batch: dict, *, active: frozenset[str], rng: jax.Array,
               train: bool) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({objective: loss}, {metric: value}) of the active objectives (family contract; the step
  weights and sums the losses and logs them as train/<name>_loss)."""
  active = set(active)
  unknown = active - set(OBJECTIVES)
  if unknown:
    raise ValueError(f"VIOLET objectives {sorted(unknown)}; expected some of {OBJECTIVES}")
  pre, down = active & set(PRETRAIN), active & set(DOWNSTREAM)
  if pre and down:
    raise ValueError(f"config.objectives mixes pre-training {sorted(pre)} and downstream "
                     f"{sorted(down)} objectives; VIOLET trains one or the other")
  if down:
    return _downstream(model, batch, down, rng, train)
  if not pre:
    return {}, {}
  out = pretrain_forward(model, batch, active=frozenset(pre), rng=rng, train=train)
  losses = {name: out[f"loss_{'mtm' if name == 'mlm' else name}"] for name in PRETRAIN
            if name in pre}
  metrics = {new: out[old] for name, (old, new) in METRICS.items() if name in pre}
  return losses, metrics

"""All-in-one losses (spec §4, §5) and the family `loss_fn`.

Objectives (`config.objectives` names, reference loss_names): mlm, itm, wpa (the 0.1-scaled word-
patch alignment that always accompanies ITM; weight 1 = the reference), ind_itc, irtr,
multiple_choice, mc_vqa, openend_vqa (open-ended QA and action classification), vcop.
Training draws what the reference draws at random: the patch order of every frame, the ITM
label shuffle, the VCOP frame orders. ITM negatives and irtr false texts are the reference's
random clips / captions of the dataset when the batch carries `false_video` / `false_text_ids`
(config.data.train.false_videos / false_texts); without those keys they come from other rows of
the batch (`other_rows`, model.irtr_false_texts of them for irtr).
`fixture_outputs` (end of this file) recomputes the reference fixture with the same pieces.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.models.allinone import tasks
from vlx.objectives import cosine_contrastive, masked_lm, matching
from vlx.objectives import optimal_transport as ot

OBJECTIVES = ("mlm", "itm", "wpa", "ind_itc", "irtr", "multiple_choice", "mc_vqa",
              "openend_vqa", "vcop")
# objective -> (model attribute it needs, config field that creates it)
_HEADS = {"mlm": ("mlm_score", "heads.mlm"), "itm": ("itm_score", "heads.itm"),
          "wpa": ("itm_score", "heads.itm"), "irtr": ("itm_score", "heads.itm"),
          "multiple_choice": ("itm_score", "heads.itm"), "ind_itc": ("txt_proj", "heads.itc"),
          "mc_vqa": ("mc_vqa_classifier", "heads.mc_vqa"),
          "openend_vqa": ("vqa_classifier", "heads.num_qa_labels"),
          "vcop": ("vcop_head", "heads.vcop")}
_BATCH_KEYS = {"mlm": ("mlm_text_ids", "mlm_labels"), "multiple_choice": ("choice_ids", "label"),
               "mc_vqa": ("choice_ids", "label"), "openend_vqa": ("label",)}
IRTR_FALSE_TEXTS = 15   # the reference's draw_false_text for retrieval fine-tuning (spec §7)
WPA_SCALE = 0.1


def active_objectives(model, active, batch: dict | None = None) -> set[str]:
  """The active objectives (names, or {name: weight} keeping the non-zero ones), checked against
  the model's heads and the batch."""
  if isinstance(active, dict):
    active = {k for k, w in active.items() if w}
  unknown = sorted(set(active) - set(OBJECTIVES))
  if unknown:
    raise ValueError(f"config.objectives has unknown names {unknown}; allinone knows {OBJECTIVES}")
  active = set(active)
  for name in sorted(active):
    attr, field = _HEADS[name]
    if not hasattr(model, attr):
      raise ValueError(f"objective {name!r} needs the model's {attr} (config.model.{field})")
    for key in _BATCH_KEYS.get(name, ()) if batch is not None else ():
      if key not in batch:
        raise ValueError(f"objective {name!r} needs batch key {key!r}; the batch has "
                         f"{sorted(batch)} (config.data.train.task)")
  return active


def patch_size(model) -> int:
  return int(model.transformer.patch_embed.proj.kernel.shape[0])


def random_patch_perm(rng: jax.Array, model, video: jax.Array) -> jax.Array:
  """[B, T, P] an independent random patch order per frame (the reference's multinomial)."""
  b, t, h, w, _ = video.shape
  p = patch_size(model)
  return jnp.argsort(jax.random.uniform(rng, (b, t, (h // p) * (w // p))), axis=-1)


def itm_labels(rng: jax.Array, batch: int) -> jax.Array:
  """B//2 ones then zeros, shuffled (1 = matched pair)."""
  base = (jnp.arange(batch) < batch // 2).astype(jnp.int32)
  return jax.random.permutation(rng, base)


def other_rows(rng: jax.Array, batch: int, count: int) -> jax.Array:
  """[B, count] distinct row indices != the row itself (batch >= count + 1)."""
  if batch < count + 1:
    raise ValueError(f"need a batch of at least {count + 1} rows to draw {count} other rows "
                     f"from it, got {batch}")
  shifts = 1 + jax.random.permutation(rng, batch - 1)[:count]
  return (jnp.arange(batch)[:, None] + shifts[None, :]) % batch


def ce_ignore(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Mean CE over labels >= 0 (-100 / -1: not in the answer vocabulary, ignored) + accuracy."""
  return masked_lm.masked_lm(logits, jnp.where(labels >= 0, labels, masked_lm.IGNORE))


# -- forward pieces (shared by loss_fn and fixture_outputs) -----------------------------------
def mlm_forward(model, ids, mask, labels, video, perm, *, det=True, rngs=None) -> dict:
  out = model.infer(ids, mask, video, patch_perm=perm, deterministic=det, rngs=rngs)
  logits = model.mlm_score(out["text_feats"]).astype(jnp.float32)
  m = masked_lm.masked_lm(logits, labels)
  return dict(mlm_logits=logits, mlm_loss=m["loss"], mlm_acc=m["acc"])


def itm_forward(model, ids, mask, video, perm, labels, *, det=True, rngs=None) -> dict:
  """ITM logits/loss on the composed batch and the WPA terms from the same pass."""
  out = model.infer(ids, mask, video, patch_perm=perm, deterministic=det, rngs=rngs)
  logits = model.itm_score(out["cls_feats"]).astype(jnp.float32)
  m = matching.matching_loss(logits, labels)
  w = ot.wpa(out["text_feats"], out["image_feats"], mask,
             skip_second_video_token=bool(getattr(model, "deit", False)))
  return dict(itm_logits=logits, itm_loss=m["loss"], itm_acc=m["acc"],
              itm_cls_feats=out["cls_feats"], itm_text_feats=out["text_feats"],
              itm_image_feats=out["image_feats"], wpa_cost=w["cost"],
              wpa_transport_plan=w["plan"], wpa_distance=w["distance"],
              wpa_txt_valid=w["text_valid"], wpa_img_valid=w["video_valid"],
              itm_wpa_loss=ot.wpa_loss(w["distance"], labels, WPA_SCALE))


def itc_forward(model, ids, mask, video, perm, *, det=True, rngs=None) -> dict:
  """ind_itc: single-modality passes, projected CLS tokens, fixed-temperature InfoNCE (§4.3)."""
  t = model.infer_text_only(ids, mask, deterministic=det, rngs=rngs)["text_feats"]
  v = model.infer_video_only(video, patch_perm=perm, deterministic=det, rngs=rngs)["image_feats"]
  sim = cosine_contrastive.cosine_sim(t[:, 0], v[:, 0])
  c = cosine_contrastive.symmetric_loss(sim)
  return dict(itc_text_feats=t, itc_video_feats=v, itc_text_emb=t[:, 0], itc_video_emb=v[:, 0],
              itc_sim_t2v=sim, itc_logits_t2v=c["logits_t2v"], ind_itc_loss=c["loss"])


def options_forward(model, option_ids, option_mask, video, perm, labels, head: str, *,
                    det=True, rngs=None) -> dict:
  """[B, K] option scores (rank / mc_vqa head) and their CE against `labels`."""
  feats = tasks.option_cls_feats(model, option_ids, option_mask, video, patch_perm=perm,
                                 deterministic=det, rngs=rngs)
  scores = tasks.option_scores(model, feats, head, deterministic=det, rngs=rngs)
  m = matching.matching_loss(scores, labels)
  return dict(scores=scores, loss=m["loss"], acc=m["acc"])


def vcop_forward(model, frames, orders) -> tuple[jax.Array, jax.Array]:
  """(frames [B,T,D] in the order `orders` [B,T], their permutation labels [B])."""
  shuffled = jnp.take_along_axis(frames, orders[:, :, None].astype(jnp.int32), axis=1)
  return shuffled, tasks.permutation_index(orders)


# -- family contract ----------------------------------------------------------------------
def objectives(model, batch: dict, *, active: frozenset[str], rng: jax.Array,
               train: bool) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({objective: loss}, {metric: value}) of the active objectives (family contract; the step
  weights and sums the losses)."""
  active = active_objectives(model, active, batch)
  det = not train
  k_drop, k_perm, k_itm, k_neg, k_irtr, k_vcop = jax.random.split(rng, 6)
  rngs = nnx.Rngs(dropout=k_drop) if train else None
  video, ids, mask = batch["video"], batch.get("text_ids"), batch.get("text_mask")
  b = video.shape[0]
  perm = random_patch_perm(k_perm, model, video)
  losses: dict[str, jax.Array] = {}
  metrics: dict[str, jax.Array] = {}
  if "mlm" in active:
    o = mlm_forward(model, batch["mlm_text_ids"], mask, batch["mlm_labels"], video, perm,
                    det=det, rngs=rngs)
    losses["mlm"], metrics["mlm_acc"] = o["mlm_loss"], o["mlm_acc"]
  if active & {"itm", "wpa"}:
    labels = itm_labels(k_itm, b)
    if "false_video" in batch:  # the reference: a random clip of the dataset, embedded apart
      neg_video = batch["false_video"][:, 0]
      neg_perm = random_patch_perm(jax.random.fold_in(k_neg, 1), model, neg_video)
    else:                       # fallback: another row of the batch
      neg = other_rows(k_neg, b, 1)[:, 0]
      neg_video, neg_perm = video[neg], perm[neg]
    match = labels == 1
    itm_video = jnp.where(match[:, None, None, None, None], video, neg_video)
    itm_perm = jnp.where(match[:, None, None], perm, neg_perm)
    o = itm_forward(model, ids, mask, itm_video, itm_perm, labels, det=det, rngs=rngs)
    losses["itm"], losses["wpa"] = o["itm_loss"], o["itm_wpa_loss"]
    metrics["itm_acc"] = o["itm_acc"]
  if "ind_itc" in active:
    o = itc_forward(model, ids, mask, video, perm, det=det, rngs=rngs)
    losses["ind_itc"] = o["ind_itc_loss"]
  if "irtr" in active:
    if "false_text_ids" in batch:  # the reference: F_t random captions of the dataset
      false_ids, false_mask = batch["false_text_ids"], batch["false_text_mask"]
    else:                          # fallback: the captions of other rows of the batch
      f = min(int(getattr(model, "irtr_false_texts", IRTR_FALSE_TEXTS)), b - 1)
      idx = other_rows(k_irtr, b, f)
      false_ids, false_mask = ids[idx], mask[idx]
    opt_ids = jnp.concatenate([ids[:, None], false_ids], axis=1)
    opt_mask = jnp.concatenate([mask[:, None], false_mask], axis=1)
    o = options_forward(model, opt_ids, opt_mask, video, perm, jnp.zeros(b, jnp.int32), "rank",
                        det=det, rngs=rngs)
    losses["irtr"], metrics["irtr_acc"] = o["loss"], o["acc"]
  for name, head in (("multiple_choice", "rank"), ("mc_vqa", "mc_vqa")):
    if name in active:
      o = options_forward(model, batch["choice_ids"], batch["choice_mask"], video, perm,
                          batch["label"], head, det=det, rngs=rngs)
      losses[name], metrics[f"{name}_acc"] = o["loss"], o["acc"]
  if active & {"openend_vqa", "vcop"}:
    joint = model.infer(ids, mask, video, patch_perm=perm, deterministic=det, rngs=rngs)
    if "openend_vqa" in active:
      logits = model.vqa_classifier(joint["cls_feats"], deterministic=det, rngs=rngs)
      m = ce_ignore(logits.astype(jnp.float32), batch["label"])
      losses["openend_vqa"], metrics["openend_vqa_acc"] = m["loss"], m["acc"]
    if "vcop" in active:
      orders = jnp.argsort(jax.random.uniform(k_vcop, video.shape[:2]), axis=-1)
      frames, labels = vcop_forward(model, joint["final_norm_per_frame"][:, :, 0], orders)
      logits = model.vcop_head(frames, deterministic=det, rngs=rngs).astype(jnp.float32)
      m = matching.matching_loss(logits, labels)
      losses["vcop"], metrics["vcop_acc"] = m["loss"], m["acc"]
  return losses, metrics


# -- reference fixture (tiny/README.md outputs) ---------------------------------------------
# Full gradients the format records: output key -> reference parameter (zeros when the model has
# no such parameter, e.g. a file without temporal_embed: the reference's gradient is then 0).
FULL_GRADS = {"grad_pretrain_token_type_embeddings": "token_type_embeddings.weight",
              "grad_pretrain_temporal_embed": "transformer.temporal_embed",
              "grad_pretrain_cls_token": "transformer.cls_token"}


def _flat_params(tree) -> dict[str, jax.Array]:
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  from vlx.optim import path_str
  return {path_str(p): x for p, x in leaves}


def _grads(model, loss_of):
  """{path: gradient} of loss_of(model) w.r.t. every nnx.Param (eval mode)."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  g = jax.grad(lambda p: loss_of(nnx.merge(graphdef, p, rest)))(params)
  return _flat_params(g)


def _fixture_arrays(model, x: dict, active: frozenset, k_false: int, k_opts: int) -> dict:
  """Every array output (and the raw gradients) of the fixture; jitted by fixture_outputs."""
  video, perm = x["video"], x["video_patch_perm"]
  ids, mask = x["text_ids"], x["text_masks"]
  out: dict[str, jax.Array] = {}

  def pretrain(m):
    a = mlm_forward(m, x["text_ids_mlm"], mask, x["text_labels_mlm"], video, perm)
    b = itm_forward(m, ids, mask, x["itm_video"], x["itm_video_patch_perm"], x["itm_labels"])
    return a, b

  mlm, itm = pretrain(model)
  out.update({k: mlm[k] for k in ("mlm_logits", "mlm_loss")})
  out.update({k: v for k, v in itm.items() if k != "itm_acc"})
  out["pretrain_total_loss"] = mlm["mlm_loss"] + itm["itm_loss"] + itm["itm_wpa_loss"]
  if "ind_itc" in active:
    out.update(itc_forward(model, ids, mask, video, perm))
  emb, msk = model.embed_video(video, perm)
  videos = dict(zip(("video_embeds", "video_masks"),
                    tasks.per_video(emb, msk, video.shape[0], video.shape[1])))
  texts = dict(text_ids=ids, text_mask=mask)
  out["vtm_pair_itm_logits"] = tasks.pair_rank_scores(model, texts, videos, head="itm")
  if active & {"irtr", "multiple_choice"}:
    out["vtm_retrieval_scores"] = tasks.pair_rank_scores(model, texts, videos)
  if active & {"openend_vqa", "vcop"}:
    joint = model.infer(ids, mask, video, patch_perm=perm)
  if "openend_vqa" in active:
    out["qa_logits"] = model.vqa_classifier(joint["cls_feats"]).astype(jnp.float32)
    out["qa_loss"] = ce_ignore(out["qa_logits"], x["vqa_labels"])["loss"]
  for name, prefix, head, k, label in (
      ("multiple_choice", "mc", "rank", k_false, x.get("mc_answer")),
      ("mc_vqa", "mcvqa", "mc_vqa", k_opts, x.get("mcvqa_answer")),
      ("irtr", "irtr", "rank", k_false + 1, jnp.zeros(ids.shape[0], jnp.int32))):
    if name in active:   # options: the text, then the first k-1 false texts
      opt_ids = jnp.concatenate([ids[:, None], x["false_text_ids"][:, :k - 1]], axis=1)
      opt_mask = jnp.concatenate([mask[:, None], x["false_text_masks"][:, :k - 1]], axis=1)
      o = options_forward(model, opt_ids, opt_mask, video, perm, label, head)
      out[f"{prefix}_scores"], out[f"{prefix}_loss"] = o["scores"], o["loss"]
  if "vcop" in active:
    frames, labels = vcop_forward(model, joint["final_norm_per_frame"][:, :, 0], x["vcop_orders"])
    out["vcop_logits"] = model.vcop_head(frames).astype(jnp.float32)
    out["vcop_labels"] = labels
    out["vcop_loss"] = matching.matching_loss(out["vcop_logits"], labels)["loss"]

  def total(m):
    a, b = pretrain(m)
    return a["mlm_loss"] + b["itm_loss"] + b["itm_wpa_loss"]

  grads = {"pretrain": _grads(model, total)}
  if "ind_itc" in active:
    grads["itc"] = _grads(model, lambda m: itc_forward(m, ids, mask, video, perm)["ind_itc_loss"])
  return out, grads


def fixture_outputs(model, inputs: dict, fixture_config: dict, source_grads,
                    compiler_options: dict | None = None) -> dict[str, np.ndarray]:
  """The head / loss / gradient outputs of tiny/README.md from the fixture's recorded inputs
  (eval mode; patch orders, ITM labels and VCOP orders as recorded). `source_grads(grads)` maps
  {nnx path: gradient} to {reference parameter name: gradient in its layout} (the converter rules
  in reverse, vlx.convert.reverse); grad_*_names / grad_*_norms then list every parameter of the
  fixture's checkpoint, so any fixture of the format is covered. `compiler_options` go to XLA
  (tests compile unoptimised)."""
  from vlx.convert import reverse  # pylint: disable=import-outside-toplevel
  active = frozenset(k for k, v in fixture_config.get("loss_names", {}).items() if v >= 1)
  x = {k: jnp.asarray(v) for k, v in inputs.items()}
  k_false = int(fixture_config.get("draw_false_text", 0))
  k_opts = int(fixture_config.get("draw_options_text", 0))
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda state, x: _fixture_arrays(nnx.merge(graphdef, state), x, active, k_false,
                                                 k_opts), compiler_options=compiler_options)
  out, grads = run(state, x)
  out = {k: np.asarray(v) for k, v in out.items()}
  if "ind_itc" in active:
    out["itc_metrics_t2v"], out["itc_metrics_v2t"] = tasks.reference_retrieval_metrics(
        out["itc_sim_t2v"])
  ref = {tag: source_grads({k: np.asarray(v) for k, v in g.items()}) for tag, g in grads.items()}
  for tag, by_name in ref.items():
    out[f"grad_{tag}_names"] = np.asarray(list(by_name))
    out[f"grad_{tag}_norms"] = np.asarray([reverse.norm(g) for g in by_name.values()],
                                          np.float32)
  d, t = int(model.pooler.kernel.shape[0]), int(x["video"].shape[1])
  zeros = {"grad_pretrain_token_type_embeddings": (2, d), "grad_pretrain_temporal_embed": (1, t, d),
           "grad_pretrain_cls_token": (1, 1, d)}
  for key, name in FULL_GRADS.items():
    out[key] = np.asarray(ref["pretrain"].get(name, np.zeros(zeros[key])), np.float32)
  return out

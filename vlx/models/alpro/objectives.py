"""ALPRO losses (spec §5: VTC + VTM + MLM + PEM; §6: QA CE) and retrieval functions (§6.1).

`forward_pretrain` returns every intermediate the reference fixture records, so the parity code and
`objectives` share one path.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlx.objectives import contrastive, masked_lm, matching, pem

OBJECTIVES = ("vtc", "vtm", "mlm", "pem", "qa")


def _rngs(rng: jax.Array, train: bool) -> nnx.Rngs | None:
  return nnx.Rngs(dropout=rng) if train else None


def _check_active(model, active: frozenset[str]) -> set[str]:
  """The active objectives, checked against the heads this model was built with."""
  active = set(active)
  if "pem" in active and not hasattr(model, "pem_head"):
    raise ValueError("objective 'pem' needs model.pem=True and model.head='pretrain'")
  if ("qa" in active) != (model.head == "qa") or (model.head == "qa" and active != {"qa"}):
    raise ValueError(f"model.head={model.head!r} with objectives {sorted(active)}: the qa head "
                     "trains 'qa' alone and 'qa' needs the qa head")
  if "mlm" in active and model.head == "qa":
    raise ValueError("objective 'mlm' is not available with model.head='qa'")
  return active


def forward_pretrain(model, batch: dict, *, active: set[str], rng: jax.Array, train: bool,
                     prompts: str = "video") -> dict[str, jax.Array]:
  """All pre-training / retrieval fine-tuning tensors and losses for the active objectives."""
  rng_drop, rng_v, rng_t = jax.random.split(rng, 3)
  det = not train
  rngs = _rngs(rng_drop, train)
  out: dict[str, jax.Array] = {}
  ids, mask = batch["text_ids"], batch["text_mask"]
  text_len = ids.shape[1]
  out["temp"] = temp = model.temperature()
  out["video_embeds"] = video = model.encode_video(batch["video"], deterministic=det, rngs=rngs)
  out["text_embeds"] = text = model.encode_text(ids, mask, deterministic=det, rngs=rngs)
  out["video_feat"], out["text_feat"] = model.video_feat(video), model.text_feat(text)
  c = contrastive.vtc(out["video_feat"], out["text_feat"], temp)
  out.update(vtc_loss=c["loss"], vtc_loss_v2t=c["loss_v2t"], vtc_loss_t2v=c["loss_t2v"],
             vtc_sim_v2t=c["sim_v2t"], vtc_sim_t2v=c["sim_t2v"])
  if active & {"vtm", "pem"}:
    b = ids.shape[0]
    if "vtm_neg_video_idx" in batch:   # fixed negatives (parity with recorded reference draws)
      neg_v = batch["vtm_neg_video_idx"].astype(jnp.int32)
      neg_t = batch["vtm_neg_text_idx"].astype(jnp.int32)
    else:
      neg_v = matching.sample_negatives(rng_v, c["sim_t2v"])   # negative video for each text
      neg_t = matching.sample_negatives(rng_t, c["sim_v2t"])   # negative text for each video
    out["vtm_neg_weights_t2v"] = matching.negative_weights(c["sim_t2v"])
    out["vtm_neg_weights_v2t"] = matching.negative_weights(c["sim_v2t"])
    # positives and the 2B negatives in one fusion pass: rows [pos | (t_b, v_jb) | (t_kb, v_b)]
    all_text = jnp.concatenate([text, text, text[neg_t]], axis=0)
    all_mask = jnp.concatenate([mask, mask, mask[neg_t]], axis=0)
    all_video = jnp.concatenate([video, video[neg_v], video], axis=0)
    fused = model.fuse(all_text, all_mask, all_video, deterministic=det, rngs=rngs)
    out["multimodal_pos"], out["multimodal_neg"] = fused[:b], fused[b:]
    out["vtm_logits"] = model.itm_logits(fused)
    out["vtm_labels"] = jnp.concatenate([jnp.ones(b, jnp.int32), jnp.zeros(2 * b, jnp.int32)])
    m = matching.matching_loss(out["vtm_logits"], out["vtm_labels"])
    out["vtm_loss"], out["vtm_acc"] = m["loss"], m["acc"]
  if "mlm" in active:
    mlm_text = model.encode_text(batch["mlm_text_ids"], mask, deterministic=det, rngs=rngs)
    mlm_fused = model.fuse(mlm_text, mask, video, deterministic=det, rngs=rngs)
    out["mlm_text_embeds"], out["mlm_multimodal"] = mlm_text, mlm_fused
    out["mlm_logits"] = model.mlm_logits(mlm_fused, text_len)
    m = masked_lm.masked_lm(out["mlm_logits"], batch["mlm_labels"])
    out["mlm_loss"], out["mlm_acc"] = m["loss"], m["acc"]
  if "pem" in active:
    # the prompter is frozen and always in eval mode: no dropout, no gradient (spec §5.4)
    # image-text batches (`is_image`, CC3M) use the image prompts (spec §5.4/§7)
    sim = jax.lax.stop_gradient(model.prompter.entity_similarity(
        batch["crop_video"], prompts, is_image=batch.get("is_image")))
    out["pem_sim"] = sim
    out["pem_pseudo_labels"], out["pem_ignore_masks"] = pem.pseudo_labels(sim)
    out["pem_logits"] = model.pem_logits(out["multimodal_pos"], text_len, batch["mpm_mask"])
    out["pem_loss"] = pem.soft_ce(out["pem_logits"], out["pem_pseudo_labels"],
                                  out["pem_ignore_masks"])
  return out


def objectives(model, batch: dict, *, active: frozenset[str], rng: jax.Array,
               train: bool) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({objective: loss}, {metric: value}) of the active objectives (family contract; the step
  weights and sums the losses)."""
  active = _check_active(model, active)
  if model.head == "qa":
    logits = qa_logits(model, batch, rng=rng, train=train)
    loss = jnp.mean(contrastive.cross_entropy(logits, batch["label"]))
    acc = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    return {"qa": loss}, {"qa_acc": acc}
  out = forward_pretrain(model, batch, active=active, rng=rng, train=train)
  losses = {name: out[f"{name}_loss"] for name in ("vtc", "vtm", "mlm", "pem") if name in active}
  metrics = {"temp": out["temp"]}
  metrics.update({name: out[name] for name in ("vtm_acc", "mlm_acc") if name in out})
  return losses, metrics


def qa_forward(model, batch: dict, *, rng: jax.Array, train: bool) -> dict[str, jax.Array]:
  """QA: classifier on the fused text [CLS] (spec §6.2)."""
  rngs = _rngs(rng, train)
  det = not train
  video = model.encode_video(batch["video"], deterministic=det, rngs=rngs)
  text = model.encode_text(batch["text_ids"], batch["text_mask"], deterministic=det, rngs=rngs)
  fused = model.fuse(text, batch["text_mask"], video, deterministic=det, rngs=rngs)
  return dict(video_embeds=video, text_embeds=text, multimodal=fused,
              logits=model.qa_logits(fused))


def qa_logits(model, batch: dict, *, rng: jax.Array | None = None,
              train: bool = False) -> jax.Array:
  """[B, num_labels] answer logits (family contract; eval mode unless `train`)."""
  if model.head != "qa":
    raise ValueError(f"qa_logits needs a model built with head='qa', not {model.head!r}")
  rng = jax.random.key(0) if rng is None else rng
  return qa_forward(model, batch, rng=rng, train=train)["logits"]


# -- retrieval (family contract) -----------------------------------------------------------
def encode_videos(model, batch: dict) -> dict[str, jax.Array]:
  video = model.encode_video(batch["video"])
  return dict(video_feat=model.video_feat(video), video_embeds=video)


def encode_texts(model, batch: dict) -> dict[str, jax.Array]:
  text = model.encode_text(batch["text_ids"], batch["text_mask"])
  return dict(text_feat=model.text_feat(text), text_embeds=text, text_mask=batch["text_mask"])


def pair_itm_logits(model, texts: dict, videos: dict) -> jax.Array:
  """itm logits for every (video, text) pair, [Nv, Nt, 2]: the fusion runs Nt x Nv times."""
  graphdef, state = nnx.split(model)
  t_emb, t_mask = texts["text_embeds"], texts["text_mask"]
  nt = t_emb.shape[0]

  def one_video(v_emb):
    m = nnx.merge(graphdef, state)
    v = jnp.broadcast_to(v_emb[None], (nt,) + v_emb.shape)
    return m.itm_logits(m.fuse(t_emb, t_mask, v))

  return jax.lax.map(one_video, videos["video_embeds"])


def pair_scores(model, texts: dict, videos: dict) -> jax.Array:
  """P(match) of the itm head for aligned rows (text i, video i), [N]: the re-ranking step of
  the fast retrieval mode scores only each text's top-k videos (vlx.evals.retrieval)."""
  fused = model.fuse(texts["text_embeds"], texts["text_mask"], videos["video_embeds"])
  return jax.nn.softmax(model.itm_logits(fused), axis=-1)[:, 1]


def retrieval_scores(model, texts: dict, videos: dict, *, mode: str = "vtm") -> jax.Array:
  """[Nt, Nv] scores: 'vtc' = feature similarity / temp; 'vtm' = P(match) of the itm head.

  ALPRO ranks by 'vtm' over every pair (spec §6.1); the reference rounds scores to 4 decimals
  before sorting, which is left to the evaluator.
  """
  if mode == "vtc":
    return texts["text_feat"] @ videos["video_feat"].T / model.temperature()
  if mode == "vtm":
    return jax.nn.softmax(pair_itm_logits(model, texts, videos), axis=-1)[..., 1].T
  raise ValueError(f"retrieval mode {mode!r}; expected 'vtc' or 'vtm'")

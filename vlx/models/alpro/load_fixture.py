"""Reference-fixture support for ALPRO: model config from config.json, weights through the generic
converter (vlx/convert + alpro's convert.py), and every output of outputs.npz recomputed with vlx
(`python -m vlx.convert.parity --family alpro`, tests/test_alpro_parity.py).
"""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlx.models.alpro.model import model_config as alpro_model
from vlx.convert import ConversionResult, convert_state_dict, load_state_dict, reverse
from vlx.convert.engine import require_complete
from vlx.evals.retrieval import retrieval_metrics
from vlx.layers import common
from vlx.models.alpro.model import AlproModel, pem_pooled
from vlx.models.alpro import objectives as obj
from vlx.objectives import pem

TASKS = {"pretrain": "pretrain", "retrieval": "retrieval", "qa": "qa"}


def _need(d: dict, key: str, where: str):
  if key not in d:
    raise KeyError(f"fixture config.json: missing {where}.{key}")
  return d[key]


def model_config_from_fixture(config_json: dict, task: str) -> ml_collections.ConfigDict:
  """ALPRO model config (alpro_model('') schema) with the sizes of a fixture's config.json."""
  if task not in TASKS:
    raise ValueError(f"task={task!r}; expected one of {sorted(TASKS)}")
  mc = _need(config_json, "model_config", "")
  vc = _need(config_json, "visual_model_cfg", "")
  hc = _need(config_json, "hardcoded_overrides", "")
  tc = _need(config_json, task, "")
  if mc.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"model_config.hidden_act={mc['hidden_act']!r}; ALPRO uses 'gelu' (erf)")
  if _need(hc, "timesformer_embed_dim", "hardcoded_overrides") != mc["hidden_size"]:
    raise ValueError("hardcoded_overrides.timesformer_embed_dim must equal "
                     "model_config.hidden_size")
  c = alpro_model("")
  c.head = TASKS[task]
  c.embed_dim = int(_need(hc, "embed_dim", "hardcoded_overrides"))
  c.num_entities = int(mc.get("num_entities", config_json.get("pretrain", {}).get(
      "num_entities", c.num_entities)))
  c.pem = task == "pretrain"
  c.num_labels = int(tc["num_labels"]) if task == "qa" else 0
  c.temp_init = float(config_json.get("initial_values", {}).get("temp", c.temp_init))
  c.video.update(
      img_size=int(tc.get("crop_img_size", _need(vc, "img_size", "visual_model_cfg"))),
      patch_size=int(_need(vc, "patch_size", "visual_model_cfg")),
      num_frames=int(_need(tc, "num_frm", task)),
      width=int(hc["timesformer_embed_dim"]),
      depth=int(_need(hc, "timesformer_depth", "hardcoded_overrides")),
      num_heads=int(_need(hc, "timesformer_num_heads", "hardcoded_overrides")),
      mlp_ratio=hc.get("timesformer_mlp_ratio", 4),
      ln_eps=float(hc.get("timesformer_layer_norm_eps", 1e-6)),
      drop_path_rate=float(vc.get("drop_path_rate", 0.0)),
      num_classes=int(hc.get("timesformer_num_classes", 400)))
  c.text.update(
      vocab_size=int(_need(mc, "vocab_size", "model_config")),
      hidden_size=int(mc["hidden_size"]),
      num_layers=int(_need(mc, "num_hidden_layers", "model_config")),
      fusion_layer=int(_need(mc, "fusion_layer", "model_config")),
      num_heads=int(_need(mc, "num_attention_heads", "model_config")),
      intermediate_size=int(_need(mc, "intermediate_size", "model_config")),
      max_position_embeddings=int(_need(mc, "max_position_embeddings", "model_config")),
      type_vocab_size=int(mc.get("type_vocab_size", 2)),
      ln_eps=float(mc.get("layer_norm_eps", 1e-12)),
      dropout=float(mc.get("hidden_dropout_prob", 0.1)),
      attn_dropout=float(mc.get("attention_probs_dropout_prob", 0.1)))
  return c


def read_fixture(fixture_dir) -> tuple[dict, dict, dict]:
  """(config.json, inputs.npz, checkpoint.pt) of a fixture directory."""
  d = pathlib.Path(fixture_dir)
  cfg = json.loads((d / "config.json").read_text())
  inputs = dict(np.load(d / "inputs.npz"))
  sd = load_state_dict(d / "checkpoint.pt")
  return cfg, inputs, sd


def to_channels_last(video: np.ndarray) -> jax.Array:
  """Reference (B, T, C, H, W) -> vlx (B, T, H, W, C)."""
  return jnp.asarray(np.transpose(video, (0, 1, 3, 4, 2)))


# -- fixture outputs -----------------------------------------------------------------------
# Full gradients the format records (tiny/README.md `grad/<name>`); `grad_norm/<name>` is written
# for every parameter of the checkpoint.
FULL_GRADS = ("temp", "itm_head.weight", "mpm_head.2.bias")


def convert_fixture(cfg: dict, task: str, sd: dict) -> ConversionResult:
  """The fixture's checkpoint converted for `task` by the generic converter (strict: every
  source key used or declared unused, every model variable filled)."""
  config = model_config_from_fixture(cfg, task)
  return require_complete(convert_state_dict("alpro", sd, variant=TASKS[task],
                                            model_config=config),
                          f"fixture checkpoint for task {task!r}")


def _build(cfg: dict, task: str, sd: dict) -> AlproModel:
  """The fixture's model for `task` (see convert_fixture)."""
  return convert_fixture(cfg, task, sd).model


def compute_fixture_outputs(fixture_dir) -> dict[str, np.ndarray]:
  """Every key of the fixture's outputs.npz, recomputed with vlx (eval mode, fixed negatives)."""
  cfg, x, sd = read_fixture(fixture_dir)
  result = convert_fixture(cfg, "pretrain", sd)
  model = result.model
  batch = dict(video=to_channels_last(x["visual_inputs"]),
               text_ids=jnp.asarray(x["text_input_ids"]),
               text_mask=jnp.asarray(x["text_input_mask"]),
               mlm_text_ids=jnp.asarray(x["mlm_text_input_ids"]),
               mlm_labels=jnp.asarray(x["mlm_labels"]),
               crop_video=to_channels_last(x["crop_visual_inputs"]),
               mpm_mask=jnp.asarray(x["mpm_mask"]),
               vtm_neg_video_idx=jnp.asarray(x["vtm_neg_video_idx"]),
               vtm_neg_text_idx=jnp.asarray(x["vtm_neg_text_idx"]))
  prompts = {k: jnp.asarray(x[k]) for k in (
      "video_prompt_input_ids", "video_prompt_attention_mask", "image_prompt_input_ids",
      "image_prompt_attention_mask")}
  n_templates = (int(cfg["pretrain"].get("n_video_prompt_templates", 12)),
                 int(cfg["pretrain"].get("n_image_prompt_templates", 12)))
  out = dict(_pretrain_outputs(model, batch, prompts, n_templates))
  grads = {"/".join(str(q) for q in k): np.asarray(v[...])
           for k, v in nnx.to_flat_state(out.pop("grads"))}
  ref_grads = reverse.source_gradients(result, sd, grads)   # reference names and layouts
  out.update({f"grad_norm/{name}": reverse.norm(g) for name, g in ref_grads.items()})
  out.update({f"grad/{name}": ref_grads[name] for name in FULL_GRADS})
  out.update(retrieval_fixture_outputs(cfg, x, sd))
  out.update(_qa_outputs(cfg, x, sd, fixture_dir))
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


_WEIGHTS = {k: 1.0 for k in ("vtc", "vtm", "mlm", "pem")}
_KEEP = ("video_embeds text_embeds video_feat text_feat temp vtc_sim_v2t vtc_sim_t2v vtc_loss_v2t "
         "vtc_loss_t2v vtc_loss vtm_neg_weights_t2v vtm_neg_weights_v2t multimodal_pos "
         "multimodal_neg vtm_logits vtm_labels vtm_loss mlm_text_embeds mlm_multimodal mlm_logits "
         "mlm_loss pem_sim pem_pseudo_labels pem_ignore_masks pem_logits pem_loss").split()


@nnx.jit(static_argnums=(3,))
def _pretrain_outputs(model: AlproModel, batch: dict, prompts: dict, n_templates) -> dict:
  """Pre-training model tensors, prompter tensors and the gradients of total_loss (one jit)."""
  rng = jax.random.key(0)
  out = {}
  video = batch["video"]
  out["video_tokens_embedded"] = emb = model.video.embed(video)
  out["video_block0_out"] = model.video.blocks[0](emb, video.shape[1])
  out["video_tokens_full"] = model.video.all_tokens(video)
  # one forward serves the outputs and the gradients of total_loss (eval mode, recorded
  # negatives); the tied word embedding sums its lookup and decoder gradients automatically
  def total(m):
    f = obj.forward_pretrain(m, batch, active=set(_WEIGHTS), rng=rng, train=False)
    return sum(f[f"{k}_loss"] for k in _WEIGHTS), f
  (_, fwd), out["grads"] = nnx.value_and_grad(total, has_aux=True)(model)
  out.update({k: fwd[k] for k in _KEEP})
  text_len = batch["text_ids"].shape[1]
  out["pem_pooled_visual"] = pem_pooled(fwd["multimodal_pos"], text_len, batch["mpm_mask"])
  forced = jnp.zeros(fwd["pem_logits"].shape[0], bool).at[0].set(True)
  out["pem_loss_forced_ignore0"] = pem.soft_ce(fwd["pem_logits"], fwd["pem_pseudo_labels"], forced)
  out["total_loss"] = fwd["vtc_loss"] + fwd["vtm_loss"] + fwd["mlm_loss"] + fwd["pem_loss"]
  p = model.prompter
  out["video_prompt_feat"] = p.prompt_text_features(
      prompts["video_prompt_input_ids"], prompts["video_prompt_attention_mask"], n_templates[0])
  out["image_prompt_feat"] = p.prompt_text_features(
      prompts["image_prompt_input_ids"], prompts["image_prompt_attention_mask"], n_templates[1])
  out["prompter_crop_video_embeds"] = crop = p.encode_video(batch["crop_video"])
  out["prompter_crop_video_feat"] = p.video_feat(crop)
  out["pem_sim_img"] = sim_img = p.entity_similarity(batch["crop_video"], "image")
  out["pem_pseudo_labels_img"], out["pem_ignore_masks_img"] = pem.pseudo_labels(sim_img)
  pf = obj.forward_pretrain(p, batch, active={"vtc"}, rng=rng, train=False)
  out.update(prompter_video_embeds=pf["video_embeds"], prompter_text_embeds=pf["text_embeds"],
             prompter_video_feat=pf["video_feat"], prompter_text_feat=pf["text_feat"],
             prompter_sim_v2t=pf["vtc_sim_v2t"], prompter_sim_t2v=pf["vtc_sim_t2v"],
             prompter_vtc_loss=pf["vtc_loss"])
  return out


_METRIC_NAMES = {"medr": "medianR", "meanr": "meanR"}   # vlx.evals names -> fixture names


def retrieval_fixture_outputs(cfg: dict, x: dict, sd: dict) -> dict:
  """Retrieval model = checkpoint.pt minus prompter/PEM, time_embed resized (strict=False load)."""
  model = _build(cfg, "retrieval", sd)
  out, scores_t2v = _retrieval_jit(model, to_channels_last(x["ret_visual_inputs"]),
                                   jnp.asarray(x["ret_text_input_ids"]),
                                   jnp.asarray(x["ret_text_input_mask"]))
  metrics = retrieval_metrics(np.asarray(scores_t2v), np.arange(scores_t2v.shape[0]))
  for k, v in metrics.items():
    direction, name = ("video2text", k[4:]) if k.startswith("v2t/") else ("text2video", k)
    out[f"ret_metric/{direction}/{_METRIC_NAMES.get(name, name)}"] = v
  return out


@nnx.jit
def _retrieval_jit(model: AlproModel, video, text_ids, text_mask):
  videos = obj.encode_videos(model, dict(video=video))
  texts = obj.encode_texts(model, dict(text_ids=text_ids, text_mask=text_mask))
  logits = obj.pair_itm_logits(model, texts, videos)                       # (Nv, Nt, 2)
  scores_t2v = obj.retrieval_scores(model, texts, videos, mode="vtm")      # (Nt, Nv)
  out = dict(ret_time_embed_resized=model.video.time_embed[...], ret_itm_logits=logits,
             ret_score_matrix=scores_t2v.T,
             ret_itc_scores=obj.retrieval_scores(model, texts, videos, mode="vtc").T)
  return out, scores_t2v


def _qa_outputs(cfg: dict, x: dict, sd: dict, fixture_dir) -> dict:
  """QA model from checkpoint_qa.pt; qa_time_embed_resized = the pretrain time_embed resized."""
  t_qa = int(cfg["qa"]["num_frm"])
  resized = common.nearest_resize_1d(jnp.asarray(sd["visual_encoder.model.time_embed"]), t_qa, 1)
  sd_qa = load_state_dict(pathlib.Path(fixture_dir) / "checkpoint_qa.pt")
  model = _build(cfg, "qa", sd_qa)
  batch = dict(video=to_channels_last(x["qa_visual_inputs"]),
               text_ids=jnp.asarray(x["qa_text_input_ids"]),
               text_mask=jnp.asarray(x["qa_text_input_mask"]), label=jnp.asarray(x["qa_labels"]))
  return dict(qa_time_embed_resized=resized, **_qa_jit(model, batch))


@nnx.jit
def _qa_jit(model: AlproModel, batch: dict) -> dict:
  f = obj.qa_forward(model, batch, rng=jax.random.key(0), train=False)
  losses, _ = obj.objectives(model, batch, active=frozenset({"qa"}), rng=jax.random.key(0),
                             train=False)
  loss = losses["qa"]
  return dict(qa_video_embeds=f["video_embeds"], qa_text_embeds=f["text_embeds"],
              qa_multimodal=f["multimodal"], qa_logits=f["logits"], qa_loss=loss)

"""ALPRO (Li et al., CVPR 2022): TimeSformer + BERT whose upper layers fuse [text ; video].

Module tree = README "ALPRO module tree" (the converter rules depend on these names).

Temperature: the reference clamps `temp` in place to [0.001, 0.5] under no_grad at every
forward. A pure function cannot mutate, so `temperature()` returns
`temp + stop_gradient(clip(temp) - temp)`: the forward value is the clamped one and the
gradient reaches `temp` unchanged (identity), as in the reference where the clamped parameter
is used directly. The stored value may leave the range after an update; every use is clamped.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vlx.layers import common
from vlx.layers.bert import BertEncoder, MlmHead
from vlx.layers.mlp import Mlp
from vlx.layers.timesformer import TimeSformer

HEADS = ("pretrain", "prompter", "retrieval", "qa")
TEMP_MIN, TEMP_MAX = 0.001, 0.5


def model_config(preset: str = "") -> ml_collections.ConfigDict:
  """The config.model block of ALPRO: released sizes for preset '', reduced ones for 'demo'
  (CPU demos) and 'tiny' (tests). configs/ and the converter start from it."""
  m = ml_collections.ConfigDict(dict(
      family="alpro", dtype="float32", param_dtype="float32", remat=False,
      head="pretrain",  # pretrain | prompter | retrieval | qa
      kernel_init="trunc_normal",  # fresh-weight init; 'lecun' trains the small demos much faster
      embed_dim=256, temp_init=0.07, num_entities=1000, num_labels=0, pem=False,
      video=ml_collections.ConfigDict(dict(
          img_size=224, patch_size=16, num_frames=4, width=768, depth=12, num_heads=12,
          mlp_ratio=4, ln_eps=1e-6, drop_path_rate=0.1, num_classes=400)),
      text=ml_collections.ConfigDict(dict(
          vocab_size=30522, hidden_size=768, num_layers=12, fusion_layer=6, num_heads=12,
          intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
          ln_eps=1e-12, dropout=0.1, attn_dropout=0.1)),
  ))
  if preset == "demo":
    m.video.update(img_size=32, patch_size=8, num_frames=4, width=128, depth=2, num_heads=4,
                   drop_path_rate=0.0)
    m.text.update(vocab_size=128, hidden_size=128, num_layers=4, fusion_layer=2, num_heads=4,
                  intermediate_size=256, max_position_embeddings=32, dropout=0.0,
                  attn_dropout=0.0)
    m.embed_dim = 64
    m.num_entities = 16
    m.kernel_init = "lecun"
  elif preset == "tiny":
    m.video.update(img_size=32, patch_size=16, num_frames=2, width=32, depth=1, num_heads=2,
                   drop_path_rate=0.0)
    m.text.update(vocab_size=128, hidden_size=32, num_layers=2, fusion_layer=1, num_heads=2,
                  intermediate_size=64, max_position_embeddings=32)
    m.embed_dim = 16
    m.num_entities = 16
  return m


class PromptFeatures(nnx.Variable):
  """Entity prompt features of the prompter: state, but not trained (not an nnx.Param)."""


class AlproModel(nnx.Module):
  """One ALPRO model; `head` selects the extra modules of the reference class it mirrors."""

  def __init__(self, model_config: ml_collections.ConfigDict, head: str = "pretrain", *,
               rngs: nnx.Rngs):
    if head not in HEADS:
      raise ValueError(f"model.head={head!r}; expected one of {HEADS}")
    c, v, t = model_config, model_config.video, model_config.text
    if v.width != t.hidden_size:
      raise ValueError(f"model.video.width={v.width} must equal model.text.hidden_size="
                       f"{t.hidden_size}: video tokens are concatenated to text tokens")
    if not 0 < t.fusion_layer <= t.num_layers:
      raise ValueError(f"model.text.fusion_layer={t.fusion_layer} must be in (0, num_layers]")
    self.head = head
    self.fusion_layer = t.fusion_layer
    dt, pdt = common.as_dtype(c.dtype), common.as_dtype(c.param_dtype)
    kw = dict(dtype=dt, param_dtype=pdt, rngs=rngs)
    d, e = t.hidden_size, c.embed_dim
    self.video = TimeSformer(
        img_size=v.img_size, patch_size=v.patch_size, num_frames=v.num_frames, width=v.width,
        depth=v.depth, num_heads=v.num_heads, mlp_ratio=v.mlp_ratio, ln_eps=v.ln_eps,
        drop_path_rate=v.drop_path_rate, remat=c.remat, **kw)
    self.text = BertEncoder(
        vocab_size=t.vocab_size, hidden_size=d, num_layers=t.num_layers, num_heads=t.num_heads,
        intermediate_size=t.intermediate_size, max_position_embeddings=t.max_position_embeddings,
        type_vocab_size=t.type_vocab_size, ln_eps=t.ln_eps, dropout=t.dropout,
        attn_dropout=t.attn_dropout, remat=c.remat, **kw)
    if head != "qa":
      self.mlm_head = MlmHead(d, t.vocab_size, ln_eps=t.ln_eps, **kw)
    self.vision_proj = common.linear(d, e, ("embed", "proj"), **kw)
    self.text_proj = common.linear(d, e, ("embed", "proj"), **kw)
    self.itm_head = common.linear(d, 2, ("embed", None), **kw)
    self.temp = nnx.Param(jnp.asarray(c.temp_init, pdt))
    if head == "pretrain" and c.pem:
      self.pem_head = Mlp(d, 2 * d, c.num_entities, activation="relu", out_axis=None, **kw)
      self.prompter = AlproModel(model_config, head="prompter", rngs=rngs)
    if head == "prompter":
      self.video_prompt_feat = PromptFeatures(jnp.zeros((c.num_entities, e), jnp.float32))
      self.image_prompt_feat = PromptFeatures(jnp.zeros((c.num_entities, e), jnp.float32))
    if head == "qa":
      if c.num_labels <= 0:
        raise ValueError(f"model.num_labels={c.num_labels}: the qa head needs the answer count")
      self.classifier = Mlp(d, 2 * d, c.num_labels, activation="relu", out_axis=None, **kw)

  # -- encoders -----------------------------------------------------------------------------
  def temperature(self) -> jax.Array:
    """Clamped temperature with a straight-through gradient (see module docstring)."""
    temp = self.temp[...].astype(jnp.float32)
    return temp + jax.lax.stop_gradient(jnp.clip(temp, TEMP_MIN, TEMP_MAX) - temp)

  def encode_video(self, video: jax.Array, *, deterministic: bool = True,
                   rngs: nnx.Rngs | None = None) -> jax.Array:
    """[B, T, H, W, C] -> video_embeds [B, 1 + N, D]."""
    return self.video(video, deterministic=deterministic, rngs=rngs)

  def encode_text(self, ids: jax.Array, mask: jax.Array, *, deterministic: bool = True,
                  rngs: nnx.Rngs | None = None) -> jax.Array:
    """Text encoder (BERT layers [0, fusion_layer)) -> text_embeds [B, L, D]."""
    return self.text(ids, mask, 0, self.fusion_layer, deterministic=deterministic, rngs=rngs)

  def fuse(self, text_embeds: jax.Array, text_mask: jax.Array, video_embeds: jax.Array, *,
           deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Layers [fusion_layer, end) on [text ; video] (no new embeddings) -> [B, L + 1 + N, D]."""
    x = jnp.concatenate([text_embeds, video_embeds.astype(text_embeds.dtype)], axis=1)
    mask = jnp.concatenate(
        [text_mask.astype(jnp.int32), jnp.ones(video_embeds.shape[:2], jnp.int32)], axis=1)
    return self.text.run_layers(x, mask, self.fusion_layer, deterministic=deterministic,
                                rngs=rngs)

  def video_feat(self, video_embeds: jax.Array) -> jax.Array:
    return common.l2_normalize(self.vision_proj(video_embeds[:, 0]))

  def text_feat(self, text_embeds: jax.Array) -> jax.Array:
    return common.l2_normalize(self.text_proj(text_embeds[:, 0]))

  # -- heads --------------------------------------------------------------------------------
  def itm_logits(self, fused: jax.Array) -> jax.Array:
    """Video-text matching logits from the text [CLS] of the fusion output (class 1 = match)."""
    return self.itm_head(fused[:, 0]).astype(jnp.float32)

  def mlm_logits(self, fused: jax.Array, text_len: int) -> jax.Array:
    if self.head == "qa":
      raise ValueError("the qa model has no MLM head")
    return self.mlm_head(fused[:, :text_len], self.text.embeddings.word.embedding[...])

  def pem_logits(self, fused: jax.Array, text_len: int, mpm_mask: jax.Array) -> jax.Array:
    """Mean of the fused video patch tokens inside the PEM box (mpm_mask == 0) -> pem_head."""
    if not hasattr(self, "pem_head"):
      raise ValueError("PEM needs model.pem=True and head='pretrain'")
    return self.pem_head(pem_pooled(fused, text_len, mpm_mask)).astype(jnp.float32)

  def qa_logits(self, fused: jax.Array) -> jax.Array:
    return self.classifier(fused[:, 0]).astype(jnp.float32)

  # -- prompter -----------------------------------------------------------------------------
  def prompt_text_features(self, ids: jax.Array, mask: jax.Array,
                           num_templates: int) -> jax.Array:
    """Rows t*E + e of prompt ids -> mean over templates of normalised text features, [E, E_dim].

    Not re-normalised after averaging (spec §5.4).
    """
    feats = self.text_feat(self.encode_text(ids, mask))
    if feats.shape[0] % num_templates:
      raise ValueError(f"{feats.shape[0]} prompts is not a multiple of {num_templates} templates")
    return feats.reshape(num_templates, -1, feats.shape[-1]).mean(axis=0)

  def build_prompt_features(self, video_ids, video_mask, image_ids, image_mask, *,
                            num_templates: int = 12) -> None:
    """Fills video_prompt_feat / image_prompt_feat of a prompter from tokenised entity prompts."""
    if self.head != "prompter":
      raise ValueError(f"build_prompt_features is for head='prompter', not {self.head!r}")
    self.video_prompt_feat[...] = self.prompt_text_features(video_ids, video_mask, num_templates)
    self.image_prompt_feat[...] = self.prompt_text_features(image_ids, image_mask, num_templates)

  def entity_similarity(self, crop_video: jax.Array, prompts: str = "video",
                        is_image: jax.Array | None = None) -> jax.Array:
    """Prompter: normalised crop-video feature @ prompt features^T / temp -> [B, num_entities].

    `prompts` picks one prompt set for the whole batch; `is_image` (bool scalar or [B]), when
    given, picks per row instead: image prompts where True (CC3M images, spec §5.4/§7), video
    prompts elsewhere. Both products are computed and selected with `where` (jit-friendly).
    """
    if prompts not in ("video", "image"):
      raise ValueError(f"prompts={prompts!r}; expected 'video' or 'image'")
    b = crop_video.shape[0]
    if is_image is not None:   # checked before any compute
      flag = jnp.asarray(is_image, bool)
      if flag.ndim > 1 or flag.size not in (1, b):
        raise ValueError(f"is_image has shape {flag.shape}; expected a scalar or [{b}]")
    feat = self.video_feat(self.encode_video(crop_video))
    temp = self.temperature()
    if is_image is None:
      p = self.video_prompt_feat if prompts == "video" else self.image_prompt_feat
      return feat @ p[...].T / temp
    flag = jnp.broadcast_to(flag.reshape(-1), (b,))
    sim_video = feat @ self.video_prompt_feat[...].T / temp
    sim_image = feat @ self.image_prompt_feat[...].T / temp
    return jnp.where(flag[:, None], sim_image, sim_video)


def pem_pooled(fused: jax.Array, text_len: int, mpm_mask: jax.Array) -> jax.Array:
  """fused [B, L+1+N, D], mpm_mask [B, h, w] (1 = outside box) -> mean inside the box, [B, D]."""
  patches = fused[:, text_len + 1:].astype(jnp.float32)
  inside = 1.0 - mpm_mask.reshape(mpm_mask.shape[0], -1).astype(jnp.float32)
  if inside.shape[1] != patches.shape[1]:
    raise ValueError(f"mpm_mask has {inside.shape[1]} patches, video has {patches.shape[1]}")
  return (inside[..., None] * patches).sum(1) / inside.sum(1, keepdims=True)


def build(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> AlproModel:
  with common.kernel_init_scheme(model_config.get("kernel_init", "trunc_normal")):
    return AlproModel(model_config, head=model_config.head, rngs=rngs)

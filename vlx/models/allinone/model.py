"""All-in-one (Wang et al., CVPR 2023): one ViT that reads [text ; frame] per frame, with temporal
token rolling between frames before every block (spec §3).

Each frame row b*T + t is its own sequence "text ⊕ frame tokens"; frames interact only through
`temporal_roll` (before every block, video part only) and the final mean over frames. Sizes come
from the config fields (`model_config(variant)` fills the released Ti/S/B); the module tree is the
converter's contract (/work/briefs/aio_contract.md, README "All-in-one").
"""
from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import additive_mask
from vlx.layers.bert import BertEmbeddings, MlmHead
from vlx.layers.mlp import NormMlp
from vlx.layers.vit import VisionTransformer, temporal_roll

# Released sizes (spec §1): hidden, heads, distilled ViT (S), 'deit' in the ViT factory name.
SIZES = {"Ti": (192, 3, False, True), "S": (384, 6, True, True), "B": (768, 12, False, False)}
_EMBED_INIT = nnx.initializers.normal(stddev=0.02)
# model.eval_patch_order: 'random' = the reference's random patch order per frame in evaluation
# too (reproducible per clip, tasks.eval_patch_perm); 'raster' = identity order.
EVAL_PATCH_ORDERS = ("random", "raster")


def model_config(variant: str = "B") -> ml_collections.ConfigDict:
  """The model block for a released size ('Ti', 'S', 'B') or 'tiny' (tests and demos)."""
  if variant not in (*SIZES, "tiny"):
    raise ValueError(f"All-in-one variant {variant!r}; expected one of {(*SIZES, 'tiny')}")
  d, heads, distilled, deit = SIZES.get(variant, (32, 2, False, False))
  c = ml_collections.ConfigDict(dict(
      family="allinone", variant=variant, dtype="float32", param_dtype="float32", remat=False,
      kernel_init="trunc_normal", img_size=224, patch_size=16, num_frames=3, hidden_size=d,
      num_layers=12, num_heads=heads, mlp_ratio=4.0, distilled=distilled, temporal_embed=True,
      deit=deit, roll_div=8, vocab_size=30522, max_text_len=40, vit_ln_eps=1e-6,
      text_ln_eps=1e-12, head_ln_eps=1e-5, drop_rate=0.1, drop_path_rate=0.1,
      shared_embedding_dim=512, eval_patch_order="random",
      heads=ml_collections.ConfigDict(dict(mlm=True, itm=True, itc=False, num_qa_labels=0,
                                           mc_vqa=False, vcop=False, rank_untied=False))))
  if variant == "tiny":
    c.update(img_size=32, patch_size=8, num_layers=2, vocab_size=128, max_text_len=16,
             shared_embedding_dim=16)
  return c


class VcopHead(nnx.Module):
  """Clip-order prediction (spec §4.4): frame pairs i<j concatenated -> fc7 -> ReLU, all pairs
  concatenated -> dropout 0.5 -> fc8 over the T! orders (itertools.permutations order)."""

  def __init__(self, dim: int, num_frames: int, *, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.pairs = tuple(itertools.combinations(range(num_frames), 2))
    self.fc7 = common.linear(2 * dim, 512, ("embed", "mlp"), **kw)
    self.fc8 = common.linear(512 * len(self.pairs), math.factorial(num_frames), ("mlp", None),
                             **kw)

  def __call__(self, frames: jax.Array, *, deterministic: bool = True,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """frames [B, T, D] (already in the order to classify) -> logits [B, T!]."""
    h = [jax.nn.relu(self.fc7(jnp.concatenate([frames[:, i], frames[:, j]], -1)))
         for i, j in self.pairs]
    h = common.dropout(jnp.concatenate(h, -1), 0.5, deterministic=deterministic, rngs=rngs)
    return self.fc8(h).astype(jnp.float32)


class AllInOne(nnx.Module):
  """The unified single-stream model (reference `AllinoneTransformerSS`) and its heads."""

  def __init__(self, c: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d, h = c.hidden_size, c.heads
    if d % c.num_heads:
      raise ValueError(f"model.hidden_size={d} is not divisible by model.num_heads={c.num_heads}")
    kw = dict(dtype=common.as_dtype(c.dtype), param_dtype=common.as_dtype(c.param_dtype),
              rngs=rngs)
    self.num_frames, self.distilled, self.deit = c.num_frames, c.distilled, c.deit
    self.roll_div, self.remat = c.roll_div, c.remat
    self.eval_patch_order = str(c.get("eval_patch_order", "random"))   # read by tasks.py
    self.text_embeddings = BertEmbeddings(c.vocab_size, d, c.max_text_len, 2,
                                          ln_eps=c.text_ln_eps, dropout=c.drop_rate, **kw)
    self.token_type_embeddings = nnx.Embed(
        2, d, dtype=kw["dtype"], param_dtype=kw["param_dtype"], rngs=rngs,
        embedding_init=nnx.with_partitioning(_EMBED_INIT, (None, "embed")))
    self.transformer = VisionTransformer(
        img_size=c.img_size, patch_size=c.patch_size, width=d, depth=c.num_layers,
        num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, ln_eps=c.vit_ln_eps,
        num_frames=c.num_frames if c.temporal_embed else 0, distilled=c.distilled,
        dropout=c.drop_rate, drop_path_rate=c.drop_path_rate, **kw)
    self.pooler = common.linear(d, d, ("embed", "mlp"), **kw)
    if h.mlm:
      self.mlm_score = MlmHead(d, c.vocab_size, ln_eps=c.text_ln_eps, tied=False, **kw)
    if h.itm:
      self.itm_score = common.linear(d, 2, ("embed", None), **kw)
    if h.rank_untied:
      self.rank_head = common.linear(d, 1, ("embed", None), **kw)
    if h.num_qa_labels > 0:
      self.vqa_classifier = NormMlp(d, d // 2, h.num_qa_labels, ln_eps=c.head_ln_eps,
                                    dropout=0.5, **kw)
    if h.mc_vqa:
      self.mc_vqa_classifier = NormMlp(d, 256, 1, ln_eps=c.head_ln_eps, dropout=0.1, **kw)
    if h.itc:
      self.txt_proj = common.linear(d, c.shared_embedding_dim, ("embed", "proj"), **kw)
      self.vid_proj = common.linear(d, c.shared_embedding_dim, ("embed", "proj"), **kw)
    if h.vcop:
      self.vcop_head = VcopHead(d, c.num_frames, **kw)

  # -- embeddings ---------------------------------------------------------------------------
  def embed_text(self, text_ids: jax.Array, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
    """BERT embeddings (word + position + BERT type row 0, LN eps 1e-12) -> [B, L, D]."""
    return self.text_embeddings(text_ids, deterministic=deterministic, rngs=rngs)

  def embed_video(self, video: jax.Array, patch_perm: jax.Array | None = None, *,
                  deterministic: bool = True, rngs: nnx.Rngs | None = None
                  ) -> tuple[jax.Array, jax.Array]:
    """[B, T, H, W, C] -> (tokens [B*T, l, D], mask [B*T, l]) before the modality type embedding."""
    if video.ndim != 5:
      raise ValueError(f"video must be [B, T, H, W, C], got shape {video.shape}")
    b, t = video.shape[:2]
    x = self.transformer.embed(video.reshape((b * t,) + video.shape[2:]), t, patch_perm,
                               add_temporal=not self.distilled, deterministic=deterministic,
                               rngs=rngs)
    return x, jnp.ones(x.shape[:2], jnp.int32)

  def _type(self, x: jax.Array, row: int) -> jax.Array:
    return x + self.token_type_embeddings.embedding[...][row].astype(x.dtype)

  # -- encoders -----------------------------------------------------------------------------
  def _blocks(self, x, mask, *, roll: tuple[int, int, int] | None, deterministic, rngs,
              record: dict | None = None):
    """Every block on x [rows, N, D]; roll = (text_len, num_frames, fold) rolls x[:, text_len:]."""
    add = additive_mask(mask)
    call = lambda blk, y, r: blk(y, add, deterministic=deterministic, rngs=r)

    def shift(i: int, x: jax.Array) -> jax.Array:   # temporal roll of the video tokens
      n_text, t, fold = roll
      video = x[:, n_text:]
      rolled = temporal_roll(video, t, fold)
      if record is not None:
        record[f"roll_in_{i}"], record[f"roll_out_{i}"] = video, rolled
      return jnp.concatenate([x[:, :n_text], rolled], axis=1)

    def keep(i: int, x: jax.Array) -> None:
      record[f"block_{i}_out"] = x

    x = common.run_blocks(self.transformer.blocks, x, call, remat=self.remat, rngs=rngs,
                          before=None if roll is None else shift,
                          after=None if record is None else keep)
    return self.transformer.norm(x)

  def _video_inputs(self, b, video, patch_perm, video_embeds, video_masks, deterministic, rngs):
    """Video tokens [B*T, l, D] and mask for B texts (from video or precomputed embeddings)."""
    if video_embeds is None:
      if video is None:
        raise ValueError("infer needs `video` or precomputed `video_embeds`")
      video_embeds, video_masks = self.embed_video(video, patch_perm, deterministic=deterministic,
                                                   rngs=rngs)
    if video_masks is None:
      video_masks = jnp.ones(video_embeds.shape[:-1], jnp.int32)
    if video_embeds.ndim == 4:                      # [Bv, T, l, D], Bv in {1, B}
      bv, t = video_embeds.shape[:2]
      if bv not in (1, b):
        raise ValueError(f"video_embeds has {bv} videos for {b} texts (expected 1 or {b})")
      video_embeds = jnp.broadcast_to(video_embeds, (b,) + video_embeds.shape[1:])
      video_masks = jnp.broadcast_to(video_masks, (b,) + video_masks.shape[1:])
      video_embeds = video_embeds.reshape((b * t,) + video_embeds.shape[2:])
      video_masks = video_masks.reshape(b * t, -1)
    if video_embeds.shape[0] % b:
      raise ValueError(f"{video_embeds.shape[0]} frame rows is not a multiple of {b} texts")
    return video_embeds, video_masks, video_embeds.shape[0] // b

  def infer(self, text_ids: jax.Array, text_mask: jax.Array, video: jax.Array | None = None, *,
            patch_perm: jax.Array | None = None, video_embeds: jax.Array | None = None,
            video_masks: jax.Array | None = None, deterministic: bool = True,
            rngs: nnx.Rngs | None = None, intermediates: bool = False) -> dict[str, jax.Array]:
    """The joint pass (spec §3): per frame [text ; frame], roll, blocks, LN, frame mean, pooler."""
    b, n_text = text_ids.shape
    v, vmask, t = self._video_inputs(b, video, patch_perm, video_embeds, video_masks,
                                     deterministic, rngs)
    text = self._type(self.embed_text(text_ids, deterministic=deterministic, rngs=rngs), 0)
    text = jnp.repeat(text, t, axis=0)                               # row b*T + t
    tmask = jnp.repeat(text_mask.astype(jnp.int32), t, axis=0)
    x = jnp.concatenate([text, self._type(v, 1).astype(text.dtype)], axis=1)
    mask = jnp.concatenate([tmask, vmask.astype(jnp.int32)], axis=1)
    record = {} if intermediates else None
    fold = v.shape[1] // self.roll_div
    x = self._blocks(x, mask, roll=(n_text, t, fold), deterministic=deterministic, rngs=rngs,
                     record=record)
    per_frame = x.reshape(b, t, x.shape[1], x.shape[2])
    seq = jnp.mean(per_frame.astype(jnp.float32), axis=1).astype(x.dtype)
    out = dict(text_feats=seq[:, :n_text], image_feats=seq[:, n_text:],
               cls_feats=jnp.tanh(self.pooler(seq[:, 0])), raw_cls_feats=seq[:, 0],
               final_norm_per_frame=per_frame, text_masks=text_mask,
               image_masks=vmask.reshape(b, t, -1)[:, 0])
    if record is not None:
      out.update(record)
    return out

  def infer_text_only(self, text_ids: jax.Array, text_mask: jax.Array, *,
                      deterministic: bool = True, rngs: nnx.Rngs | None = None) -> dict:
    """Text alone through the blocks, no roll (spec §3.8); txt_proj on every token if present.

    The reference repeats the text T times and averages; the copies are identical, so one pass.
    """
    x = self._type(self.embed_text(text_ids, deterministic=deterministic, rngs=rngs), 0)
    x = self._blocks(x, text_mask, roll=None, deterministic=deterministic, rngs=rngs)
    feats = self.txt_proj(x) if hasattr(self, "txt_proj") else x
    return dict(text_feats=feats, text_hidden=x)

  def infer_video_only(self, video: jax.Array, *, patch_perm: jax.Array | None = None,
                       deterministic: bool = True, rngs: nnx.Rngs | None = None) -> dict:
    """Video alone (all-ones mask, no roll), final LN, mean over frames; vid_proj if present."""
    b, t = video.shape[:2]
    v, vmask = self.embed_video(video, patch_perm, deterministic=deterministic, rngs=rngs)
    x = self._blocks(self._type(v, 1), vmask, roll=None, deterministic=deterministic, rngs=rngs)
    x = jnp.mean(x.reshape((b, t) + x.shape[1:]).astype(jnp.float32), axis=1).astype(x.dtype)
    feats = self.vid_proj(x) if hasattr(self, "vid_proj") else x
    return dict(image_feats=feats, image_hidden=x)

  # -- heads --------------------------------------------------------------------------------
  def rank_output(self, cls_feats: jax.Array) -> jax.Array:
    """[B, 1] matching score: the ITM 'match' row (the reference's rank_output shares storage
    with itm_score.fc row 1), or an own head for files where they differ."""
    if hasattr(self, "rank_head"):
      return self.rank_head(cls_feats).astype(jnp.float32)
    if not hasattr(self, "itm_score"):
      raise ValueError("rank_output needs the ITM head (model.heads.itm) or heads.rank_untied")
    kernel = self.itm_score.kernel[...][:, 1:]
    bias = self.itm_score.bias[...][1:]
    return (cls_feats @ kernel.astype(cls_feats.dtype) + bias.astype(cls_feats.dtype)).astype(
        jnp.float32)


def check_variant(c: ml_collections.ConfigDict) -> None:
  """A released variant name must come with its sizes (so `--config.model.variant=S` alone, which
  changes no size field, is an error instead of a silently different model)."""
  if c.get("variant") in SIZES:
    d, heads, distilled, _ = SIZES[c.variant]
    got = (c.hidden_size, c.num_heads, bool(c.distilled))
    if got != (d, heads, distilled):
      raise ValueError(
          f"model.variant={c.variant!r} means hidden_size={d}, num_heads={heads}, "
          f"distilled={distilled}, but the config has {got}: build the block with "
          f"model_config({c.variant!r}), or set model.variant='custom' for other sizes")


def check_eval_patch_order(c: ml_collections.ConfigDict) -> None:
  order = c.get("eval_patch_order", "random")
  if order not in EVAL_PATCH_ORDERS:
    raise ValueError(f"config.model.eval_patch_order={order!r}; expected one of "
                     f"{EVAL_PATCH_ORDERS} ('random' = the reference's per-frame random patch "
                     "order, 'raster' = identity order)")


def build(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> AllInOne:
  check_variant(model_config)
  check_eval_patch_order(model_config)
  with common.kernel_init_scheme(model_config.get("kernel_init", "trunc_normal")):
    return AllInOne(model_config, rngs=rngs)

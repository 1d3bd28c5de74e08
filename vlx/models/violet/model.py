"""VIOLET (Fu et al. 2021): Video Swin tokens + BERT text embeddings through one cross-modal BERT
encoder over [video | text], read out at the text [CLS] (spec §2–§6).

Module tree (the converter's contract, vlx/models/violet/convert.py):
  video/...                  VideoSwin backbone (vlx/layers/video_swin.py)
  video_tokens/{cls,pos,frame,norm}   frame-CLS, per-frame position table (num_pos rows), frame
                             index table (num_frames_table rows), LayerNorm eps 1e-5 (spec §3)
  text/...                   BertEmbeddings (eps 1e-12), no text-only transformer (spec §4)
  encoder/N/...              post-LN BertLayers over the joint sequence
  fc/{fc1,fc2}               Dropout -> Linear(D,2D) -> ReLU -> Linear(2D,k): VTM / retrieval /
                             QA-MC (k=1) or QA-OE (k=num_answers)
  mlm_head/...               untied BERT MLM head (pretrain only, spec §5.1)
  mvm_head/{fc1,fc2}         like fc with mvm_vocab outputs (pretrain only)
  dvae/...                   optional frozen DALL-E encoder for on-the-fly MVM targets
`kind` 'video_swin' builds a module with only `video` (the Kinetics init file), 'dalle_encoder'
the bare DalleEncoder (OpenAI's encoder.pkl), so the converter can build both.
"""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vlx.layers import common
from vlx.layers.attention import additive_mask
from vlx.layers.bert import BertEmbeddings, BertLayer, MlmHead
from vlx.layers.mlp import Mlp

HEADS = ("pretrain", "retrieval", "qamc", "qaoe")
KINDS = ("violet", "video_swin", "dalle_encoder")
_TABLE_INIT = nnx.initializers.normal(stddev=0.02)


def model_config(preset: str = "") -> ml_collections.ConfigDict:
  """The config.model block: '' = the released sizes (spec §2.1, §4, §5.1), 'demo' (CPU demos),
  'tiny' (tests). The converter starts from '' and reads every size from the tensor shapes."""
  if preset not in ("", "demo", "tiny"):
    raise ValueError(f"VIOLET model preset {preset!r}; expected '', 'demo' or 'tiny'")
  m = ml_collections.ConfigDict(dict(
      family="violet", kind="violet", head="pretrain", dtype="float32", param_dtype="float32",
      remat=False, kernel_init="trunc_normal", hidden=768,
      video=ml_collections.ConfigDict(dict(
          embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=(8, 7, 7),
          patch_size=(2, 4, 4), in_chans=3, mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.2,
          ln_eps=1e-5)),
      video_ln_eps=1e-5, num_pos=197, num_frames_table=6,
      text=ml_collections.ConfigDict(dict(
          vocab_size=30522, num_layers=12, num_heads=12, intermediate_size=3072,
          max_position_embeddings=512, type_vocab_size=2, ln_eps=1e-12, dropout=0.1,
          attn_dropout=0.1)),
      head_dropout=0.1, num_answers=0, mvm_vocab=8192,
      dvae=ml_collections.ConfigDict(dict(
          enabled=False, converted="", n_hid=256, n_blk_per_group=2, input_channels=3,
          vocab_size=8192, group_count=4)),
  ))
  if preset == "demo":
    m.update(hidden=128, mvm_vocab=512, kernel_init="lecun")
    m.video.update(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                   window_size=(8, 3, 3), drop_path_rate=0.0)
    m.text.update(vocab_size=128, num_layers=2, num_heads=4, intermediate_size=256,
                  max_position_embeddings=32, dropout=0.0, attn_dropout=0.0)
    m.dvae.update(n_hid=16, vocab_size=512)
  elif preset == "tiny":
    m.update(hidden=32, mvm_vocab=64)
    m.video.update(embed_dim=4, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                   window_size=(8, 3, 3), drop_path_rate=0.0)
    m.text.update(vocab_size=128, num_layers=2, num_heads=2, intermediate_size=64,
                  max_position_embeddings=32)
    m.dvae.update(n_hid=16, vocab_size=64)
  return m


def _kw(c: ml_collections.ConfigDict, rngs: nnx.Rngs) -> dict:
  return dict(dtype=common.as_dtype(c.dtype), param_dtype=common.as_dtype(c.param_dtype),
              rngs=rngs)


def video_backbone(c: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """The VideoSwin of `c.video` (imported here: vlx.layers.video_swin)."""
  video_swin = importlib.import_module("vlx.layers.video_swin")
  v = c.video
  return video_swin.VideoSwin(
      embed_dim=v.embed_dim, depths=tuple(v.depths), num_heads=tuple(v.num_heads),
      window_size=tuple(v.window_size), patch_size=tuple(v.patch_size), in_chans=v.in_chans,
      mlp_ratio=v.mlp_ratio, qkv_bias=v.qkv_bias, drop_path_rate=v.drop_path_rate,
      ln_eps=v.ln_eps, remat=c.remat, **_kw(c, rngs))


def dalle_encoder(c: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """The DALL-E dVAE encoder of `c.dvae` (vlx.layers.dvae)."""
  dvae = importlib.import_module("vlx.layers.dvae")
  d = c.dvae
  return dvae.DalleEncoder(n_hid=d.n_hid, n_blk_per_group=d.n_blk_per_group,
                           input_channels=d.input_channels, vocab_size=d.vocab_size,
                           group_count=d.group_count, **_kw(c, rngs))


class VideoTokens(nnx.Module):
  """Swin features [B,T,h,w,D] -> [B, T*(1+h*w), D]: per frame [frame-CLS, patches row-major]
  + pos[:1+hw] (shared by frames) + frame[t] (shared by a frame's tokens), then LayerNorm."""

  def __init__(self, hidden: int, num_pos: int, num_frames: int, *, ln_eps: float, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    pd = common.as_dtype(param_dtype)
    self.cls = nnx.Param(_TABLE_INIT(rngs.params(), (hidden,), pd))
    self.pos = nnx.Param(_TABLE_INIT(rngs.params(), (num_pos, hidden), pd))
    self.frame = nnx.Param(_TABLE_INIT(rngs.params(), (num_frames, hidden), pd))
    self.norm = common.layer_norm(hidden, ln_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, f: jax.Array) -> jax.Array:
    b, t, h, w, d = f.shape
    n = 1 + h * w
    if n > self.pos.shape[0] or t > self.frame.shape[0]:
      raise ValueError(f"video of {t} frames x {h}x{w} tokens exceeds the embedding tables "
                       f"({self.frame.shape[0]} frames, {self.pos.shape[0] - 1} patches)")
    cls = jnp.broadcast_to(self.cls[...].astype(f.dtype), (b, t, 1, d))
    x = jnp.concatenate([cls, f.reshape(b, t, h * w, d)], axis=2)
    x = x + self.pos[...][:n].astype(f.dtype)[None, None] + self.frame[...][:t].astype(
        f.dtype)[None, :, None]
    return self.norm(x).reshape(b, t * n, d)


class Violet(nnx.Module):
  """The VIOLET trunk and the heads of `head` (spec §5.1, §6)."""

  def __init__(self, c: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    if c.head not in HEADS:
      raise ValueError(f"config.model.head={c.head!r}; expected one of {HEADS}")
    d, t = c.hidden, c.text
    kw = _kw(c, rngs)
    self.video = video_backbone(c, rngs=rngs)
    if getattr(self.video, "out_dim", d) != d:
      raise ValueError(f"config.model.hidden={d} but the Video Swin gives "
                       f"{self.video.out_dim} features (embed_dim * 2**(stages-1)); there is no "
                       "projection between them (spec §0.4)")
    self.video_tokens = VideoTokens(d, c.num_pos, c.num_frames_table, ln_eps=c.video_ln_eps,
                                    **kw)
    self.text = BertEmbeddings(t.vocab_size, d, t.max_position_embeddings, t.type_vocab_size,
                               ln_eps=t.ln_eps, dropout=t.dropout, **kw)
    self.encoder = nnx.List([
        BertLayer(d, t.num_heads, t.intermediate_size, ln_eps=t.ln_eps, dropout=t.dropout,
                  attn_dropout=t.attn_dropout, **kw) for _ in range(t.num_layers)])
    k = c.num_answers if c.head == "qaoe" else 1
    if c.head == "qaoe" and k < 1:
      raise ValueError("config.model.head='qaoe' needs config.model.num_answers >= 1")
    self.fc = Mlp(d, 2 * d, k, activation="relu", out_axis=None, **kw)
    if c.head == "pretrain":
      self.mlm_head = MlmHead(d, t.vocab_size, ln_eps=t.ln_eps, tied=False, **kw)
      self.mvm_head = Mlp(d, 2 * d, c.mvm_vocab, activation="relu", out_axis=None, **kw)
    if c.dvae.enabled:
      self.dvae = dalle_encoder(c, rngs=rngs)
    self.head_dropout = c.head_dropout
    # rows per pairing group of the 'ret' objective (downstream.py; 0 = the whole batch)
    self.ret_group = int(c.get("ret_group", 0) or 0)
    self.remat = c.remat

  # -- encoders -----------------------------------------------------------------------------
  def encode_video(self, video: jax.Array, *, deterministic: bool = True,
                   rngs: nnx.Rngs | None = None) -> jax.Array:
    """Normalised video [B,T,H,W,3] -> feat_img [B, T*(1+h*w), D] (EncImg, spec §3)."""
    if video.ndim != 5:
      raise ValueError(f"video must be [B, T, H, W, 3], got shape {video.shape}")
    return self.video_tokens(self.video(video, deterministic=deterministic, rngs=rngs))

  def embed_text(self, ids: jax.Array, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
    """Token ids [B, X] -> BERT embeddings [B, X, D] (token type 0, positions 0..X-1)."""
    return self.text(ids, deterministic=deterministic, rngs=rngs)

  def cross(self, feat_img: jax.Array, mask_img: jax.Array, feat_txt: jax.Array,
            mask_txt: jax.Array, *, deterministic: bool = True,
            rngs: nnx.Rngs | None = None) -> jax.Array:
    """The cross-modal encoder on [video | text] -> [B, Lv + X, D] (go_cross, spec §4)."""
    x, add = self._joint_inputs(feat_img, mask_img, feat_txt, mask_txt)
    call = lambda layer, h, r: layer(h, add, deterministic=deterministic, rngs=r)
    return common.run_blocks(list(self.encoder), x, call, remat=self.remat, rngs=rngs)

  def _joint_inputs(self, feat_img, mask_img, feat_txt, mask_txt):
    x = jnp.concatenate([feat_img, feat_txt.astype(feat_img.dtype)], axis=1)
    mask = jnp.concatenate([mask_img.astype(jnp.int32), mask_txt.astype(jnp.int32)], axis=1)
    return x, additive_mask(mask)

  def attention_received(self, feat_img: jax.Array, mask_img: jax.Array, feat_txt: jax.Array,
                         mask_txt: jax.Array, *, deterministic: bool = True,
                         rngs: nnx.Rngs | None = None) -> jax.Array:
    """Spec §5.4 get_att: per layer the head-mean attention probabilities [B,L,L], summed over
    layers and query positions -> [B, L] attention received by each key. With
    deterministic=False the probabilities are the dropped-out ones (the reference calls get_att
    with the model in training mode; Hugging Face returns post-dropout attentions)."""
    x, add = self._joint_inputs(feat_img, mask_img, feat_txt, mask_txt)
    total = jnp.zeros(x.shape[:2], jnp.float32)
    for layer in self.encoder:
      x, probs = layer(x, add, deterministic=deterministic, rngs=rngs, return_probs=True)
      total = total + jnp.sum(jnp.mean(probs.astype(jnp.float32), axis=1), axis=1)
    return total

  # -- heads --------------------------------------------------------------------------------
  def _head(self, head: Mlp, x: jax.Array, deterministic: bool, rngs) -> jax.Array:
    x = common.dropout(x, self.head_dropout, deterministic=deterministic, rngs=rngs)
    return head(x).astype(jnp.float32)

  def score(self, out: jax.Array, num_video_tokens: int, *, deterministic: bool = True,
            rngs: nnx.Rngs | None = None) -> jax.Array:
    """fc(out[:, Lv]) at the text [CLS] (spec §0.2) -> float32 [B, k]."""
    return self._head(self.fc, out[:, num_video_tokens], deterministic, rngs)

  def mlm_logits(self, x: jax.Array) -> jax.Array:
    """Text positions [B, X, D] -> float32 [B, X, vocab] (untied decoder)."""
    return self.mlm_head(x)

  def mvm_logits(self, x: jax.Array, *, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None) -> jax.Array:
    """Video positions [B, Lv, D] -> float32 [B, Lv, mvm_vocab]."""
    return self._head(self.mvm_head, x, deterministic, rngs)

  def vtm_logits(self, feat_img: jax.Array, mask_img: jax.Array, feat_txt: jax.Array,
                 mask_txt: jax.Array, neg: jax.Array, *, temperature: float = 0.05,
                 deterministic: bool = True, rngs: nnx.Rngs | None = None) -> jax.Array:
    """VTM (spec §5.2): row i = (video i, text i) then (video i, text neg[i, k]); [B, O] / 0.05."""
    b = feat_img.shape[0]
    cols = jnp.concatenate([jnp.arange(b)[:, None], neg.astype(jnp.int32)], axis=1)   # [B, O]
    o = cols.shape[1]
    rows = jnp.repeat(jnp.arange(b), o)
    idx = cols.reshape(-1)
    out = self.cross(feat_img[rows], mask_img[rows], feat_txt[idx], mask_txt[idx],
                     deterministic=deterministic, rngs=rngs)
    s = self.score(out, feat_img.shape[1], deterministic=deterministic, rngs=rngs)
    return s[:, 0].reshape(b, o) / temperature


class VideoSwinOnly(nnx.Module):
  """Only the backbone, at Violet's path `video/` (the converted Kinetics Video Swin initialises
  a Violet through config.init.from_converted)."""

  def __init__(self, c: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    self.video = video_backbone(c, rngs=rngs)

  def __call__(self, video: jax.Array, **kw) -> jax.Array:
    return self.video(video, **kw)


def build(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
  """Violet, or the module of `model_config.kind` ('video_swin', 'dalle_encoder')."""
  kind = model_config.get("kind", "violet")
  if kind not in KINDS:
    raise ValueError(f"config.model.kind={kind!r}; expected one of {KINDS}")
  with common.kernel_init_scheme(model_config.get("kernel_init", "trunc_normal")):
    if kind == "video_swin":
      return VideoSwinOnly(model_config, rngs=rngs)
    if kind == "dalle_encoder":
      return dalle_encoder(model_config, rngs=rngs)
    return Violet(model_config, rngs=rngs)

"""Everything-at-Once (tri-modal fusion transformer) in Flax NNX (spec: shared/reference/eao).

Inputs are pre-computed features: text [B, Lt, Dt] (word vectors), video [B, Lv, Dv] (per-second
features), audio a log-mel spectrogram [B, mel, T] turned into tokens by the DAVEnet CNN inside the
model; each with a 0/1 mask. Per modality: gated token projection -> LayerNorm -> (empty input:
token 0 := the learned masking token). ONE fusion transformer runs on every single modality and on
every pair (tokens concatenated text, video, audio); each modality's output tokens are mean-pooled
with its own mask and projected by its gated head into the joint space. Pair embeddings average the
L2-normalised projections of the two modalities from the joint pass.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from vlx.layers import common
from vlx.layers.davenet import DAVEnet
from vlx.layers.vit import ViTBlock
from vlx.models.eao import inputs

MODALITIES = ("text", "video", "audio")
SHORT = {"text": "t", "video": "v", "audio": "a"}
POOLINGS = ("none", "clip", "nearest", "max_pool", "avg_pool")
_NEG = -1e30   # masked keys: exp underflows to exactly 0 (the reference fills -inf)


def model_config(preset: str = "") -> ml_collections.ConfigDict:
  """'' = the released tva model (spec §3); 'tiny' = the parity fixture's sizes."""
  c = ml_collections.ConfigDict(dict(
      family="eao", text_dim=300, video_dim=4096, hidden=4096, depth=1, num_heads=64,
      mlp_ratio=1.0, ln_eps=1e-6, proj_dim=6144, token_projection="gated", projection="gated",
      individual_projections=True, tv_only=False, cross_modal=True,
      audio_max_tokens=0, audio_pooling="none",
      # frozen text front end of token-id batches (vlx/models/eao/inputs.py): 'features' (none:
      # float text in the batch), 'word_vectors' (table [word_vocab_size + 1, text_dim]) or
      # 'clip' (a CLIP text tower of sizes `clip`, per-word features of the first clip_max_words)
      text_input="features", word_vocab_size=0, clip_max_words=20,
      random_word_vectors=False,   # True: keep the random table (demos; no init.word_vectors)
      # training with DAVEnet's BatchNorm on batch statistics (pre-training); False = running
      # statistics always (the reference's fine-tuning, use_eval_mode_always)
      bn_train=True,
      clip=dict(embed_dim=512, context_length=77, vocab_size=49408, text_width=512,
                text_layers=12, text_heads=8, text_mlp_dim=0, activation="quick_gelu"),
      davenet=dict(feat_dim=40, layers=(2, 2, 1, 1, 1, 1),
                   widths=(128, 128, 256, 512, 1024, 2048, 4096), kernel=9),
      dtype="float32"))
  if preset == "tiny":
    c.update(text_dim=32, video_dim=48, hidden=64, depth=2, num_heads=4, proj_dim=96)
    c.davenet.widths = (16, 16, 24, 32, 48, 64, 80)
  elif preset in ("s3d", "clip"):
    c.video_dim = 1024 if preset == "s3d" else 512
    if preset == "clip":
      c.text_dim = 512
  elif preset == "tv_only":
    c.tv_only = True
  elif preset:
    raise ValueError(f"unknown eao model preset {preset!r}; expected '', 'tiny', 's3d', 'clip' "
                     "or 'tv_only'")
  return c


def n(x: jax.Array) -> jax.Array:
  """x / max(||x||, 1e-8) (the reference's normalize_embeddings)."""
  return common.l2_normalize(x, 1e-8)


class GatedEmbeddingUnit(nnx.Module):
  """y = fc(x); y * sigmoid(cg_fc(y)) (no output normalisation); any leading axes.
  `in_axis` / `out_axis`: logical names of the input / output widths (raw feature widths such as
  300 stay unnamed, i.e. replicated)."""

  def __init__(self, din: int, dout: int, *, in_axis: str | None, out_axis: str | None,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc = common.linear(din, dout, (in_axis, out_axis), **kw)
    self.cg_fc = common.linear(dout, dout, (None, out_axis), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.fc(x)
    return y * jax.nn.sigmoid(self.cg_fc(y))


class FusionTransformer(nnx.Module):
  """Pre-LN blocks with key-padding masks and the masking token for empty inputs (the reference's
  final `norm` is never applied, so there is none)."""

  def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float, ln_eps: float, *,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    init = nnx.initializers.truncated_normal(stddev=0.02)
    self.masking_token = nnx.Param(init(rngs.params(), (dim,), common.as_dtype(param_dtype)))
    self.blocks = nnx.List([ViTBlock(dim, num_heads, mlp_ratio, ln_eps=ln_eps, **kw)
                            for _ in range(depth)])

  def __call__(self, parts: Mapping[str, tuple[jax.Array, jax.Array]], *,
               deterministic: bool = True, rngs: nnx.Rngs | None = None
               ) -> dict[str, dict[str, jax.Array]]:
    """parts {modality: (tokens [B, L, D], mask [B, L])} -> {modality: {'tokens', 'embed'}};
    sequences concatenated in the fixed order text, video, audio."""
    names = [m for m in MODALITIES if m in parts]
    x = jnp.concatenate([parts[m][0] for m in names], axis=1)
    mask = jnp.concatenate([parts[m][1] for m in names], axis=1)
    add = jnp.where(mask > 0, 0.0, _NEG).astype(jnp.float32)[:, None, None, :]
    for blk in self.blocks:
      x = blk(x, add, deterministic=deterministic, rngs=rngs)
    out, start = {}, 0
    for m in names:
      tok, msk = parts[m]
      sl = x[:, start:start + tok.shape[1]]
      start += tok.shape[1]
      w = msk.astype(jnp.float32)[..., None]
      out[m] = dict(tokens=sl, embed=jnp.sum(sl * w, axis=1) / jnp.sum(w, axis=1))
    return out


def pool_audio_tokens(tokens: jax.Array, mask: jax.Array, n_valid: jax.Array, k: int,
                      strategy: str) -> tuple[jax.Array, jax.Array]:
  """Long-input audio pooling (spec §2.6) of DAVEnet tokens [B, T', C] to k tokens, per sample
  over its first `n_valid` tokens; n_valid <= k (or 'clip') keeps the first k; mask -> mask[:, :k].
  Identity when T' <= k or strategy 'none'."""
  if strategy not in POOLINGS:
    raise ValueError(f"audio_pooling={strategy!r}; expected one of {POOLINGS}")
  t = tokens.shape[1]
  if strategy == "none" or k <= 0 or t <= k:
    return tokens, mask
  clip = tokens[:, :k]
  if strategy == "clip":
    return clip, mask[:, :k]
  nv = jnp.minimum(n_valid.astype(jnp.int32), t)[:, None]         # [B, 1]: tokens[:n]
  i = jnp.arange(k)[None, :]                                       # [1, k]
  if strategy == "nearest":
    idx = (i * nv) // k
    pooled = jnp.take_along_axis(tokens, idx[..., None], axis=1)
  else:
    lo, hi = (i * nv) // k, -((-(i + 1) * nv) // k)                # adaptive pool bins
    j = jnp.arange(t)[None, None, :]
    member = (j >= lo[..., None]) & (j < hi[..., None])            # [B, k, T']
    if strategy == "max_pool":
      pooled = jnp.max(jnp.where(member[..., None], tokens[:, None], -jnp.inf), axis=2)
    else:
      w = member.astype(tokens.dtype)
      pooled = jnp.einsum("bkt,btc->bkc", w, tokens) / jnp.sum(w, axis=2, keepdims=True)
  return jnp.where((nv > k)[..., None], pooled, clip), mask[:, :k]


class EverythingAtOnce(nnx.Module):
  """The EAO model; `__call__` returns every embedding of the reference forward."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    for field, ok in (("token_projection", ("gated",)), ("projection", ("gated",))):
      if cfg[field] not in ok:
        raise ValueError(f"eao model config {field}={cfg[field]!r}: only 'gated' (the released "
                         "models) is implemented")
    self.individual_projections = bool(cfg.individual_projections)
    self.tv_only, self.cross_modal = bool(cfg.tv_only), bool(cfg.cross_modal)
    self.audio_max_tokens, self.audio_pooling = int(cfg.audio_max_tokens), str(cfg.audio_pooling)
    if self.audio_pooling not in POOLINGS:
      raise ValueError(f"eao model config audio_pooling={self.audio_pooling!r}; expected one of "
                       f"{POOLINGS}")
    d, dt = cfg.hidden, cfg.get("dtype")
    kw = dict(dtype=dt, rngs=rngs)
    dv = cfg.davenet
    self.fusion = FusionTransformer(d, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.ln_eps, **kw)
    self.davenet = DAVEnet(feat_dim=dv.feat_dim, layers=tuple(dv.layers),
                           widths=tuple(dv.widths), kernel=dv.kernel, **kw)
    dims = {"text": cfg.text_dim, "video": cfg.video_dim, "audio": dv.widths[-1]}
    self.text_input = str(cfg.get("text_input", "features"))
    self.bn_train = bool(cfg.get("bn_train", True))
    self.clip_max_words = int(cfg.get("clip_max_words", 20))
    self.word_vectors, self.clip_text = inputs.text_front_end(cfg, rngs=rngs)
    for m in MODALITIES:
      setattr(self, f"{m}_token_proj",
              GatedEmbeddingUnit(dims[m], d, in_axis=None, out_axis="embed", **kw))
      setattr(self, f"{m}_norm_layer", common.layer_norm(d, cfg.ln_eps, dtype=dt, rngs=rngs))
    head = dict(in_axis="embed", out_axis="proj", **kw)
    if cfg.individual_projections:
      for m in MODALITIES:
        setattr(self, f"{m}_proj", GatedEmbeddingUnit(d, cfg.proj_dim, **head))
    else:
      self.proj = GatedEmbeddingUnit(d, cfg.proj_dim, **head)

  def head(self, modality: str) -> GatedEmbeddingUnit:
    return getattr(self, f"{modality}_proj") if self.individual_projections else self.proj

  def _fix_empty(self, tokens: jax.Array, mask: jax.Array):
    """(tokens, mask, nonempty): empty samples get the masking token at position 0, mask[0]=1."""
    nonempty = jnp.sum(mask, axis=-1) != 0
    tok0 = jnp.where(nonempty[:, None], tokens[:, 0],
                     self.fusion.masking_token[...].astype(tokens.dtype))
    tokens = tokens.at[:, 0].set(tok0)
    mask = mask.at[:, 0].set(jnp.where(nonempty, mask[:, 0], 1))
    return tokens, mask, nonempty

  def audio_features(self, audio: jax.Array, audio_mask: jax.Array, nframes: jax.Array | None,
                     *, train: bool = False, max_tokens: int | None = None,
                     pooling: str | None = None) -> dict[str, jax.Array]:
    """DAVEnet tokens [B, T', C], the token mask (max-pool of the frame mask over each token's
    frames), and the long-input pooling of spec §2.6."""
    feats = self.davenet(audio, train=train)
    t = feats.shape[1]
    lm = audio_mask.shape[1]
    coef = -(-lm // t)
    tmask = jnp.max(audio_mask[:, :(lm // coef) * coef].reshape(audio_mask.shape[0], -1, coef),
                    axis=-1)
    k = self.audio_max_tokens if max_tokens is None else max_tokens
    strategy = self.audio_pooling if pooling is None else pooling
    if nframes is None:
      nframes = jnp.sum(audio_mask, axis=-1)
    n_valid = jnp.trunc(nframes.astype(jnp.float32) / coef).astype(jnp.int32)
    pooled, pmask = pool_audio_tokens(feats, tmask, n_valid, k, strategy)
    return dict(davenet_features=feats, features=pooled, mask=pmask)

  def tokens(self, batch: Mapping[str, jax.Array], *, train: bool = False,
             audio_max_tokens: int | None = None, audio_pooling: str | None = None
             ) -> dict[str, jax.Array]:
    """Per present modality: `<m>_tokens`, `<m>_attention_mask` (after the empty-input fix),
    `<m>_nonempty_input_mask`; plus `audio_davenet_features`. The batch is not modified."""
    out: dict[str, jax.Array] = {}
    for m in MODALITIES:
      if m not in batch or (self.tv_only and m == "audio"):
        continue
      x, mask = batch[m], batch[f"{m}_mask"].astype(jnp.float32)
      if m == "audio":
        a = self.audio_features(x, mask, batch.get("audio_STFT_nframes"), train=train,
                                max_tokens=audio_max_tokens, pooling=audio_pooling)
        out["audio_davenet_features"] = a["davenet_features"]
        x, mask = a["features"], a["mask"]
      tok = getattr(self, f"{m}_norm_layer")(getattr(self, f"{m}_token_proj")(x))
      tok, mask, nonempty = self._fix_empty(tok, mask)
      out[f"{m}_tokens"], out[f"{m}_attention_mask"] = tok, mask
      out[f"{m}_nonempty_input_mask"] = nonempty
    return out

  def __call__(self, batch: Mapping[str, jax.Array], *, force_cross_modal: bool = False,
               train: bool = False, deterministic: bool = True, rngs: nnx.Rngs | None = None,
               audio_max_tokens: int | None = None, audio_pooling: str | None = None,
               return_intermediates: bool = False) -> dict[str, Any]:
    """Embeddings `<m>_embed` (unnormalised heads of the single passes), pair `tv/ta/va_embed`
    (cross_modal or force_cross_modal), late-fusion `t+v/t+a/v+a_embed` (force_cross_modal), the
    nonempty masks; with `return_intermediates` also the token sequences and every fusion output
    as `fusion_<tag>_<m>_{tokens,embed}`."""
    tk = self.tokens(batch, train=train, audio_max_tokens=audio_max_tokens,
                     audio_pooling=audio_pooling)
    present = [m for m in MODALITIES if f"{m}_tokens" in tk]
    part = {m: (tk[f"{m}_tokens"], tk[f"{m}_attention_mask"]) for m in present}
    fkw = dict(deterministic=deterministic, rngs=rngs)
    out: dict[str, Any] = dict(tk) if return_intermediates else {
        k: v for k, v in tk.items() if k.endswith("_nonempty_input_mask")}

    def record(tag, res):
      if return_intermediates:
        for m, r in res.items():
          out[f"fusion_{tag}_{m}_tokens"], out[f"fusion_{tag}_{m}_embed"] = r["tokens"], r["embed"]

    for m in present:
      res = self.fusion({m: part[m]}, **fkw)
      record(SHORT[m], res)
      out[f"{m}_embed"] = self.head(m)(res[m]["embed"])
    if self.cross_modal or force_cross_modal:
      for i, a in enumerate(present):
        for b in present[i + 1:]:
          tag = SHORT[a] + SHORT[b]
          res = self.fusion({a: part[a], b: part[b]}, **fkw)
          record(tag, res)
          out[f"{tag}_embed"] = (n(self.head(a)(res[a]["embed"]))
                                 + n(self.head(b)(res[b]["embed"]))) / 2
    if force_cross_modal:
      for i, a in enumerate(present):
        for b in present[i + 1:]:
          out[f"{SHORT[a]}+{SHORT[b]}_embed"] = (n(out[f"{a}_embed"]) + n(out[f"{b}_embed"])) / 2
    return out


def build(model_cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> EverythingAtOnce:
  return EverythingAtOnce(model_cfg, rngs=rngs)

"""VIMPAC token-video transformer in Flax NNX (spec: shared/reference/vimpac/spec.md §2, §3, §5).

Input: int codes [B, L, H, W] (dVAE ids; PAD = 8193, [MASK] = 8196). The backbone embeds them, adds
factorised positional tables and runs `layers` residual blocks. A block holds sequential attention
stages (the layout string split on ','), each running parallel axis patterns (split on '|') whose
outputs are concatenated before one shared dense. Every axis attention prepends a copy of the CLS
vector to every row along the attended axis and returns the mean of the CLS outputs over all rows
(spec §2.2). Heads: the tied mask-prediction layer, the contrastive MLP (BatchNorm) and the action
classifier.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlx.layers import common

PAD_TOKEN_ID = 8193
MASK_TOKEN_ID = 8196
EXTRA_ROWS = 5            # embedding rows = vocab_size + 5
LN_EPS = 1e-12
BN_EPS = 1e-5
NCE_OUTPUT_DIM = 256
AXES = ("T", "H", "W")
POS_EMBS = ("hw_separation", "temporal_separation", "default")
_SWAP = {"T": (1, 3), "H": (2, 3), "W": None}   # the reference's transposes (T -> B, W, H, L)


def model_config(preset: str = "") -> ml_collections.ConfigDict:
  """'' / 'small' = the released small model; 'large' = large (frame 128); 'large_frame256';
  'tiny' = the parity fixture's sizes."""
  c = ml_collections.ConfigDict(dict(
      family="vimpac", vocab_size=8192, hidden=512, layers=6, layout="T,H|W",
      pos_emb="hw_separation", pre_activation=False, halve_att=False, halve_mlp=False,
      clip_len=5, frame_size=128, num_heads=0,   # 0: hidden // 64 (hard-coded in the reference)
      dropout=0.1, mlm_head=True, nce_head=True, nce_proj_layers=2, nce_proj_hid_dim=2048,
      num_classes=0, dtype="float32",
      # objectives (vlx.models.vimpac.objectives): 3D block masking (spec §3.2; a negative value
      # is i.i.d. masking with p = -mask_blocks / 1000), the NCE temperature (fixed, spec §3.4)
      # and the fine-tuning label smoothing (spec §5).
      mask_blocks=5, nce_temperature=0.2, label_smoothing=0.0))
  if preset in ("large", "large_frame128", "large_frame256"):
    c.update(hidden=1024, layers=24, halve_att=True, halve_mlp=True, nce_proj_layers=3,
             nce_proj_hid_dim=4096)
    if preset == "large_frame256":
      c.update(frame_size=256, mask_blocks=6)   # stage 2 masks 6 blocks (spec §3.2)
  elif preset == "tiny":
    c.update(hidden=128, layers=3, clip_len=3, frame_size=32, nce_proj_layers=3,
             nce_proj_hid_dim=96)
  elif preset not in ("", "small"):
    raise ValueError(f"unknown vimpac model preset {preset!r}; expected '', 'small', 'large', "
                     "'large_frame256' or 'tiny'")
  return c


def parse_layout(layout: str) -> tuple[tuple[str, ...], ...]:
  """'T,H|W' -> (('T',), ('H', 'W')): sequential stages of parallel axis patterns."""
  s = layout[len("efflayout"):] if layout.startswith("efflayout") else layout
  stages = tuple(tuple(p for p in stage.split("|")) for stage in s.split(","))
  if not s or any(p not in AXES for st in stages for p in st):
    raise ValueError(f"model layout {layout!r}: expected stages of T/H/W patterns joined by ',' "
                     "(sequential) and '|' (parallel), e.g. 'T,H|W'")
  return stages


def interpolate_linear(table: Any, size: int) -> Any:
  """torch F.interpolate(mode='linear', align_corners=False) of a [N, D] table along N
  (spec §4; no antialiasing when shrinking)."""
  t = table if hasattr(table, "shape") else np.asarray(table)   # numpy, jax or a tracer
  return common.linear_resize_1d(t, size, axis=0)


def _param(shape, rngs: nnx.Rngs, std: float = 0.02) -> nnx.Param:
  return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))


class PositionalTables(nnx.Module):
  """The reference's factorised positional parameters; `table()` -> [1 + L*H*W, D], row 0 = CLS."""

  def __init__(self, kind: str, length: int, height: int, width: int, dim: int, *,
               rngs: nnx.Rngs):
    if kind not in POS_EMBS:
      raise ValueError(f"model.pos_emb={kind!r}: expected one of {POS_EMBS}")
    self.kind, self.shape = kind, (length, height, width)
    if kind == "default":
      self.positional_embedding = _param((1 + length * height * width, dim), rngs)
      return
    self.cls_pos_embedding = _param((1, dim), rngs)
    self.temporal_pos_embedding = _param((length, dim), rngs)
    if kind == "hw_separation":
      self.height_pos_embedding = _param((height, dim), rngs)
      self.width_pos_embedding = _param((width, dim), rngs)
    else:
      self.spatial_pos_embedding = _param((height * width, dim), rngs)

  def table(self) -> jax.Array:
    if self.kind == "default":
      return self.positional_embedding[...]
    l, h, w = self.shape
    t = self.temporal_pos_embedding[...][:, None, None, :]
    if self.kind == "hw_separation":
      s = (self.height_pos_embedding[...][:, None, :] + self.width_pos_embedding[...][None, :, :])
    else:
      s = self.spatial_pos_embedding[...].reshape(h, w, -1)
    grid = (t + s[None]).reshape(l * h * w, -1)
    return jnp.concatenate([self.cls_pos_embedding[...], grid], axis=0)


def _dot_attention(q, k, v, heads: int, key_mask: jax.Array | None, dropout: float,
                   deterministic: bool, rngs) -> jax.Array:
  """softmax(q k^T / sqrt(hd)) v over [N, S, d] with `heads` heads; key_mask [N, S] True = drop."""
  n, s, d = q.shape
  hd = d // heads
  split = lambda t: t.reshape(n, s, heads, hd)
  acc = jnp.promote_types(q.dtype, jnp.float32)   # bf16 -> f32 scores; f64 stays f64
  scores = jnp.einsum("nqhd,nkhd->nhqk", split(q), split(k),
                      preferred_element_type=acc).astype(acc) / np.sqrt(hd)
  if key_mask is not None:
    scores = jnp.where(key_mask[:, None, None, :], jnp.finfo(acc).min, scores)
  probs = common.dropout(jax.nn.softmax(scores, axis=-1), dropout, deterministic=deterministic,
                         rngs=rngs)
  return jnp.einsum("nhqk,nkhd->nqhd", probs.astype(v.dtype), split(v)).reshape(n, s, d)


class AxisAttention(nnx.Module):
  """Self-attention along one axis with a CLS copy prepended to every row (spec §2.2)."""

  def __init__(self, axis: str, dim: int, out_dim: int, heads: int, dropout: float, *, kw: dict):
    self.axis, self.heads, self.dropout = axis, heads, dropout
    self.query = common.linear(dim, out_dim, ("embed", "heads"), **kw)
    self.key = common.linear(dim, out_dim, ("embed", "heads"), **kw)
    self.value = common.linear(dim, out_dim, ("embed", "heads"), **kw)

  def _swap(self, t):
    ax = _SWAP[self.axis]
    return t if ax is None else jnp.swapaxes(t, *ax)

  def __call__(self, cls, x, pad, *, deterministic: bool, rngs):
    xs = self._swap(x)                                      # [B, a, b, S, D]
    b, a1, a2, s, d = xs.shape
    rows = jnp.concatenate([jnp.broadcast_to(cls[:, None, None, None, :], (b, a1, a2, 1, d)), xs],
                           axis=3).reshape(b * a1 * a2, 1 + s, d)
    mask = None
    if pad is not None:
      m = self._swap(pad).reshape(b * a1 * a2, s)
      mask = jnp.concatenate([jnp.zeros((m.shape[0], 1), bool), m], axis=1)
    out = _dot_attention(self.query(rows), self.key(rows), self.value(rows), self.heads, mask,
                         self.dropout, deterministic, rngs).reshape(b, a1, a2, 1 + s, -1)
    return out[:, :, :, 0].mean(1).mean(1), self._swap(out[:, :, :, 1:])


class AttentionStage(nnx.Module):
  """Parallel axis patterns, concatenated in pattern order, one shared dense (+ residual, LN)."""

  def __init__(self, patterns, dim: int, heads: int, cfg, *, kw: dict):
    k = len(patterns)
    d_att = dim // 2 if cfg.halve_att else dim
    if dim % k or heads % k:
      raise ValueError(f"model.layout stage {'|'.join(patterns)!r}: hidden={dim} and "
                       f"{heads} heads must be divisible by its {k} parallel patterns")
    if cfg.pre_activation and cfg.halve_att:
      raise ValueError("model.pre_activation with model.halve_att: the reference's "
                       "pre-activation dense is [D, D] and this combination crashes there")
    self.pre_activation, self.dropout = cfg.pre_activation, cfg.dropout
    self.attentions = nnx.List([AxisAttention(p, dim, d_att // k, heads // k, cfg.dropout, kw=kw)
                                for p in patterns])
    # the pre-activation reference's dense is [D, D] whatever halve_att (it crashes if halved)
    self.dense = common.linear(dim if cfg.pre_activation else d_att, dim, ("heads", "embed"),
                               **kw)
    self.norm = common.layer_norm(dim, LN_EPS, **kw)

  def __call__(self, cls, x, pad, *, deterministic: bool, rngs):
    if self.pre_activation:   # the inputs are replaced by their LN (residual from the LN output)
      cls, x = self.norm(cls), self.norm(x)
    outs = [a(cls, x, pad, deterministic=deterministic, rngs=rngs) for a in self.attentions]
    drop = lambda t: common.dropout(self.dense(t), self.dropout, deterministic=deterministic,
                                    rngs=rngs)
    ac = drop(jnp.concatenate([o[0] for o in outs], -1))
    ax = drop(jnp.concatenate([o[1] for o in outs], -1))
    if self.pre_activation:
      return cls + ac, x + ax
    return self.norm(ac + cls), self.norm(ax + x)


class Layer(nnx.Module):
  """Sequential attention stages, then one MLP (same weights for the CLS and token streams)."""

  def __init__(self, stages, dim: int, heads: int, cfg, *, kw: dict):
    self.pre_activation, self.dropout = cfg.pre_activation, cfg.dropout
    self.attention_blocks = nnx.List([AttentionStage(st, dim, heads, cfg, kw=kw)
                                      for st in stages])
    d_mlp = 2 * dim if cfg.halve_mlp else 4 * dim
    self.c_fc = common.linear(dim, d_mlp, ("embed", "mlp"), **kw)
    self.c_proj = common.linear(d_mlp, dim, ("mlp", "embed"), **kw)
    self.ln = common.layer_norm(dim, LN_EPS, **kw)

  def mlp(self, t, deterministic, rngs):
    h = self.c_proj(common.gelu(self.c_fc(t)))
    return common.dropout(h, self.dropout, deterministic=deterministic, rngs=rngs)

  def __call__(self, cls, x, pad, *, deterministic: bool, rngs, record=None, prefix=""):
    for j, stage in enumerate(self.attention_blocks):
      cls, x = stage(cls, x, pad, deterministic=deterministic, rngs=rngs)
      if record is not None:
        record[f"{prefix}_attnblock{j}_cls"], record[f"{prefix}_attnblock{j}_x"] = cls, x
    if self.pre_activation:
      return (cls + self.mlp(self.ln(cls), deterministic, rngs),
              x + self.mlp(self.ln(x), deterministic, rngs))
    return (self.ln(cls + self.mlp(cls, deterministic, rngs)),
            self.ln(x + self.mlp(x, deterministic, rngs)))


class Backbone(nnx.Module):
  """The reference TransformerLayout: codes [B, L, H, W] -> (cls [B, D], x [B, L, H, W, D])."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    dim = cfg.hidden
    heads = cfg.num_heads or dim // 64
    if heads < 1:
      raise ValueError(f"model.hidden={dim}: the reference uses hidden // 64 heads (>= 1)")
    side = cfg.frame_size // 8
    kw = dict(dtype=common.as_dtype(cfg.dtype), rngs=rngs)
    self.pre_activation, self.dropout = cfg.pre_activation, cfg.dropout
    self.grid = (cfg.clip_len, side, side)
    self.cls_param = _param((dim,), rngs)
    self.embedding = nnx.Embed(cfg.vocab_size + EXTRA_ROWS, dim, dtype=kw["dtype"], rngs=rngs,
                               embedding_init=nnx.with_partitioning(
                                   nnx.initializers.normal(0.02), ("vocab", "embed")))
    self.positional_embedding = PositionalTables(cfg.pos_emb, *self.grid, dim, rngs=rngs)
    self.norm = common.layer_norm(dim, LN_EPS, **kw)  # ln_pre (post-LN) / ln_post (pre-act)
    stages = parse_layout(cfg.layout)
    self.resblocks = nnx.List([Layer(stages, dim, heads, cfg, kw=kw) for _ in range(cfg.layers)])

  def __call__(self, codes: jax.Array, *, deterministic: bool = True, rngs=None,
               record: dict | None = None):
    if tuple(codes.shape[1:]) != self.grid:
      raise ValueError(f"codes of shape {codes.shape}: the model's positional tables are built "
                       f"for (L, H, W) = {self.grid} (interpolate them when converting)")
    pad = codes == PAD_TOKEN_ID
    b = codes.shape[0]
    table = self.positional_embedding.table()
    e = self.embedding(codes)
    x = e + table[1:].reshape(self.grid + (-1,)).astype(e.dtype)
    cls = jnp.broadcast_to(self.cls_param[...] + table[0], (b, table.shape[-1])).astype(e.dtype)
    if not self.pre_activation:
      cls, x = self.norm(cls), self.norm(x)
    drop = lambda t: common.dropout(t, self.dropout, deterministic=deterministic, rngs=rngs)
    cls, x = drop(cls), drop(x)
    if record is not None:
      record["pos_embedding_table"] = table
      record["embedded_cls"], record["embedded_x"] = cls, x
    for i, layer in enumerate(self.resblocks):
      cls, x = layer(cls, x, pad, deterministic=deterministic, rngs=rngs, record=record,
                     prefix=f"block{i}")
      if record is not None:
        record[f"block{i}_cls"], record[f"block{i}_x"] = cls, x
    if self.pre_activation:
      cls, x = self.norm(cls), self.norm(x)
    return cls, x


class MaskPredictionHead(nnx.Module):
  """u = LN(GELU(dense(x))); logits = u E^T + bias with E the (tied) input embedding."""

  def __init__(self, dim: int, rows: int, *, kw: dict):
    self.dense = common.linear(dim, dim, ("embed", "mlp"), **kw)
    self.norm = common.layer_norm(dim, LN_EPS, **kw)
    self.bias = nnx.Param(jnp.zeros((rows,), jnp.float32))

  def transform(self, x):
    return self.norm(common.gelu(self.dense(x)))

  def __call__(self, x, embedding: jax.Array):
    u = self.transform(x)
    return jnp.einsum("...d,vd->...v", u, embedding.astype(u.dtype)) + self.bias[...]


class TorchBatchNorm(nnx.BatchNorm):
  """nnx.BatchNorm whose running variance takes the unbiased batch variance (x n / (n - 1)), as
  torch's (Sync)BatchNorm does; the normalisation uses the biased one in both."""

  def __call__(self, x, use_running_average=None, *, mask=None):
    old = self.var[...]
    y = super().__call__(x, use_running_average, mask=mask)
    if not use_running_average:
      n, m = x.size // x.shape[-1], self.momentum
      self.var[...] = m * old + (self.var[...] - m * old) * (n / max(n - 1, 1))
    return y


class ContrastiveHead(nnx.Module):
  """(linear -> BatchNorm -> ReLU) x (n-1), then a bias-free linear to 256 (CLSMLPHead)."""

  def __init__(self, dim: int, hid: int, layers: int, *, kw: dict):
    rngs = kw["rngs"]
    widths = [dim] + [hid] * (layers - 1) + [NCE_OUTPUT_DIM]
    self.linears = nnx.List([common.linear(widths[i], widths[i + 1], ("embed", None),
                                           use_bias=i < layers - 1, **kw) for i in range(layers)])
    self.bns = nnx.List([TorchBatchNorm(hid, momentum=0.9, epsilon=BN_EPS, dtype=kw["dtype"],
                                       rngs=rngs)
                         for _ in range(layers - 1)])

  def __call__(self, cls, *, train_bn: bool = False, record: dict | None = None, prefix=""):
    h = cls
    for i, lin in enumerate(self.linears):
      h = lin(h)
      if record is not None:
        record[f"{prefix}linear_{i}_out"] = h
      if i < len(self.bns):
        h = self.bns[i](h, use_running_average=not train_bn)
        if record is not None:
          record[f"{prefix}bn_{i}_out"] = h
        h = jax.nn.relu(h)
        if record is not None:
          record[f"{prefix}act_{i}_out"] = h
    return h


class Vimpac(nnx.Module):
  """Backbone plus the heads the config asks for (mlm_head / nce_head / num_classes > 0)."""

  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    kw = dict(dtype=common.as_dtype(cfg.dtype), rngs=rngs)
    self.backbone = Backbone(cfg, rngs=rngs)
    rows = cfg.vocab_size + EXTRA_ROWS
    self.mlm_head = MaskPredictionHead(cfg.hidden, rows, kw=kw) if cfg.mlm_head else None
    self.cls_head = (ContrastiveHead(cfg.hidden, cfg.nce_proj_hid_dim, cfg.nce_proj_layers, kw=kw)
                     if cfg.nce_head else None)
    # the fine-tuning classifier starts at zero (spec §2.2 initialisation)
    self.cls_fc = (common.linear(cfg.hidden, cfg.num_classes, ("embed", None),
                                 kernel_init=nnx.initializers.zeros_init(), **kw)
                   if cfg.num_classes else None)
    # objective settings (static; read by vlx.models.vimpac.objectives)
    self.mask_blocks = int(getattr(cfg, "mask_blocks", 5))
    self.label_smoothing = float(getattr(cfg, "label_smoothing", 0.0))
    self.nce_temperature = float(getattr(cfg, "nce_temperature", 0.2))

  def __call__(self, codes, *, deterministic: bool = True, rngs=None, record=None):
    return self.backbone(codes, deterministic=deterministic, rngs=rngs, record=record)

  def mlm_logits(self, x):
    return self.mlm_head(x, self.backbone.embedding.embedding[...])

  def classify(self, cls):
    return self.cls_fc(cls)


def build(model_cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> Vimpac:
  return Vimpac(model_cfg, rngs=rngs)

"""Converter rules for public backbones: Hugging Face BERT and timm ViT -> the shared vlx blocks.

Targets are the nnx paths of vlx/layers (BertEncoder, MlmHead, TimeSformer) under the prefixes of
a `backbones.Layout`. Source key names (facts of the public formats):
  BERT (transformers): `bert.` + embeddings.{word,position,token_type}_embeddings.weight,
    embeddings.LayerNorm, encoder.layer.N.{attention.self.{query,key,value}, attention.output.dense,
    attention.output.LayerNorm, intermediate.dense, output.dense, output.LayerNorm}; MLM head
    cls.predictions.{bias, transform.dense, transform.LayerNorm, decoder (tied)}; BertModel files
    have the same keys without `bert.`; original Google-converted files name LayerNorm parameters
    gamma/beta instead of weight/bias.
  ViT (timm vit_base_patch16_224): cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1,
    attn.qkv (fused, rows q|k|v), attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head; the distilled
    DeiTs (deit_*_distilled_patch16_224) add dist_token (pos_embed then has 2 prefix rows) and
    head_dist. One table serves ALPRO's TimeSformer and All-in-one's plain ViT: the layout says
    where the patch embedding sits and whether a temporal attention/norm copy exists.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import math

import jax.numpy as jnp
import numpy as np

from vlx.convert import hooks as hk
from vlx.convert.engine import Rule, Tied
from vlx.convert.errors import WrongFamilyError
from vlx.layers.vit import resize_bilinear_align_corners

_W, _B = r"\.(?:weight|gamma)", r"\.(?:bias|beta)"


def _linear(src: str, dst: str | tuple[str, ...], hook: hk.Hook = hk.linear) -> list[Rule]:
  both = isinstance(dst, tuple)
  kernel = tuple(d + "/kernel" for d in dst) if both else dst + "/kernel"
  bias = tuple(d + "/bias" for d in dst) if both else dst + "/bias"
  return [Rule(src + r"\.weight", kernel, _copies(hook, len(dst)) if both else hook),
          Rule(src + r"\.bias", bias, _copies(hk.identity, len(dst)) if both else None)]


def _norm(src: str, dst: str | tuple[str, ...]) -> list[Rule]:
  both = isinstance(dst, tuple)
  scale = tuple(d + "/scale" for d in dst) if both else dst + "/scale"
  bias = tuple(d + "/bias" for d in dst) if both else dst + "/bias"
  hook = _copies(hk.identity, len(dst)) if both else None
  return [Rule(src + _W, scale, hook), Rule(src + _B, bias, hook)]


def _copies(hook: hk.Hook, n: int) -> hk.Hook:
  """The hook's result(s) repeated `n` times: one source filling several targets."""
  def out(x: Any) -> tuple[Any, ...]:
    y = hook(x)
    return (y if isinstance(y, tuple) else (y,)) * n
  return out


def bert_rules(source: Mapping[str, Any], layout, *, has_mlm: bool, where: str
               ) -> tuple[list[Rule], dict[str, str], list[Tied], str]:
  """(rules, unused, tied, format name) for a BERT state dict with or without the `bert.` level."""
  if "bert.embeddings.word_embeddings.weight" in source:
    p, fmt = r"bert\.", ("BertForPreTraining" if any(k.startswith("cls.seq_relationship.")
                                                     for k in source) else "BertForMaskedLM")
  elif "embeddings.word_embeddings.weight" in source:
    p, fmt = "", "BertModel"
  else:
    raise WrongFamilyError(f"{where}: not a BERT state dict (expected bert.embeddings."
                           "word_embeddings.weight or embeddings.word_embeddings.weight, got e.g. "
                           f"{sorted(source)[:6]})")
  t, m = layout.text, layout.mlm_head
  e, l, dl = p + r"embeddings\.", p + r"encoder\.layer\.(\d+)\.", t + r"layers/\1/"
  rules = [
      Rule(e + r"word_embeddings\.weight", t + "embeddings/word/embedding"),
      Rule(e + r"position_embeddings\.weight", t + "embeddings/position/embedding"),
      Rule(e + r"token_type_embeddings\.weight", t + "embeddings/token_type/embedding"),
      *_norm(e + "LayerNorm", t + "embeddings/norm"),
      *_linear(l + r"attention\.self\.(query|key|value)", dl + r"attn/\2"),
      *_linear(l + r"attention\.output\.dense", dl + "attn/out"),
      *_norm(l + r"attention\.output\.LayerNorm", dl + "attn_norm"),
      *_linear(l + r"intermediate\.dense", dl + "mlp/fc1"),
      *_linear(l + r"output\.dense", dl + "mlp/fc2"),
      *_norm(l + r"output\.LayerNorm", dl + "mlp_norm"),
  ]
  unused = {
      e + r"(?:position_ids|token_type_ids)": "constant buffer; vlx builds positions/types itself",
      p + r"pooler\.dense\.(?:weight|bias)": "BERT pooler: ALPRO's BERT has no pooling layer",
      r"cls\.seq_relationship\.(?:weight|bias)": "next-sentence-prediction head, not used",
  }
  tied: list[Tied] = []
  c = r"cls\.predictions\."
  if has_mlm:
    rules += [Rule(c + "bias", m + "bias"), *_linear(c + r"transform\.dense", m + "dense"),
              *_norm(c + r"transform\.LayerNorm", m + "norm")]
    if p:
      tied.append(Tied(c + r"decoder\.weight", "bert.embeddings.word_embeddings.weight",
                       "MLM decoder weight = the word embeddings (tied)"))
    tied.append(Tied(c + r"decoder\.bias", "cls.predictions.bias",
                     "same Parameter as cls.predictions.bias"))
  else:
    unused[c + r".*"] = "MLM head: the model has none (e.g. the QA head)"
  return rules, unused, tied, fmt


def resize_pos_embed(grid: int, prefix: int) -> hk.Hook:
  """pos_embed [1, prefix + g*g, D] -> [1, prefix + grid*grid, D]: the CLS (and DIST) rows kept,
  the patch grid resized bilinearly with align_corners=True (All-in-one's visual_embed resize)."""
  def hook(x: Any) -> Any:
    n = x.shape[1] - prefix
    g = math.isqrt(max(n, 0))
    if n <= 0 or g * g != n:
      raise ValueError(f"pos_embed has {n} patch positions after {prefix} prefix row(s): "
                       "not a square grid")
    if g == grid:
      return x
    patches = resize_bilinear_align_corners(jnp.asarray(x[:, prefix:], jnp.float32)
                                            .reshape(1, g, g, -1), grid, grid)
    patches = np.asarray(patches).reshape(1, grid * grid, -1).astype(x.dtype)
    return np.concatenate([np.asarray(x[:, :prefix]), patches], axis=1)
  return hook


def vit_rules(layout, pos_hook: hk.Hook | None = None) -> tuple[list[Rule], dict[str, str]]:
  """timm ViT / DeiT -> the layout's ViT. With `layout.temporal_attn` (TimeSformer) the spatial
  attention and norm1 also fill temporal_attn and temporal_norm."""
  v = layout.video
  b, db = r"blocks\.(\d+)\.", v + r"blocks/\1/"
  qkv = ("query", "key", "value")
  attns = ("attn", "temporal_attn") if layout.temporal_attn else ("attn",)
  norm1 = (db + "norm1", db + "temporal_norm") if layout.temporal_attn else (db + "norm1",)
  both = tuple(db + f"{a}/{n}" for a in attns for n in qkv)
  rules = [
      Rule("cls_token", v + "cls_token"), Rule("dist_token", v + "dist_token"),
      Rule("pos_embed", v + "pos_embed", pos_hook),
      Rule(r"patch_embed\.proj\.weight", v + layout.patch_embed + "kernel", hk.conv2d),
      Rule(r"patch_embed\.proj\.bias", v + layout.patch_embed + "bias"),
      Rule(b + r"attn\.qkv\.weight", tuple(x + "/kernel" for x in both),
           _copies(hk.chain(hk.split_qkv(3), hk.linear), len(attns))),
      Rule(b + r"attn\.qkv\.bias", tuple(x + "/bias" for x in both),
           _copies(hk.split_qkv(3), len(attns))),
      *_linear(b + r"attn\.proj", tuple(db + f"{a}/out" for a in attns)),
      *_norm(b + "norm1", norm1),
      *_norm(b + "norm2", db + "norm2"),
      *_linear(b + r"mlp\.(fc1|fc2)", db + r"mlp/\2"),
      *_norm("norm", v + "norm"),
  ]
  unused = {r"head\.(?:weight|bias)": "ImageNet classifier, dropped as the reference does",
            r"head_dist\.(?:weight|bias)": "DeiT distillation classifier, dropped as the "
                                           "reference does",
            r"pre_logits\.fc\.(?:weight|bias)": "representation layer of in21k ViTs; "
                                                "the model has none"}
  return rules, unused

"""Converter rules for the ViT pieces of vlx/layers/vit.py (timm key names).

Source keys (facts of timm's vit_base_patch16_224 / DeiT format): cls_token, dist_token (distilled
DeiTs; pos_embed then has 2 prefix rows), pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv
(fused, rows q|k|v), attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, head, head_dist.
Targets: the Attention (query/key/value/out), ViTBlock (norm1/attn/norm2/mlp) and
VisionTransformer (patch_embed, tokens, blocks/N, norm) module paths; TimeSformer blocks reuse them
(vlx/layers/timesformer_rules.py).
"""
from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from vlx.convert import hooks as hk
from vlx.convert import rules as r
from vlx.convert.rules import Rule
from vlx.layers.vit import resize_bilinear_align_corners

QKV = ("query", "key", "value")


def _each(dst: str | tuple[str, ...]) -> tuple[str, ...]:
  return dst if isinstance(dst, tuple) else (dst,)


def attention(src: str, dst: str | tuple[str, ...]) -> list[Rule]:
  """timm fused `src`.qkv + `src`.proj -> Attention(s) at `dst` (a tuple fills several copies)."""
  dsts = _each(dst)
  qkv = tuple(f"{d}/{n}" for d in dsts for n in QKV)
  return [Rule(src + r"\.qkv\.weight", tuple(q + "/kernel" for q in qkv),
               r.copies(hk.chain(hk.split_qkv(3), hk.linear), len(dsts))),
          Rule(src + r"\.qkv\.bias", tuple(q + "/bias" for q in qkv),
               r.copies(hk.split_qkv(3), len(dsts))),
          *r.linear(src + r"\.proj", tuple(f"{d}/out" for d in dsts) if len(dsts) > 1
                    else dsts[0] + "/out")]


def block(src: str, dst: str, *, attn: tuple[str, ...] = ("attn",),
          norm1: tuple[str, ...] = ("norm1",)) -> list[Rule]:
  """blocks.N.* (`src` ends with the block index group and '\\.', e.g. r'blocks\\.(\\d+)\\.') ->
  a ViTBlock at `dst` (ending '/'); `attn` / `norm1`: the target modules attn / norm1 fill."""
  one = lambda names: tuple(dst + n for n in names) if len(names) > 1 else dst + names[0]
  return [*attention(src + "attn", one(attn)), *r.norm(src + "norm1", one(norm1)),
          *r.norm(src + "norm2", dst + "norm2"),
          *r.linear(src + r"mlp\.(fc1|fc2)", dst + r"mlp/\2")]


def tokens(src: str, dst: str, *, pos_hook: hk.Hook | None = None) -> list[Rule]:
  """cls_token, dist_token, pos_embed (optionally resized by `pos_hook`)."""
  return [Rule(src + "cls_token", dst + "cls_token"), Rule(src + "dist_token", dst + "dist_token"),
          Rule(src + "pos_embed", dst + "pos_embed", pos_hook)]


def patch_embed(src: str, dst: str) -> list[Rule]:
  """patch_embed.proj (Conv2d OIHW) -> the patch convolution at `dst` (kernel HWIO, bias)."""
  return r.linear(src + r"patch_embed\.proj", dst, hk.conv2d)


def vision_transformer(src: str, dst: str, *, patch: str = "patch_embed/proj",
                       pos_hook: hk.Hook | None = None, attn: tuple[str, ...] = ("attn",),
                       norm1: tuple[str, ...] = ("norm1",)) -> list[Rule]:
  """A timm ViT under regex prefix `src` -> a VisionTransformer-like tree at `dst`: tokens, the
  patch convolution at `dst + patch`, blocks/N (see `block`), norm."""
  return [*tokens(src, dst, pos_hook=pos_hook), *patch_embed(src, dst + patch),
          *block(src + r"blocks\.(\d+)\.", dst + r"blocks/\1/", attn=attn, norm1=norm1),
          *r.norm(src + "norm", dst + "norm")]


TIMM_UNUSED = {
    r"head\.(?:weight|bias)": "ImageNet classifier, dropped as the reference does",
    r"head_dist\.(?:weight|bias)": "DeiT distillation classifier, dropped as the reference does",
    r"pre_logits\.fc\.(?:weight|bias)": "representation layer of in21k ViTs; the model has none",
}


def resize_pos_embed(grid: int, prefix: int) -> hk.Hook:
  """pos_embed [1, prefix + g*g, D] -> [1, prefix + grid*grid, D]: the CLS (and DIST) rows kept,
  the patch grid resized bilinearly with align_corners=True."""
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

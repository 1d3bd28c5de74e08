"""Converter rules for vlx/layers/timesformer.py (the TimeSformer reference's key names).

A TimeSformer state dict is a timm ViT (vit_rules) whose blocks add temporal_attn (fused qkv +
proj), temporal_norm1 and temporal_fc, plus a time_embed table [1, T, D]. The patch convolution
sits at patch_embed/ (no proj level) in vlx's TimeSformer. Initialising a TimeSformer from an
ImageNet ViT (vlx/convert/backbones.py) uses `vit_rules.vision_transformer` with attn / norm1
also filling temporal_attn / temporal_norm.
"""
from __future__ import annotations

from vlx.convert import hooks as hk
from vlx.convert import rules as r
from vlx.convert.rules import Rule
from vlx.layers import vit_rules


def timesformer(src: str, dst: str, num_frames: int) -> list[Rule]:
  """TimeSformer keys under regex prefix `src` -> vlx TimeSformer at `dst` (ending '/');
  time_embed is nearest-resized to `num_frames` (identity when equal)."""
  b, db = src + r"blocks\.(\d+)\.", dst + r"blocks/\1/"
  return [*vit_rules.vision_transformer(src, dst, patch="patch_embed"),
          Rule(src + "time_embed", dst + "time_embed", hk.resize_nearest(num_frames, axis=1)),
          *vit_rules.attention(b + "temporal_attn", db + "temporal_attn"),
          *r.norm(b + "temporal_norm1", db + "temporal_norm"),
          *r.linear(b + "temporal_fc", db + "temporal_fc")]


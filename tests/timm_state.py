"""Random state dicts in timm's VisionTransformer / DeiT key layout, for the backbone-loading tests
of every family (the layout is timm's, so it lives once)."""
from __future__ import annotations

import numpy as np


def random_timm_vit(rng: np.random.Generator, *, dim: int, depth: int, patch: int, grid: int,
                    distilled: bool = False) -> dict[str, np.ndarray]:
  """timm keys: cls(+dist) token, pos_embed [1, prefix + grid², dim], patch_embed, blocks, norm,
  head(+head_dist) with 1000 classes; float32 normal values."""
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  prefix = 2 if distilled else 1
  sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, prefix + grid * grid, dim),
        "patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
        "norm.weight": r(dim), "norm.bias": r(dim), "head.weight": r(1000, dim),
        "head.bias": r(1000)}
  if distilled:
    sd.update({"dist_token": r(1, 1, dim), "head_dist.weight": r(1000, dim),
               "head_dist.bias": r(1000)})
  for k in range(depth):
    b = f"blocks.{k}."
    for name, (o, i) in {"attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim),
                         "mlp.fc1": (4 * dim, dim), "mlp.fc2": (dim, 4 * dim)}.items():
      sd[b + name + ".weight"], sd[b + name + ".bias"] = r(o, i), r(o)
    for name in ("norm1", "norm2"):
      sd[b + name + ".weight"], sd[b + name + ".bias"] = r(dim), r(dim)
  return sd

"""Converter rules for vlx/layers/clip.py from OpenAI CLIP / open_clip ViT state dicts.

Source keys (facts of the public format, the same in OpenAI's `clip` and open_clip's ViT `CLIP`):
visual.{conv1.weight (no bias), class_embedding [W], positional_embedding [1+P, W], ln_pre,
transformer.resblocks.N.{ln_1, attn.in_proj_weight [3W, W] (rows q|k|v), attn.in_proj_bias,
attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_post, proj [W, E]}, token_embedding.weight,
positional_embedding [ctx, Wt], transformer.resblocks.N..., ln_final, text_projection [Wt, E],
logit_scale []. open_clip builds `text_projection` as an nn.Linear for some configs
(`text_projection.weight` [E, Wt], transposed here; a projection bias is not supported).

Files: OpenAI's released `ViT-B-32.pt` is a TorchScript archive (fp16 weights). torch_io only
calls torch.load(weights_only=True), which refuses TorchScript archives; `read_checkpoint` reads
them with vlx.convert.torchscript (data.pkl through an allow-list unpickler, no code run, no torch)
and everything else with torch_io. A JIT state dict also holds the scalars `input_resolution`,
`context_length`, `vocab_size` (dropped: the shapes say the same) and `attn_mask` constants
(rebuilt by the model).
Activation ('quick_gelu' OpenAI, 'gelu' open_clip's non-quickgelu configs) is not in the weights:
it is the `variant` ('openai' | 'open_clip') or an explicit override.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from vlx.convert import hooks as hk
from vlx.convert import rules as r
from vlx.convert.rules import Rule

VARIANTS = {"openai": "quick_gelu", "open_clip": "gelu"}
HEAD_WIDTH = 64   # CLIP sets heads = width // 64 at every released size


def _check_variant(variant: str) -> str:
  if variant not in VARIANTS:
    raise ValueError(f"CLIP variant {variant!r}: expected one of {sorted(VARIANTS)}")
  return VARIANTS[variant]


def blocks(src: str, dst: str) -> list[Rule]:
  """`src`resblocks.N.* (regex prefix, ends with '\\.') -> ResidualBlocks at `dst`N/."""
  b, d = src + r"resblocks\.(\d+)\.", dst + r"\1/"
  qkv = tuple(d + f"attn/{n}" for n in ("query", "key", "value"))
  return [Rule(b + r"attn\.in_proj_weight", tuple(q + "/kernel" for q in qkv),
               hk.chain(hk.split_qkv(3), hk.linear)),
          Rule(b + r"attn\.in_proj_bias", tuple(q + "/bias" for q in qkv), hk.split_qkv(3)),
          *r.linear(b + r"attn\.out_proj", d + "attn/out"),
          *r.norm(b + "ln_1", d + "norm1"), *r.norm(b + "ln_2", d + "norm2"),
          *r.linear(b + r"mlp\.c_fc", d + "mlp/fc1"), *r.linear(b + r"mlp\.c_proj", d + "mlp/fc2")]


def rules(src: str = "", dst: str = "", *, variant: str = "openai") -> list[Rule]:
  """A CLIP state dict under regex prefix `src` -> a ClipModel at nnx path prefix `dst`
  (both empty or ending in a separator: '\\.' / '/')."""
  _check_variant(variant)
  v, dv = src + r"visual\.", dst + "visual/"
  return [
      Rule(v + r"conv1\.weight", dv + "conv1/kernel", hk.conv2d),
      Rule(v + "class_embedding", dv + "class_embedding"),
      Rule(v + "positional_embedding", dv + "positional_embedding"),
      *r.norm(v + "ln_pre", dv + "ln_pre"),
      *blocks(v + r"transformer\.", dv + "blocks/"),
      *r.norm(v + "ln_post", dv + "ln_post"),
      Rule(v + "proj", dv + "proj"),
      Rule(src + r"token_embedding\.weight", dst + "text/token_embedding/embedding"),
      Rule(src + "positional_embedding", dst + "text/positional_embedding"),
      *blocks(src + r"transformer\.", dst + "text/blocks/"),
      *r.norm(src + "ln_final", dst + "text/ln_final"),
      Rule(src + "text_projection", dst + "text/text_projection"),
      Rule(src + r"text_projection\.weight", dst + "text/text_projection", hk.linear),
      Rule(src + "logit_scale", dst + "logit_scale"),
  ]


def unused(src: str = "", *, variant: str = "openai") -> dict[str, str]:
  """Source keys dropped on purpose (regex -> reason)."""
  _check_variant(variant)
  return {
      src + r"(?:input_resolution|context_length|vocab_size)":
          "scalar of OpenAI's JIT archive; the shapes give the same sizes",
      src + r"(?:visual\.)?(?:transformer\.resblocks\.\d+\.)?attn_mask":
          "constant causal mask; the model builds it",
  }


def _count(source: Mapping[str, Any], prefix: str) -> int:
  rx = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.attn\.in_proj_weight")
  return len({m.group(1) for k in source if (m := rx.fullmatch(k))})


def infer_config(source: Mapping[str, Any], src: str = "", *, variant: str = "openai",
                 head_width: int = HEAD_WIDTH) -> dict[str, Any]:
  """ClipConfig fields read from the shapes of `source` (keys under the literal prefix `src`).
  Head counts are width // `head_width` (64 in every CLIP release)."""
  def shape(key: str) -> tuple[int, ...]:
    if src + key not in source:
      raise ValueError(f"not a ViT CLIP state dict: no {src + key!r} (e.g. {sorted(source)[:4]})")
    return tuple(int(d) for d in source[src + key].shape)

  width, _, patch, _ = shape("visual.conv1.weight")
  n_pos = shape("visual.positional_embedding")[0] - 1
  grid = math.isqrt(n_pos)
  if grid * grid != n_pos:
    raise ValueError(f"{src}visual.positional_embedding has {n_pos} patch rows: not a square grid")
  text_width = shape("ln_final.weight")[0]
  if text_width % head_width or width % head_width:
    raise ValueError(f"CLIP widths {width} / {text_width} are not multiples of "
                     f"head_width={head_width}; pass head_width")
  return dict(embed_dim=shape("visual.proj")[1], image_size=grid * patch, patch_size=patch,
              vision_width=width, vision_layers=_count(source, src + "visual."),
              vision_heads=width // head_width, context_length=shape("positional_embedding")[0],
              vocab_size=shape("token_embedding.weight")[0], text_width=text_width,
              text_layers=_count(source, src), text_heads=text_width // head_width,
              vision_mlp_dim=shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0],
              text_mlp_dim=shape("transformer.resblocks.0.mlp.c_fc.weight")[0],
              activation=_check_variant(variant))


def read_checkpoint(path: str) -> dict[str, Any]:
  """{key: numpy} of a CLIP file: a TorchScript archive (OpenAI's release) or a torch.save'd state
  dict (open_clip's, or a re-saved one), read without executing code from the file."""
  from vlx.convert import torch_io, torchscript  # pylint: disable=import-outside-toplevel
  if torchscript.is_torchscript(path):
    return torchscript.load_state_dict(path)
  return torch_io.load_state_dict(path)


def load(source: Mapping[str, Any], *, variant: str = "openai", src: str = "",
         head_width: int = HEAD_WIDTH, dtype=None, **overrides: Any):
  """A filled ClipModel from a CLIP state dict {key: array}: sizes from `infer_config` (+
  `overrides`), every parameter from the rules; raises ValueError naming unmapped source keys,
  unfilled parameters or shape mismatches."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from vlx.convert import engine  # pylint: disable=import-outside-toplevel
  from vlx.layers import clip  # pylint: disable=import-outside-toplevel

  cfg = {**infer_config(source, src, variant=variant, head_width=head_width), **overrides}
  abstract = nnx.eval_shape(lambda: clip.build(cfg, rngs=nnx.Rngs(0), dtype=dtype))
  graphdef, state = nnx.split(abstract)
  flat = list(nnx.to_flat_state(state))
  targets = {"/".join(str(k) for k in p): v.get_value() for p, v in flat}
  m = engine.map_keys({k: v for k, v in source.items() if k.startswith(src)},
                      rules(re.escape(src), variant=variant), targets,
                      unused=unused(re.escape(src), variant=variant), what="CLIP")
  m.check("CLIP: ", "rule targets missing from ClipModel")
  missing = sorted(set(targets) - set(m.filled))
  if m.unmapped or missing:
    raise ValueError(f"CLIP state dict: unmapped keys {m.unmapped[:10]}; unfilled parameters "
                     f"{missing[:10]}")
  new = [(p, v.replace(jnp.asarray(np.asarray(m.filled["/".join(str(k) for k in p)],
                                              v.get_value().dtype)))) for p, v in flat]
  return nnx.merge(graphdef, nnx.from_flat_state(new))

"""Converter rules for vlx/layers/video_swin.py (the Video Swin `SwinTransformer3D` key names).

Source keys (facts of the reference state dict): patch_embed.{proj (Conv3d OIDHW), norm},
layers.i.blocks.j.{norm1, attn.{relative_position_bias_table, relative_position_index (int
buffer), qkv (fused, rows q|k|v, head-major), proj}, norm2, mlp.{fc1, fc2}},
layers.i.downsample.{reduction (no bias), norm}, norm. The vlx tree uses the same names; the
fused qkv is split into the shared Attention's query/key/value (vit_rules.attention).
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from vlx.convert import hooks as hk
from vlx.convert import rules as r
from vlx.convert.rules import Rule
from vlx.layers import vit_rules
from vlx.layers.video_swin import relative_position_index

INDEX = r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_index"


def swin(src: str, dst: str) -> list[Rule]:
  """SwinTransformer3D keys under regex prefix `src` -> a VideoSwin at nnx path prefix `dst`
  (ending '/' or empty)."""
  b = src + r"layers\.(\d+)\.blocks\.(\d+)\."
  db = dst + r"layers/\1/blocks/\2/"
  ds, dds = src + r"layers\.(\d+)\.downsample\.", dst + r"layers/\1/downsample/"
  return [*r.linear(src + r"patch_embed\.proj", dst + "patch_embed/proj", hk.conv3d),
          *r.norm(src + r"patch_embed\.norm", dst + "patch_embed/norm"),
          *r.norm(b + "norm1", db + "norm1"), *r.norm(b + "norm2", db + "norm2"),
          Rule(b + r"attn\.relative_position_bias_table",
               db + "attn/relative_position_bias_table"),
          *vit_rules.attention(b + "attn", db + "attn"),
          *r.linear(b + r"mlp\.fc1", db + "mlp/fc1"), *r.linear(b + r"mlp\.fc2", db + "mlp/fc2"),
          Rule(ds + r"reduction\.weight", dds + "reduction/kernel", hk.linear),
          *r.norm(ds + "norm", dds + "norm"),
          *r.norm(src + "norm", dst + "norm")]


def unused(src: str) -> dict[str, str]:
  """Source keys vlx does not store: the relative-position index buffers (a fixed function of the
  configured window, recomputed by the layer; `check_index` verifies stored ones)."""
  return {src + INDEX: "relative-position index buffer: a constant function of the window, "
                       "recomputed by vlx (checked against the stored one by infer_config)"}


def _is_array(x: Any) -> bool:
  """Real values (numpy / jax arrays), not the shape-only stand-ins of a dry run."""
  return hasattr(x, "__array__") and not isinstance(x, jax.ShapeDtypeStruct)


def _windows(n: int, table: int) -> list[tuple[int, int, int]]:
  """Windows (wd, wh, ww) with wd*wh*ww = n tokens and (2wd-1)(2wh-1)(2ww-1) = table rows."""
  out = []
  for wd, wh in itertools.product(range(1, n + 1), repeat=2):
    if n % (wd * wh):
      continue
    ww = n // (wd * wh)
    if (2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1) == table:
      out.append((wd, wh, ww))
  return out


def infer_window(source: Mapping[str, Any], src: str) -> tuple[int, int, int]:
  """The configured window from the first block's bias table [(2wd-1)(2wh-1)(2ww-1), heads] and
  index buffer [N, N]: index values decide when present as arrays; from shapes alone the
  candidates differ only by axis order and the square spatial one (wh == ww) is taken."""
  table_key = next((k for k in source if re.fullmatch(
      src + r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table", k)), None)
  index_key = next((k for k in source if re.fullmatch(src + INDEX, k)), None)
  if table_key is None or index_key is None:
    raise ValueError("video swin: cannot infer window_size without a relative_position_bias_table "
                     "and a relative_position_index in the checkpoint; pass window_size explicitly")
  n, rows = int(source[index_key].shape[0]), int(source[table_key].shape[0])
  cands = _windows(n, rows)
  index = source[index_key]
  if _is_array(index):
    cands = [w for w in cands if np.array_equal(np.asarray(index), relative_position_index(w))]
  else:
    cands = [w for w in cands if w[1] == w[2]] or cands
  if len(cands) != 1:
    raise ValueError(f"video swin: {index_key} {tuple(index.shape)} and {table_key} "
                     f"{tuple(source[table_key].shape)} fit windows {cands}, not exactly one")
  return cands[0]


def check_index(source: Mapping[str, Any], src: str, window: tuple[int, int, int]) -> None:
  """Every stored relative_position_index (real arrays only) equals the recomputed one."""
  want = relative_position_index(tuple(window))
  for key, value in source.items():
    if re.fullmatch(src + INDEX, key) and _is_array(value):
      if not np.array_equal(np.asarray(value), want):
        raise ValueError(f"video swin: {key} differs from the relative-position index of window "
                         f"{tuple(window)}; the checkpoint's attention geometry is not the "
                         "reference's")


def infer_config(source: Mapping[str, Any], src: str) -> dict[str, Any]:
  """VideoSwin kwargs read from the shapes of the keys under regex prefix `src`: embed_dim,
  in_chans and patch_size (patch conv), depths (blocks per layer), num_heads (bias-table widths),
  window_size (table / index sizes), mlp_ratio (fc1), qkv_bias (qkv.bias present)."""
  def key(pattern: str) -> str | None:
    return next((k for k in source if re.fullmatch(src + pattern, k)), None)

  conv = key(r"patch_embed\.proj\.weight")
  if conv is None:
    raise ValueError(f"video swin: no patch_embed.proj.weight under prefix {src!r}")
  embed_dim, in_chans, *patch = (int(s) for s in source[conv].shape)
  blocks: dict[int, set[int]] = {}
  heads: dict[int, int] = {}
  rx = re.compile(src + r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table")
  for k, v in source.items():
    if m := rx.fullmatch(k):
      i, j = int(m.group(1)), int(m.group(2))
      blocks.setdefault(i, set()).add(j)
      if heads.setdefault(i, int(v.shape[1])) != int(v.shape[1]):
        raise ValueError(f"video swin: layer {i} blocks have different head counts")
  if not blocks or sorted(blocks) != list(range(len(blocks))):
    raise ValueError(f"video swin: layers {sorted(blocks)} under prefix {src!r} are not 0..n-1")
  depths = [len(blocks[i]) for i in range(len(blocks))]
  for i, d in enumerate(depths):
    if sorted(blocks[i]) != list(range(d)):
      raise ValueError(f"video swin: layer {i} has blocks {sorted(blocks[i])}, not 0..{d - 1}")
  fc1 = source[key(r"layers\.0\.blocks\.0\.mlp\.fc1\.weight")]
  window = infer_window(source, src)
  check_index(source, src, window)
  return dict(embed_dim=embed_dim, depths=tuple(depths),
              num_heads=tuple(heads[i] for i in range(len(depths))), window_size=window,
              patch_size=tuple(patch), in_chans=in_chans,
              mlp_ratio=int(fc1.shape[0]) / embed_dim,
              qkv_bias=key(r"layers\.0\.blocks\.0\.attn\.qkv\.bias") is not None)

"""Converter rules for vlx/layers/dvae.py from the `state_dict()` keys of a `dall_e.Encoder`.

Source keys (facts of the package, spec §9): blocks.input.{w,b}, blocks.group_G.block_K.{id_path,
res_path.conv_1..conv_4}.{w,b} (id_path only when the width changes), blocks.output.conv.{w,b}.
Every conv weight is OIHW ([n_out, n_in, kw, kw]) -> kernel HWIO; biases copy.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vlx.convert import hooks as hk
from vlx.convert.errors import WrongFamilyError
from vlx.convert.rules import Rule


def _conv(src: str, dst: str) -> list[Rule]:
  return [Rule(src + r"\.w", dst + "/kernel", hk.conv2d), Rule(src + r"\.b", dst + "/bias")]


def encoder(src: str, dst: str) -> list[Rule]:
  """dall_e Encoder keys under regex prefix `src` (e.g. '' or r'dvae\\.') -> a DalleEncoder at nnx
  path prefix `dst` (e.g. '' or 'dvae/'). `src` must not contain regex groups."""
  block = src + r"blocks\.group_(\d+)\.block_(\d+)\."
  return [*_conv(src + r"blocks\.input", dst + "input"),
          *_conv(block + "id_path", dst + r"group_\1/block_\2/id_path"),
          *_conv(block + r"res_path\.conv_(\d+)", dst + r"group_\1/block_\2/res_path/conv_\3"),
          *_conv(src + r"blocks\.output\.conv", dst + "output")]


def _shape(source: Mapping[str, Any], key: str) -> tuple[int, ...]:
  if key not in source:
    raise WrongFamilyError(f"not a DALL-E encoder state dict: missing key {key!r}")
  return tuple(int(d) for d in source[key].shape)


def infer_config(source: Mapping[str, Any], src: str = "") -> dict[str, int]:
  """DalleEncoder kwargs (n_hid, n_blk_per_group, input_channels, vocab_size, group_count) read
  from the weight shapes of the keys under the plain-text prefix `src` (e.g. '' or 'dvae.')."""
  n_hid, input_channels = _shape(source, f"{src}blocks.input.w")[:2]
  vocab_size = _shape(source, f"{src}blocks.output.conv.w")[0]
  rx = re.compile(re.escape(src) + r"blocks\.group_(\d+)\.block_(\d+)\.")
  found = {(int(m[1]), int(m[2])) for k in source if (m := rx.match(k))}
  if not found:
    raise WrongFamilyError(f"not a DALL-E encoder state dict: no {src}blocks.group_*.block_* keys")
  group_count = max(g for g, _ in found)
  n_blk = max(b for _, b in found)
  if found != {(g, b) for g in range(1, group_count + 1) for b in range(1, n_blk + 1)}:
    raise WrongFamilyError(f"DALL-E encoder state dict: groups/blocks are not a full "
                           f"{group_count}x{n_blk} grid: {sorted(found)}")
  return dict(n_hid=n_hid, n_blk_per_group=n_blk, input_channels=input_channels,
              vocab_size=vocab_size, group_count=group_count)

"""Converter rules for vlx/layers/dvae.py from the `state_dict()` keys of a `dall_e.Encoder`.

Source keys (facts of the package, spec §9): blocks.input.{w,b}, blocks.group_G.block_K.{id_path,
res_path.conv_1..conv_4}.{w,b} (id_path only when the width changes), blocks.output.conv.{w,b}.
Every conv weight is OIHW ([n_out, n_in, kw, kw]) -> kernel HWIO; biases copy.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vlx.convert import hooks as hk
from vlx.convert.errors import ConversionError, WrongFamilyError
from vlx.convert.rules import Rule
from vlx.layers import dvae


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


def load_encoder(source: str | os.PathLike | Mapping[str, Any], *, src: str = "",
                 dtype: Any = None) -> dvae.DalleEncoder:
  """A DalleEncoder filled from a dall_e Encoder's weights: a file (OpenAI's whole-module
  encoder.pkl, read without running it, or a saved state dict) or a {key: array} mapping, keys
  under the plain-text prefix `src`. Sizes come from the shapes; strict: every key under `src`
  maps and every variable is filled (ConversionError otherwise). Nothing is randomly initialised."""
  from vlx.convert import engine, torch_io  # pylint: disable=import-outside-toplevel
  what = os.fspath(source) if not isinstance(source, Mapping) else "state dict"
  sd = torch_io.load_state_dict(source) if not isinstance(source, Mapping) else source
  sd = {k: v for k, v in sd.items() if k.startswith(src)}
  cfg = infer_config(sd, src)
  build = lambda c, rngs: dvae.DalleEncoder(**c, dtype=dtype, rngs=rngs)
  graphdef, state = nnx.split(engine.abstract_model(build, cfg))
  flat = list(nnx.to_flat_state(state))
  targets = {"/".join(map(str, p)): v.get_value() for p, v in flat}
  m = engine.map_keys(sd, encoder(re.escape(src), ""), targets, what=what)
  m.check(f"{what}: ", "dVAE rules name variables the encoder does not have")
  missing = sorted(set(targets) - set(m.filled))
  if m.unmapped or missing:
    raise ConversionError(f"{what}: not a complete DALL-E encoder: unmapped keys "
                          f"{m.unmapped[:10]}; unfilled variables {missing[:10]}")
  new = [(p, v.replace(jnp.asarray(np.asarray(m.filled["/".join(map(str, p))],
                                              v.get_value().dtype)))) for p, v in flat]
  return nnx.merge(graphdef, nnx.from_flat_state(new))

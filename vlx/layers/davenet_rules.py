"""Converter rules for vlx/layers/davenet.py (the reference ResDavenet's key names).

Source keys under a prefix: conv1.weight [C0, 1, mel, 1]; bn1.*; layerK.I.{conv1, bn1, conv2, bn2}
(K = 1..stages, convs [out, in, 1, k]) and layerK.0.downsample.{0 (conv [out, in, 1, 1]), 1 (BN)};
batchnorm1.* exists but is unused in the reference forward. BatchNorm: weight -> scale, bias,
running_mean -> mean, running_var -> var; num_batches_tracked is a counter (dropped).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vlx.convert.rules import Rule


def conv_weight(x: Any) -> Any:
  """torch Conv2d [out, in, 1, k] (height 1) -> 1-D conv kernel [k, in, out]."""
  if x.ndim != 4 or x.shape[2] != 1:
    raise ValueError(f"DAVEnet conv weight must be [out, in, 1, k], got {tuple(x.shape)}")
  return x[:, :, 0, :].transpose(2, 1, 0)


def mel_weight(x: Any) -> Any:
  """First conv [out, 1, mel, 1] -> 1-D conv kernel [1, mel, out] (a projection of the bins)."""
  if x.ndim != 4 or x.shape[1] != 1 or x.shape[3] != 1:
    raise ValueError(f"DAVEnet conv1 weight must be [out, 1, mel, 1], got {tuple(x.shape)}")
  return x[:, 0, :, 0].T[None]


def batch_norm(src: str, dst: str) -> list[Rule]:
  names = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))
  return [Rule(src + r"\." + a, f"{dst}/{b}") for a, b in names]


def davenet(src: str, dst: str) -> list[Rule]:
  """Rules for a ResDavenet under regex prefix `src` (no groups) -> DAVEnet at `dst` ('/'-ended)."""
  out = [Rule(src + r"conv1\.weight", dst + "conv1/kernel", mel_weight),
         *batch_norm(src + "bn1", dst + "bn1")]
  # layerK (1-based) -> stages/K-1: a group cannot do arithmetic, so one rule set per stage.
  for k in range(1, 17):
    b = src + rf"layer{k}\.(\d+)\."
    d = dst + f"stages/{k - 1}/" + r"\1/"
    out += [Rule(b + r"(conv1|conv2)\.weight", d + r"\2/kernel", conv_weight),
            *[Rule(b + r"(bn1|bn2)\." + a, d + rf"\2/{t}") for a, t in
              (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
               ("running_var", "var"))],
            Rule(b + r"downsample\.0\.weight", d + "down_conv/kernel", conv_weight),
            *batch_norm(b + r"downsample\.1", d + "down_bn")]
  return out


def unused(src: str) -> dict[str, str]:
  return {src + r"(?:.*\.)?num_batches_tracked": "BatchNorm step counter (momentum is fixed)",
          src + r"batchnorm1\.(?:weight|bias|running_mean|running_var)":
              "batchnorm1 is created but never applied in the reference forward"}


def infer_config(source: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """feat_dim, layers, widths and kernel from the weight shapes under the literal `prefix`."""
  conv1 = source.get(prefix + "conv1.weight")
  if conv1 is None:
    raise ValueError(f"no DAVEnet key {prefix}conv1.weight")
  rx = re.compile(re.escape(prefix) + r"layer(\d+)\.(\d+)\.conv1\.weight")
  blocks: dict[int, int] = {}
  widths: dict[int, int] = {}
  kernel = 0
  for k, v in source.items():
    m = rx.fullmatch(k)
    if m:
      s, i = int(m.group(1)), int(m.group(2))
      blocks[s] = max(blocks.get(s, 0), i + 1)
      widths[s] = int(v.shape[0])
      kernel = int(v.shape[3])
  if not blocks or sorted(blocks) != list(range(1, len(blocks) + 1)):
    raise ValueError(f"DAVEnet stages under {prefix!r} are not layer1..layerN: {sorted(blocks)}")
  n = len(blocks)
  return dict(feat_dim=int(conv1.shape[2]), layers=tuple(blocks[s] for s in range(1, n + 1)),
              widths=(int(conv1.shape[0]),) + tuple(widths[s] for s in range(1, n + 1)),
              kernel=kernel)

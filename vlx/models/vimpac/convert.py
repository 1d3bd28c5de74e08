"""VIMPAC converter rules (vlx/convert/engine.py API): released `classifier.pt` state dicts (and
backbone-only / fine-tuned ones) -> the vlx Vimpac tree (spec §2, §4, §6).

The architecture comes from the shapes (width, depth, stage structure of the layout, halving,
positional-table kind and sizes, heads) and from `args.pickle` next to the checkpoint, read with a
restricted unpickler that admits only `argparse.Namespace` holding plain values (a payload is
refused before anything runs), or `args.txt` (a pprint of the same dict, read as a literal).
When the model config asks for another clip length / frame size than the checkpoint's tables,
the positional tables are linearly interpolated as the reference's `--different-shape` (spec §4).
Tied duplicates: `mlm_head.decoder.weight` is `backbone.embedding.weight` and
`mlm_head.decoder.bias` is `mlm_head.bias` (both names stored; vlx keeps one copy).
"""
from __future__ import annotations

import ast
import math
import os
import pathlib
import pickle
from collections.abc import Mapping
from typing import Any

import ml_collections

from vlx.convert import hooks as hk
from vlx.convert.errors import ConversionError, UnsafeCheckpointError, WrongFamilyError
from vlx.convert.rules import Rule, Tied, linear, norm
from vlx.models.vimpac.model import (EXTRA_ROWS, build, interpolate_linear,  # noqa: F401
                                     model_config)

VARIANTS = ("small", "large_frame128", "large_frame256", "other")
B = r"backbone\."
R = B + r"transformer\.resblocks\.(\d+)\."
_POS = "backbone.positional_embedding."
# Stage structures of the reference's layout choices (vimpac/param.py): unique per structure.
_LAYOUTS = {(1, 2): "T,H|W", (1, 1, 1): "T,H,W", (3,): "T|H|W", (2, 1): "H|W,T", (1, 1): "T,H",
            (1,): "T"}
# args fields that rebuild the architecture (finetune.py's override list plus the heads' sizes)
_ARGS = {"model": "layout", "pos_emb": "pos_emb", "pre_activation": "pre_activation",
         "layers": "layers", "hid_dim": "hidden", "halve_mlp": "halve_mlp",
         "halve_att": "halve_att", "frame_size": "frame_size", "clip_len": "clip_len",
         "vocab_size": "vocab_size", "dropout": "dropout", "nce_proj_layers": "nce_proj_layers",
         "nce_proj_hid_dim": "nce_proj_hid_dim", "mask_blocks": "mask_blocks"}
_PLAIN = (type(None), bool, int, float, str)


def _shape(source: Mapping[str, Any], key: str) -> tuple[int, ...]:
  if key not in source:
    raise ConversionError(f"VIMPAC checkpoint has no key {key!r}")
  return tuple(int(d) for d in source[key].shape)


def detect_variant(keys) -> str:
  names = set(map(str, keys))
  if "backbone.embedding.weight" not in names or "backbone.cls_param" not in names:
    raise WrongFamilyError("not a VIMPAC checkpoint: keys backbone.embedding.weight / "
                           f"backbone.cls_param are missing (got e.g. {sorted(names)[:5]})")
  return "other"


def detect_variant_from_shapes(source: Mapping[str, Any]) -> str:
  """small / large_frame128 / large_frame256 by width and height table; anything else 'other'."""
  detect_variant(source)
  dim = _shape(source, "backbone.embedding.weight")[1]
  h = (_shape(source, _POS + "height_pos_embedding")[0]
       if _POS + "height_pos_embedding" in source else 0)
  if dim == 512 and h == 16:
    return "small"
  if dim == 1024 and h in (16, 32):
    return f"large_frame{8 * h}"
  return "other"


def _stages(source: Mapping[str, Any]) -> tuple[int, ...]:
  """Parallel patterns per sequential stage of layer 0."""
  pre = "backbone.transformer.resblocks.0.attention_blocks."
  counts: dict[int, set] = {}
  for k in source:
    if k.startswith(pre) and ".attentions." in k:
      stage, _, pat = k[len(pre):].split(".")[:3]
      counts.setdefault(int(stage), set()).add(int(pat))
  return tuple(len(counts[i]) for i in sorted(counts))


def infer_model_config(source: Mapping[str, Any], variant: str) -> ml_collections.ConfigDict:
  """Every size the shapes determine. A `default` positional table only gives L*H*W: the largest
  square token map is assumed (args.pickle's clip_len / frame_size override it)."""
  if variant not in VARIANTS:
    raise ConversionError(f"unknown VIMPAC variant {variant!r}; expected one of {VARIANTS}")
  detect_variant(source)
  c = model_config("")
  rows, dim = _shape(source, "backbone.embedding.weight")
  c.vocab_size, c.hidden = rows - EXTRA_ROWS, dim
  c.layers = len({k.split(".")[3] for k in source if k.startswith("backbone.transformer.")})
  stages = _stages(source)
  if stages not in _LAYOUTS:
    raise ConversionError(f"VIMPAC checkpoint: attention stages with {stages} patterns match no "
                          "reference layout")
  c.layout = _LAYOUTS[stages]
  c.pre_activation = "backbone.ln_post.weight" in source
  q = _shape(source, "backbone.transformer.resblocks.0.attention_blocks.0.attentions.0."
             "attention.query.weight")[0]
  c.halve_att = q * stages[0] * 2 == dim
  c.halve_mlp = _shape(source, "backbone.transformer.resblocks.0.mlp.c_fc.weight")[0] == 2 * dim
  if _POS + "height_pos_embedding" in source:
    c.pos_emb = "hw_separation"
    c.frame_size = 8 * _shape(source, _POS + "height_pos_embedding")[0]
  elif _POS + "spatial_pos_embedding" in source:
    c.pos_emb = "temporal_separation"
    c.frame_size = 8 * math.isqrt(_shape(source, _POS + "spatial_pos_embedding")[0])
  else:   # one flat table: the largest square token map that divides it (args.pickle decides)
    c.pos_emb = "default"
    n = _shape(source, _POS + "positional_embedding")[0] - 1
    side = max(s for s in range(1, math.isqrt(n) + 1) if n % (s * s) == 0)
    c.clip_len, c.frame_size = n // (side * side), 8 * side
  if _POS + "temporal_pos_embedding" in source:
    c.clip_len = _shape(source, _POS + "temporal_pos_embedding")[0]
  c.mlm_head = "mlm_head.bias" in source
  linears = sorted({k.split(".")[2] for k in source if k.startswith("cls_head.mlp.linear_")})
  c.nce_head = bool(linears)
  if linears:
    c.nce_proj_layers = len(linears)
    c.nce_proj_hid_dim = _shape(source, "cls_head.mlp.linear_0.weight")[0]
  c.num_classes = _shape(source, "cls_fc.weight")[0] if "cls_fc.weight" in source else 0
  return c


def _pos_hook(name: str, cfg: ml_collections.ConfigDict) -> hk.Hook:
  """Linear interpolation of one positional table to the model's (L, H, W) (spec §4)."""
  length, side = cfg.clip_len, cfg.frame_size // 8
  rows = {"temporal_pos_embedding": length, "height_pos_embedding": side,
          "width_pos_embedding": side, "spatial_pos_embedding": side * side,
          "positional_embedding": 1 + length * side * side}.get(name)
  if rows is None:
    return hk.identity
  return lambda t: interpolate_linear(t, rows)


def rules(variant: str, model_config: ml_collections.ConfigDict) -> list[Rule]:
  if variant not in VARIANTS:
    raise ConversionError(f"unknown VIMPAC variant {variant!r}; expected one of {VARIANTS}")
  att = R + r"attention_blocks\.(\d+)\."
  out = [Rule(B + r"cls_param", "backbone/cls_param"),
         Rule(B + r"embedding\.weight", "backbone/embedding/embedding"),
         *[Rule(B + r"positional_embedding\." + n, f"backbone/positional_embedding/{n}",
                _pos_hook(n, model_config))
           for n in ("cls_pos_embedding", "temporal_pos_embedding", "height_pos_embedding",
                     "width_pos_embedding", "spatial_pos_embedding", "positional_embedding")],
         *norm(B + r"ln_(?:pre|post)", "backbone/norm"),
         *linear(att + r"attentions\.(\d+)\.attention\.(query|key|value)",
                 r"backbone/resblocks/\1/attention_blocks/\2/attentions/\3/\4"),
         *linear(att + r"(?:output\.)?dense", r"backbone/resblocks/\1/attention_blocks/\2/dense"),
         *norm(att + r"(?:output\.)?LayerNorm", r"backbone/resblocks/\1/attention_blocks/\2/norm"),
         *linear(R + r"mlp\.(c_fc|c_proj)", r"backbone/resblocks/\1/\2"),
         *norm(R + r"ln", r"backbone/resblocks/\1/ln"),
         Rule(r"mlm_head\.bias", "mlm_head/bias"),
         *linear(r"mlm_head\.transform\.0", "mlm_head/dense"),
         *norm(r"mlm_head\.transform\.2", "mlm_head/norm"),
         *linear(r"cls_head\.mlp\.linear_(\d+)", r"cls_head/linears/\1"),
         *norm(r"cls_head\.mlp\.bn_(\d+)", r"cls_head/bns/\1"),
         Rule(r"cls_head\.mlp\.bn_(\d+)\.running_mean", r"cls_head/bns/\1/mean"),
         Rule(r"cls_head\.mlp\.bn_(\d+)\.running_var", r"cls_head/bns/\1/var"),
         *linear(r"cls_fc", "cls_fc")]
  return out


def tied(variant: str) -> list[Tied]:
  return [Tied(r"mlm_head\.decoder\.weight", "backbone.embedding.weight",
               "the mask-prediction decoder is the input embedding"),
          Tied(r"mlm_head\.decoder\.bias", "mlm_head.bias", "the decoder bias is mlm_head.bias")]


def unused(variant: str) -> dict[str, str]:
  return {r"cls_head\.mlp\.bn_\d+\.num_batches_tracked":
              "BatchNorm step counter (momentum 0.1 is fixed, the count is never read)"}


# -- args.pickle / args.txt -----------------------------------------------------------------------
class _Namespace:
  """Inert stand-in for argparse.Namespace: unpickling only fills its attribute dict."""

  def __setstate__(self, state: Any) -> None:
    if not isinstance(state, dict):
      raise pickle.UnpicklingError("argparse.Namespace state is not a dict")
    self.__dict__.update(state)


class _ArgsUnpickler(pickle.Unpickler):
  def find_class(self, module: str, name: str) -> Any:
    if (module, name) == ("argparse", "Namespace"):
      return _Namespace
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

  def persistent_load(self, pid: Any) -> Any:
    raise pickle.UnpicklingError("persistent ids are not allowed")


def _plain(value: Any) -> bool:
  if isinstance(value, (list, tuple)):
    return all(_plain(v) for v in value)
  return isinstance(value, _PLAIN)


def read_args(path: str | os.PathLike) -> dict[str, Any]:
  """The reference's args (a dict of plain values) from args.pickle or args.txt; a pickle naming
  anything but argparse.Namespace, or holding non-plain values, raises UnsafeCheckpointError
  before any of it is constructed or called."""
  path = pathlib.Path(path)
  if path.suffix == ".txt":
    try:
      args = ast.literal_eval(path.read_text())
    except (ValueError, SyntaxError) as e:
      raise ConversionError(f"{path}: not a pprint of the reference's args dict ({e})") from None
  else:
    try:
      with open(path, "rb") as f:
        obj = _ArgsUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
      raise UnsafeCheckpointError(f"{path}: refused: only a pickled argparse.Namespace of plain "
                                  f"values is read ({e}); nothing was run") from None
    if not isinstance(obj, _Namespace):
      raise UnsafeCheckpointError(f"{path}: refused: holds a {type(obj).__name__}, not an "
                                  "argparse.Namespace; nothing was run")
    args = dict(vars(obj))
  if not isinstance(args, dict) or not all(isinstance(k, str) and _plain(v)
                                           for k, v in args.items()):
    raise UnsafeCheckpointError(f"{path}: refused: the args are not a dict of plain values")
  return args


def overrides_from_args(args: Mapping[str, Any]) -> dict[str, Any]:
  """Model-config fields from the reference's args (those the reference's fine-tuning reads)."""
  out = {}
  for name, field in _ARGS.items():
    if args.get(name) is not None:
      value = args[name]
      out[field] = value[len("efflayout"):] if name == "model" and isinstance(value, str) \
          and value.startswith("efflayout") else value
  return out


def _args_file(folder: pathlib.Path) -> pathlib.Path | None:
  for name in ("args.pickle", "args.txt"):
    if (folder / name).is_file():
      return folder / name
  return None


def read_checkpoint(path) -> tuple[dict[str, Any], str, dict[str, Any]]:
  """(flat state dict, variant, model-config overrides from args.pickle / args.txt) of a release
  folder (classifier.pt + args.pickle) or of a classifier.pt with its args beside it."""
  from vlx.convert import torch_io  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if path.is_dir():
    ckpt = next((path / n for n in ("classifier.pt", "checkpoint.pt") if (path / n).is_file()),
                None)
    if ckpt is None:
      raise ConversionError(f"{path}: no classifier.pt in this folder")
  else:
    ckpt = path
  args_path = _args_file(ckpt.parent)
  overrides = overrides_from_args(read_args(args_path)) if args_path else {}
  source = dict(torch_io.load_state_dict(ckpt))
  return source, detect_variant_from_shapes(source), overrides

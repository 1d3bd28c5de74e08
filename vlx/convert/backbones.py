"""Initialisation from public backbones (training from scratch, ALPRO spec §11).

The reference starts pre-training from `bert-base-uncased` (a Hugging Face folder) and timm's
ImageNet `vit_base_patch16_224`; this module fills the matching parts of a model state through the
converter's rule engine, with explicit partial-load semantics:
  * every source key is mapped or declared unused with a reason (anything else is an error);
  * every target variable the backbones do not cover is listed in the report (`kept_init`),
    grouped, with the reason it keeps its fresh initialisation.
Where the BERT / ViT parts sit, and what else a family needs (TimeSformer temporal copies, zeroed
tables, pos_embed resizing, refusing BERT), is the family's `Layout` (`Family.backbone_layout`,
e.g. ALPRO: attn/norm1 also fill temporal_attn/temporal_norm, time_embed and temporal_fc start at
zero, spec §11; All-in-one: the DeiT fills transformer/*, pos_embed's grid is resized bilinearly,
no BERT; VIOLET: the BERT embeddings and layers sit at two separate prefixes and the MLM head has
its own decoder, spec §4, §5.1). BERT layers 0..L-1 fill text and fusion layers alike (one BERT).

  state["params"], report = init_from_backbones(state["params"], layout=family.backbone_layout,
                                                bert_dir=..., vit_file=...)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vlx.convert import torch_io
from vlx.convert.engine import map_keys
from vlx.convert.errors import (CheckpointNotFoundError, ConversionError, ShapeMismatchError,
                                WrongFamilyError)
from vlx.layers import bert_rules, vit_rules
from vlx.optim import path_str

BERT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the shared BERT / ViT blocks sit in a family's module tree (`Family.backbone_layout`).

  text / mlm_head / video: path prefixes (ending '/') of the BertEncoder, MlmHead and ViT-like
  video tower; patch_embed: the patch convolution under `video`; temporal_attn: TimeSformer
  blocks, whose temporal_attn / temporal_norm are filled from attn / norm1 too; zeros: regex (under
  `video`) of variables that start at zero, with zeros_reason; resize_pos: resize pos_embed's patch
  grid to the model's; no_bert: why init.bert_dir is refused ("" = accepted); vit_hint: appended to
  a distilled/plain ViT mismatch error (which timm file each size expects); reasons: (first path
  component, why that model part keeps its fresh init) for the report.
  text_embeddings / text_layers: where BERT's embeddings and encoder.layer.N go when they are not
  a BertEncoder's `text`embeddings/ and `text`layers/N/ ("" = those); untied_mlm_decoder: the
  MlmHead has its own decoder kernel [hidden, vocab], filled from cls.predictions.decoder.weight
  (transposed) or, when the file has none, from the word embeddings (what tying gives); no_vit:
  why init.vit_file is refused ("" = accepted).
  """
  text: str = "text/"
  mlm_head: str = "mlm_head/"
  video: str = "video/"
  patch_embed: str = "patch_embed/proj"
  temporal_attn: bool = False
  zeros: str = ""
  zeros_reason: str = ""
  resize_pos: bool = False
  no_bert: str = ""
  vit_hint: str = ""
  reasons: tuple[tuple[str, str], ...] = ()
  text_embeddings: str = ""
  text_layers: str = ""
  untied_mlm_decoder: bool = False
  no_vit: str = ""

  @property
  def bert_embeddings(self) -> str:
    """Target prefix of the BERT embeddings (ending '/')."""
    return self.text_embeddings or self.text + "embeddings/"

  @property
  def bert_layers(self) -> str:
    """Target prefix of the BERT layers: layer N goes to this + 'N/'."""
    return self.text_layers or self.text + "layers/"

  def in_bert(self, path: str) -> bool:
    """Whether `path` is a text-side variable a BERT file fills (MLM head excluded)."""
    return path.startswith(tuple(p for p in (self.text, self.text_embeddings, self.text_layers)
                                 if p))


# -- reading the sources -------------------------------------------------------------------------
def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{key: np.ndarray} of a .safetensors file; bfloat16/float16 become float32."""
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointNotFoundError(f"weights file not found: {path}")
  out = {}
  try:
    with safe_open(path, framework="np") as f:
      for key in f.keys():
        out[key] = f.get_tensor(key)
  except (TypeError, ValueError):  # numpy has no bfloat16: read through torch
    with safe_open(path, framework="pt") as f:
      out = {key: torch_io.to_numpy(f.get_tensor(key)) for key in f.keys()}
  except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
    raise ConversionError(f"{path}: not a readable .safetensors file ({e})") from None
  return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in out.items()}


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """.safetensors through safetensors; .bin/.pth/.pt/.ckpt through the safe torch loader."""
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  return torch_io.load_state_dict(path)


def read_bert_dir(bert_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict, str]:
  """(state dict, config.json, weights path) of a local Hugging Face BERT folder."""
  d = pathlib.Path(bert_dir)
  if not d.is_dir():
    raise CheckpointNotFoundError(f"init.bert_dir={os.fspath(bert_dir)!r}: not a directory "
                                  "(expected a Hugging Face BERT folder: config.json + "
                                  f"{' or '.join(BERT_WEIGHTS)})")
  cfg_path = d / "config.json"
  if not cfg_path.is_file():
    raise ConversionError(f"init.bert_dir={d}: no config.json (expected a Hugging Face BERT "
                          "folder, e.g. a local copy of bert-base-uncased)")
  try:
    config = json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise ConversionError(f"{cfg_path}: not valid JSON ({e})") from None
  if config.get("model_type", "bert") != "bert":
    raise WrongFamilyError(f"{cfg_path}: model_type={config.get('model_type')!r}, expected "
                           "'bert' (the text encoder is a Hugging Face BERT)")
  weights = next((d / n for n in BERT_WEIGHTS if (d / n).is_file()), None)
  if weights is None:
    present = sorted(p.name for p in d.iterdir())
    raise CheckpointNotFoundError(f"init.bert_dir={d}: no {' or '.join(BERT_WEIGHTS)} (found "
                                  f"{present}); TF/Flax-only folders are not supported")
  return read_weights(weights), config, os.fspath(weights)


def _check_bert_config(config: dict, targets: Mapping[str, Any], layout: Layout, where: str,
                       model_config: Any | None) -> None:
  """Sizes in config.json against the model (clear message naming both fields)."""
  e, t = layout.bert_embeddings, layout.bert_layers
  checks = [("vocab_size", f"{e}word/embedding", 0, "model.text.vocab_size"),
            ("hidden_size", f"{e}word/embedding", 1, "model.text.hidden_size"),
            ("max_position_embeddings", f"{e}position/embedding", 0,
             "model.text.max_position_embeddings"),
            ("type_vocab_size", f"{e}token_type/embedding", 0,
             "model.text.type_vocab_size"),
            ("intermediate_size", f"{t}0/mlp/fc1/kernel", 1, "model.text.intermediate_size")]
  for field, path, axis, name in checks:
    if field in config and path in targets and int(config[field]) != targets[path].shape[axis]:
      raise ShapeMismatchError(f"{where}: {field}={config[field]} but the model has {name}="
                               f"{targets[path].shape[axis]}")
  layers = _count(targets, re.escape(t) + r"(\d+)/")
  if "num_hidden_layers" in config and int(config["num_hidden_layers"]) != layers:
    raise ShapeMismatchError(f"{where}: num_hidden_layers={config['num_hidden_layers']} but the "
                             f"model has model.text.num_layers={layers} (BERT layers fill text "
                             "and fusion layers alike, so the counts must be equal)")
  if config.get("hidden_act", "gelu") != "gelu":
    raise ConversionError(f"{where}: hidden_act={config['hidden_act']!r}; the vlx BERT uses the "
                          "exact (erf) 'gelu'")
  if model_config is not None:
    text = model_config.text
    for field, mine in (("num_attention_heads", "num_heads"), ("layer_norm_eps", "ln_eps")):
      if field in config and float(config[field]) != float(text[mine]):
        raise ConversionError(f"{where}: {field}={config[field]} but model.text.{mine}="
                              f"{text[mine]} (not visible in the weights: set the model field)")


def _count(names, pattern: str) -> int:
  rx = re.compile(pattern)
  idx = [int(m.group(1)) for k in names if (m := rx.match(k))]
  return max(idx) + 1 if idx else 0


def _check_vit(source: Mapping[str, Any], targets: Mapping[str, Any], layout: Layout,
               where: str) -> None:
  """A timm ViT state dict whose depth matches the model (other layouts get a pointed error)."""
  keys = list(source)
  if any(k.startswith("visual_encoder.") for k in keys):
    raise WrongFamilyError(f"{where}: this is a released video-language checkpoint "
                           "(visual_encoder.* keys), not an ImageNet ViT; convert it with "
                           "`python -m vlx.convert` and use init.from_converted")
  if any(".temporal_attn." in k for k in keys):
    raise WrongFamilyError(f"{where}: this is a TimeSformer checkpoint (temporal_attn keys), not "
                           "an ImageNet ViT state dict")
  need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight")
  if not all(k in source for k in need):
    raise WrongFamilyError(f"{where}: not a timm ViT state dict (expected keys {list(need)}, got "
                           f"e.g. {sorted(keys)[:6]}); export timm's vit_base_patch16_224 "
                           "with torch.save(model.state_dict(), path)")
  has_dist, wants = "dist_token" in source, layout.video + "dist_token" in targets
  if has_dist != wants:
    raise WrongFamilyError(f"{where}: the file {'is' if has_dist else 'is not'} a distilled DeiT "
                           f"(dist_token) but the model {'has' if wants else 'has no'} "
                           f"dist_token (model.distilled){layout.vit_hint}")
  depth = _count(keys, r"blocks\.(\d+)\.")
  blocks = _count(targets, re.escape(layout.video) + r"blocks/(\d+)/")
  if depth != blocks:
    raise ShapeMismatchError(f"{where}: the ViT has {depth} blocks but the model has "
                             f"model.video.depth={blocks}")


def _pos_hook(source: Mapping[str, Any], targets: Mapping[str, Any], layout: Layout):
  """pos_embed resize to the model's patch grid (layouts with resize_pos), else None."""
  target = targets.get(layout.video + "pos_embed")
  if not layout.resize_pos or target is None:
    return None
  prefix = 2 if "dist_token" in source else 1
  grid = math.isqrt(target.shape[1] - prefix)
  return vit_rules.resize_pos_embed(grid, prefix)


# -- the state ------------------------------------------------------------------------------------
def _place(value: np.ndarray, like: Any) -> Any:
  """`value` with the dtype of `like`, on its sharding when it has one (multi-host safe)."""
  dtype = np.dtype(like.dtype)
  arr = np.asarray(value, dtype=dtype)
  sharding = getattr(like, "sharding", None)
  if sharding is not None:
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])
  return jnp.asarray(arr)


def _zero_targets(targets: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
  """Video parts without an ImageNet counterpart that start at zero (layout.zeros)."""
  if not layout.zeros:
    return {}
  rx = re.compile(re.escape(layout.video) + layout.zeros)
  return {k: np.zeros(v.shape, np.dtype(v.dtype)) for k, v in targets.items() if rx.fullmatch(k)}


def _group(path: str, layout: Layout) -> str:
  """Report granularity: `video/blocks`, `text/layers`, ... inside the backbones, else top level."""
  parts = path.split("/")
  for prefix in (layout.text_embeddings, layout.text_layers):
    if prefix and path.startswith(prefix):
      return prefix.rstrip("/")
  inside = path.startswith((layout.video, layout.text)) and len(parts) > 2
  return "/".join(parts[:2]) if inside else parts[0]


def init_from_backbones(state: Any, *, layout: Layout, bert_dir: str | None = None,
                        vit_file: str | None = None, model_config: Any | None = None
                        ) -> tuple[Any, dict[str, Any]]:
  """Fills `state` (nnx.State / pytree of arrays or ShapeDtypeStructs) from the given backbones.

  Empty strings count as "not given" (config defaults), so the loop can always call it.
  Returns (state with the same structure, report); report keys: sources, initialised {target:
  source}, unused {source key: reason}, kept_init {group: {count, reason}}, kept_init_paths.
  `model_config` (optional, config.model) also checks what the weights cannot show (head count).
  `layout`: the family's `Family.backbone_layout`.
  """
  flat, treedef = jax.tree_util.tree_flatten_with_path(state)
  names = [path_str(p) for p, _ in flat]
  targets = dict(zip(names, (leaf for _, leaf in flat)))
  if not isinstance(layout, Layout):
    raise ConversionError("initialising from public backbones (init.bert_dir / init.vit_file) "
                          "needs the model family's backbone_layout; this family declares none")
  if bert_dir and layout.no_bert:
    raise ConversionError(f"init.bert_dir={os.fspath(bert_dir)!r}: {layout.no_bert}")
  if vit_file and layout.no_vit:
    raise ConversionError(f"init.vit_file={os.fspath(vit_file)!r}: {layout.no_vit}")
  filled: dict[str, Any] = {}
  origin: dict[str, str] = {}
  report: dict[str, Any] = {"sources": {}, "unused": {}}

  def absorb(mapped, tag: str, where: str) -> None:
    if mapped.unmapped:
      raise ConversionError(f"{where}: {len(mapped.unmapped)} key(s) match no rule and are not "
                            f"declared unused: {mapped.unmapped[:10]}")
    mapped.check(f"{where}: ", "the model has no variable for these targets (does the model "
                 "match the backbone?)")
    filled.update(mapped.filled)
    report["unused"].update({f"{tag}:{k}": r for k, r in mapped.unused.items()})

  if bert_dir:
    source, config, wpath = read_bert_dir(bert_dir)
    _check_bert_config(config, targets, layout, f"{bert_dir}/config.json", model_config)
    rules, unused, tied, fmt = bert_rules.hf_bert(
        source, layout.text, layout.mlm_head,
        has_mlm=any(n.startswith(layout.mlm_head) for n in names), where=wpath,
        embeddings_dst=layout.text_embeddings or None, layers_dst=layout.text_layers or None,
        untied_decoder=layout.untied_mlm_decoder)
    mapped = map_keys(source, rules, targets, unused=unused, tied=tied, what="bert")
    absorb(mapped, "bert", wpath)
    origin.update({t: f"bert:{wpath}" for t in mapped.filled})
    report["sources"]["bert"] = {"path": wpath, "format": fmt, "keys": len(source),
                                 "mapped": mapped.mapped, "config": {
                                     k: config.get(k) for k in (
                                         "vocab_size", "hidden_size", "num_hidden_layers",
                                         "num_attention_heads", "intermediate_size",
                                         "layer_norm_eps")}}
  if vit_file:
    source = read_weights(vit_file)
    _check_vit(source, targets, layout, os.fspath(vit_file))
    both = layout.temporal_attn
    rules = vit_rules.vision_transformer(
        "", layout.video, patch=layout.patch_embed, pos_hook=_pos_hook(source, targets, layout),
        attn=("attn", "temporal_attn") if both else ("attn",),
        norm1=("norm1", "temporal_norm") if both else ("norm1",))
    unused = vit_rules.TIMM_UNUSED
    mapped = map_keys(source, rules, targets, unused=unused, what="vit")
    absorb(mapped, "vit", os.fspath(vit_file))
    origin.update({t: f"vit:{vit_file}" for t in mapped.filled})
    zeros = _zero_targets(targets, layout)
    filled.update(zeros)
    origin.update({t: layout.zeros_reason for t in zeros})
    report["sources"]["vit"] = {"path": os.fspath(vit_file), "keys": len(source),
                                "mapped": mapped.mapped}

  leaves = [(_place(filled[n], leaf) if n in filled else leaf) for n, (_, leaf) in zip(names, flat)]
  kept = sorted(set(names) - set(filled))
  reasons = dict(layout.reasons)
  groups: dict[str, dict[str, Any]] = {}
  for n in kept:
    g = _group(n, layout)
    entry = groups.setdefault(g, {"count": 0, "reason": _kept_reason(g, n, reasons, layout,
                                                                      bert_dir, vit_file)})
    entry["count"] += 1
  report.update(initialised={k: origin[k] for k in sorted(filled)}, kept_init=groups,
                kept_init_paths=kept)
  return jax.tree_util.tree_unflatten(treedef, leaves), report


def _kept_reason(group: str, path: str, reasons: dict[str, str], layout: Layout,
                 bert_dir: str | None, vit_file: str | None) -> str:
  top = path.split("/")[0]
  if top in reasons:
    return reasons[top]
  if path.startswith(layout.video):
    return "no init.vit_file given: fresh init" if not vit_file else (
        "not in the ViT file: fresh init")
  if layout.in_bert(path):
    return "no init.bert_dir given: fresh init" if not bert_dir else (
        "not in the BERT file: fresh init")
  if path.startswith(layout.mlm_head):
    return "no init.bert_dir given: fresh init" if not bert_dir else (
        "the BERT file has no MLM head (bare BertModel): fresh init")
  return f"{group}: not covered by any backbone: fresh init"


def summary(report: dict[str, Any]) -> str:
  """Log lines: what was filled from where, what was dropped, what keeps its fresh init."""
  lines = []
  for name, src in report["sources"].items():
    lines.append(f"backbone {name}: {src['path']} ({src['keys']} keys, {src['mapped']} mapped)")
  by_origin: dict[str, int] = {}
  for o in report["initialised"].values():
    by_origin[o] = by_origin.get(o, 0) + 1
  lines += [f"  initialised {n} variables from {o}" for o, n in by_origin.items()]
  by_reason: dict[str, int] = {}
  for r in report["unused"].values():
    by_reason[r] = by_reason.get(r, 0) + 1
  lines += [f"  unused source keys x{n}: {r}" for r, n in by_reason.items()]
  lines += [f"  kept fresh init: {g} ({e['count']} variables): {e['reason']}"
            for g, e in report["kept_init"].items()]
  return "\n".join(lines)

"""VIOLET converter rules (vlx/convert/engine.py API): released state dicts -> the VIOLET tree.

Variants (spec §7): `pretrain` (VIOLET_Pretrain: fc + fc_mtm + fc_mvm), `retrieval` and `qamc`
(fc.3 with 1 output), `qaoe` (fc.3 with num_answers outputs), `video_swin` (the raw
SwinTransformer3D file that initialises pre-training: kind='video_swin', params at `video/`),
`dalle_encoder` (OpenAI's dVAE encoder state dict, keys blocks.*: kind='dalle_encoder').

Ambiguity: retrieval and QA-MC files have the same keys and shapes (fc.3 has one output in both);
`detect_variant` says 'retrieval' and `--variant qamc` selects the other (the modules are the
same, only model.head differs). A pretrain file also converts to 'retrieval' / 'qamc' (the
reference's fine-tuning start; fc_mtm / fc_mvm are dropped); qaoe needs a qaoe file (its fc.3 has
another shape).
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from vlx.convert.errors import ConversionError, WrongFamilyError
from vlx.convert.rules import Rule, Tied, linear, norm
from vlx.convert import hooks as hk
from vlx.layers import bert_rules
from vlx.models.violet.model import model_config as violet_model

VARIANTS = ("pretrain", "retrieval", "qamc", "qaoe", "video_swin", "dalle_encoder")
TRUNK_VARIANTS = ("pretrain", "retrieval", "qamc", "qaoe")
_SWIN = r"enc_img\.swin\."
_TXT = r"enc_txt\.emb_txt\."


def _swin_rules():
  return importlib.import_module("vlx.layers.video_swin_rules")


def _dvae_rules():
  return importlib.import_module("vlx.layers.dvae_rules")


def detect_variant(keys) -> str:
  """Which file this is, from its keys (and fc.3's shape is not needed: see module docstring)."""
  keys = set(keys)
  if "enc_img.emb_cls" in keys and any(k.startswith("trsfr.layer.") for k in keys):
    if any(k.startswith("fc_mtm.") for k in keys):
      return "pretrain"
    return "retrieval"
  if "patch_embed.proj.weight" in keys and any(k.startswith("layers.") for k in keys):
    return "video_swin"
  if "blocks.input.w" in keys:
    return "dalle_encoder"
  raise WrongFamilyError(
      "not a VIOLET checkpoint: expected enc_img.emb_cls + trsfr.layer.* (VIOLET models), "
      "patch_embed.proj.weight + layers.* (Video Swin) or blocks.input.w (DALL-E encoder); got "
      f"e.g. {sorted(keys)[:5]}")


def detect_variant_from_shapes(source: Mapping[str, Any]) -> str:
  """detect_variant, refined with fc.3's width: more than one output = 'qaoe'."""
  variant = detect_variant(source)
  if variant == "retrieval" and "fc.3.weight" in source and source["fc.3.weight"].shape[0] > 1:
    return "qaoe"
  return variant


def _reshape(*shape_of):
  """Hook: torch table [1,...,n,D] -> [n, D] (or [D]); linear, so gradients map back."""
  def hook(x):
    return x.reshape(tuple(x.shape[i] for i in shape_of))
  return hook


def _trunk_rules() -> list[Rule]:
  return [*_swin_rules().swin(_SWIN, "video/"),
          Rule(r"enc_img\.emb_cls", "video_tokens/cls", _reshape(-1)),
          Rule(r"enc_img\.emb_pos", "video_tokens/pos", _reshape(-2, -1)),
          Rule(r"enc_img\.emb_len", "video_tokens/frame", _reshape(1, -1)),
          *norm(r"enc_img\.norm", "video_tokens/norm"),
          *bert_rules.embeddings(_TXT, "text/"),
          *bert_rules.layers(r"trsfr\.", "encoder/"),
          *linear(r"fc\.1", "fc/fc1"), *linear(r"fc\.3", "fc/fc2")]


def rules(variant: str, model_config: ml_collections.ConfigDict) -> list[Rule]:
  if variant not in VARIANTS:
    raise ConversionError(f"unknown VIOLET variant {variant!r}; expected one of {VARIANTS}")
  kind = model_config.get("kind", "violet")
  want = {"video_swin": "video_swin", "dalle_encoder": "dalle_encoder"}.get(variant, "violet")
  if kind != want:
    raise ConversionError(f"model_config.kind={kind!r} but variant {variant!r} needs "
                          f"kind={want!r}")
  if variant == "video_swin":
    return _swin_rules().swin("", "video/")
  if variant == "dalle_encoder":
    return _dvae_rules().encoder("", "")
  if model_config.head != variant:
    raise ConversionError(f"model_config.head={model_config.head!r} but variant={variant!r}")
  out = _trunk_rules()
  if variant == "pretrain":
    p = r"fc_mtm\.predictions\."
    out += [*bert_rules.mlm_head(p, "mlm_head/"),
            Rule(p + r"decoder\.weight", "mlm_head/decoder/kernel", hk.linear),
            *linear(r"fc_mvm\.1", "mvm_head/fc1"), *linear(r"fc_mvm\.3", "mvm_head/fc2")]
  return out


def tied(variant: str) -> list[Tied]:
  if variant != "pretrain":
    return []
  return [Tied(r"fc_mtm\.predictions\.decoder\.bias", "fc_mtm.predictions.bias",
               "same Parameter as fc_mtm.predictions.bias (mapped to mlm_head/bias)")]


def unused(variant: str) -> dict[str, str]:
  if variant == "dalle_encoder":
    return {}
  if variant == "video_swin":
    return dict(_swin_rules().unused(""))
  out = dict(_swin_rules().unused(_SWIN))
  out[_TXT + "position_ids"] = "constant buffer arange(max_positions); vlx builds positions itself"
  if variant != "pretrain":
    out[r"fc_mtm\..*"] = "MLM head of pre-training: the downstream model has none"
    out[r"fc_mvm\..*"] = "MVM head of pre-training: the downstream model has none"
  return out


# -- model config from shapes -------------------------------------------------------------------
def _shape(source: Mapping[str, Any], key: str) -> tuple[int, ...]:
  if key not in source:
    raise ConversionError(f"VIOLET checkpoint has no key {key!r}")
  return tuple(int(d) for d in source[key].shape)


def _count(source: Mapping[str, Any], pattern: str) -> int:
  rx = re.compile(pattern)
  idx = [int(m.group(1)) for k in source if (m := rx.match(k))]
  return max(idx) + 1 if idx else 0


def infer_model_config(source: Mapping[str, Any], variant: str) -> ml_collections.ConfigDict:
  """violet_model('') with every size the shapes determine; head counts of the cross-modal BERT
  (released 12), epsilons and dropout rates keep the released values (override with --set)."""
  c = violet_model("")
  if variant not in VARIANTS:
    raise ConversionError(f"unknown VIOLET variant {variant!r}; expected one of {VARIANTS}")
  found = detect_variant(source)
  group = lambda v: v if v in ("video_swin", "dalle_encoder") else "a VIOLET model"
  if group(found) != group(variant):
    raise ConversionError(f"variant {variant!r} needs {group(variant)} file; this file is "
                          f"{group(found)} (detected variant {found!r})")
  if variant == "dalle_encoder":
    c.kind = "dalle_encoder"
    c.dvae.update(_dvae_rules().infer_config(source, ""))
    return c
  if variant == "video_swin":
    c.kind = "video_swin"
    c.video.update(_swin_rules().infer_config(source, ""))
    c.hidden = int(_shape(source, "norm.weight")[0])
    return c
  c.head = variant
  c.video.update(_swin_rules().infer_config(source, _SWIN))
  d = _shape(source, "enc_img.emb_cls")[-1]
  c.hidden = d
  c.num_pos = _shape(source, "enc_img.emb_pos")[-2]
  c.num_frames_table = _shape(source, "enc_img.emb_len")[1]
  vocab, _ = _shape(source, "enc_txt.emb_txt.word_embeddings.weight")
  c.text.update(
      vocab_size=vocab, num_layers=_count(source, r"trsfr\.layer\.(\d+)\."),
      max_position_embeddings=_shape(source, "enc_txt.emb_txt.position_embeddings.weight")[0],
      type_vocab_size=_shape(source, "enc_txt.emb_txt.token_type_embeddings.weight")[0],
      intermediate_size=_shape(source, "trsfr.layer.0.intermediate.dense.weight")[0])
  k = _shape(source, "fc.3.weight")[0]
  if variant == "qaoe":
    c.num_answers = k
  elif k != 1:
    raise ConversionError(f"fc.3 has {k} outputs: a {variant!r} head has 1 (an open-ended QA "
                          "file? use --variant qaoe)")
  if "fc_mvm.3.weight" in source:
    c.mvm_vocab = _shape(source, "fc_mvm.3.weight")[0]
    c.dvae.vocab_size = c.mvm_vocab
  return c

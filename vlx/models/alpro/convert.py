"""ALPRO converter rules: released salesforce/ALPRO state dicts -> the ALPRO module tree.

Variants (spec §8): `pretrain` (AlproForPretrain: prompter.* + mpm_head.*), `prompter` (Prompter:
top-level video_prompt_feat), `retrieval` (text_encoder.bert.*, no prompter), `qa`
(text_encoder.* without bert., classifier.*). A pretrain file also converts to `retrieval`
(zero-shot / fine-tuning start: prompter and PEM head dropped, time_embed nearest-resized to
model.video.num_frames as the reference loader does) and to `qa` (then `classifier` is missing).
Text keys accept both `text_encoder.bert.` and `text_encoder.` (the reference's QA rename).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from vlx.convert.errors import ConversionError, WrongFamilyError
from vlx.convert.rules import Rule, Tied, linear
from vlx.layers import bert_rules, timesformer_rules
from vlx.models.alpro.model import model_config as alpro_model

VARIANTS = ("pretrain", "prompter", "retrieval", "qa")
_TEXT = r"text_encoder\.(?:bert\.)?"
_VIDEO = r"visual_encoder\.model\."


def detect_variant(keys) -> str:
  """Which reference class wrote the state dict (spec §8 key groups)."""
  keys = set(keys)
  if "visual_encoder.model.cls_token" not in keys or not any(
      k.startswith("text_encoder.") for k in keys):
    raise WrongFamilyError(
        "not an ALPRO checkpoint: expected visual_encoder.model.* and text_encoder.* keys, got "
        f"e.g. {sorted(keys)[:5]}")
  if any(k.startswith("prompter.") for k in keys) and any(k.startswith("mpm_head.") for k in keys):
    return "pretrain"
  if "video_prompt_feat" in keys:
    return "prompter"
  if "text_encoder.embeddings.word_embeddings.weight" in keys and any(
      k.startswith("classifier.") for k in keys):
    return "qa"
  if "text_encoder.bert.embeddings.word_embeddings.weight" in keys:
    return "retrieval"
  raise WrongFamilyError("ALPRO-like keys but no known variant (pretrain: prompter.*+mpm_head.*; "
                         "prompter: video_prompt_feat; retrieval: text_encoder.bert.*; qa: "
                         "text_encoder.embeddings.* + classifier.*)")


# -- rules --------------------------------------------------------------------------------------
def _model_rules(s: str, d: str, head: str, num_frames: int) -> list[Rule]:
  """Rules of one AlproModel whose torch keys start with `s` (regex) and nnx paths with `d`."""
  rules = [Rule(s + "temp", d + "temp"),
           *timesformer_rules.timesformer(s + _VIDEO, d + "video/", num_frames),
           *bert_rules.encoder(s + _TEXT, d + "text/"),
           *linear(s + "vision_proj", d + "vision_proj"),
           *linear(s + "text_proj", d + "text_proj"), *linear(s + "itm_head", d + "itm_head")]
  if head != "qa":
    rules += bert_rules.mlm_head(s + r"text_encoder\.cls\.predictions\.", d + "mlm_head/")
  if head == "pretrain":
    rules += [*linear(s + r"mpm_head\.0", d + "pem_head/fc1"),
              *linear(s + r"mpm_head\.2", d + "pem_head/fc2"),
              *_model_rules(s + r"prompter\.", d + "prompter/", "prompter", num_frames)]
  if head == "prompter":
    rules += [Rule(s + r"(video_prompt_feat|image_prompt_feat)", d + r"\1")]
  if head == "qa":
    rules += [*linear(s + r"classifier\.0", d + "classifier/fc1"),
              *linear(s + r"classifier\.2", d + "classifier/fc2")]
  return rules


def rules(variant: str, model_config: ml_collections.ConfigDict) -> list[Rule]:
  if variant not in VARIANTS:
    raise ConversionError(f"unknown ALPRO variant {variant!r}; expected one of {VARIANTS}")
  if model_config.head != variant:
    raise ConversionError(f"model_config.head={model_config.head!r} but variant={variant!r}")
  if variant == "pretrain" and not model_config.pem:
    raise ConversionError("variant 'pretrain' needs model.pem=True (the file has prompter.* "
                          "and mpm_head.*)")
  return _model_rules("", "", variant, model_config.video.num_frames)


def tied(variant: str) -> list[Tied]:
  if variant == "qa":
    return []
  # In other variants the prompter's copies are dropped with the rest of prompter.* (unused).
  p = ((r"((?:prompter\.)?)" if variant == "pretrain" else "()")
       + r"text_encoder\.cls\.predictions\.")
  return [Tied(p + r"decoder\.weight", r"\1text_encoder.bert.embeddings.word_embeddings.weight",
               "MLM decoder weight = the word embeddings (vlx reuses text/embeddings/word)"),
          Tied(p + r"decoder\.bias", r"\1text_encoder.cls.predictions.bias",
               "same Parameter as predictions.bias (mapped to mlm_head/bias)")]


def unused(variant: str) -> dict[str, str]:
  out = {
      r"(?:prompter\.)?" + _TEXT + r"embeddings\.position_ids":
          "constant buffer arange(max_positions); vlx builds positions itself",
      r"(?:prompter\.)?" + _VIDEO + r"head\.(?:weight|bias)":
          "TimeSformer's Kinetics-400 classifier, never used by ALPRO",
  }
  if variant != "pretrain":
    out[r"prompter\..*"] = "frozen PEM prompter: only used in ALPRO pre-training"
    out[r"mpm_head\..*"] = "PEM head: only used in ALPRO pre-training"
  if variant == "qa":
    out[r"text_encoder\.cls\..*"] = ("MLM head: the QA model has none (the reference drops "
                                     "text_encoder.cls.* when fine-tuning QA)")
  return out


# -- model config from shapes -------------------------------------------------------------------
def _find(source: Mapping[str, Any], pattern: str, what: str) -> Any:
  rx = re.compile(pattern)
  for key, value in source.items():
    if rx.fullmatch(key):
      return value
  raise ConversionError(f"ALPRO checkpoint has no key matching {pattern!r} ({what})")


def _count(source: Mapping[str, Any], pattern: str) -> int:
  rx = re.compile(pattern)
  idx = [int(m.group(1)) for k in source if (m := rx.match(k))]
  return max(idx) + 1 if idx else 0


def infer_model_config(source: Mapping[str, Any], variant: str) -> ml_collections.ConfigDict:
  """alpro_model('') with every size read from tensor shapes (never the prompter's).

  Not in the shapes: head counts (released 12), fusion_layer (released 6 of 12: num_layers // 2),
  epsilons and dropout rates (released values); override them with `model_config`.
  """
  shape = lambda pattern, what: tuple(_find(source, pattern, what).shape)
  c = alpro_model("")
  c.head, c.pem = variant, variant == "pretrain"
  width = shape(_VIDEO + "cls_token", "video width")[-1]
  patch = shape(_VIDEO + r"patch_embed\.proj\.weight", "patch size")[-1]
  n = shape(_VIDEO + "pos_embed", "patch count")[1] - 1
  grid = math.isqrt(n)
  if grid * grid != n:
    raise ConversionError(f"{_VIDEO}pos_embed has {n} patch positions, not a square grid")
  mlp = shape(_VIDEO + r"blocks\.0\.mlp\.fc1\.weight", "video MLP width")[0]
  c.video.update(width=width, patch_size=patch, img_size=grid * patch,
                 num_frames=shape(_VIDEO + "time_embed", "frames")[1],
                 depth=_count(source, _VIDEO + r"blocks\.(\d+)\."),
                 mlp_ratio=mlp // width if mlp % width == 0 else mlp / width)
  head = [k for k in source if re.fullmatch(_VIDEO + r"head\.weight", k)]
  if head:
    c.video.num_classes = tuple(source[head[0]].shape)[0]
  vocab, hidden = shape(_TEXT + r"embeddings\.word_embeddings\.weight", "vocabulary")
  layers = _count(source, _TEXT + r"encoder\.layer\.(\d+)\.")
  c.text.update(
      vocab_size=vocab, hidden_size=hidden, num_layers=layers, fusion_layer=layers // 2,
      max_position_embeddings=shape(_TEXT + r"embeddings\.position_embeddings\.weight", "")[0],
      type_vocab_size=shape(_TEXT + r"embeddings\.token_type_embeddings\.weight", "")[0],
      intermediate_size=shape(_TEXT + r"encoder\.layer\.0\.intermediate\.dense\.weight", "")[0])
  c.embed_dim = shape(r"vision_proj\.weight", "projection width")[0]
  for pattern, axis in ((r"mpm_head\.2\.weight", 0), (r"(?:prompter\.)?video_prompt_feat", 0)):
    if any(re.fullmatch(pattern, k) for k in source):
      c.num_entities = shape(pattern, "entities")[axis]
      break
  if any(k.startswith("classifier.2.") for k in source):
    c.num_labels = shape(r"classifier\.2\.weight", "answers")[0]
  return c

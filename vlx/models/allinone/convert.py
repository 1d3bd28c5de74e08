"""All-in-one converter rules: released showlab/all-in-one `.ckpt` state dicts -> AllInOne.

Variants: `pretrain` (only the pre-training heads mlm_score/itm_score) and `downstream` (any task
head: vqa_classifier, mc_vqa_classifier, rank_output, txt_proj/vid_proj, vcop_classifier). The
size (Ti / S / B, or 'custom') is read from the shapes into `model_config.variant`; the distilled
ViT (S) is recognised by `transformer.dist_token`. `--variant pretrain` on a downstream file drops
its task heads; `--variant downstream` on a pre-training file keeps the heads the file has (add
others with --set heads.num_qa_labels=1501 etc.; they are then reported missing).

Not in the shapes: head counts (released: hidden/64) and the 'deit' WPA rule (Ti and S); override
with --set num_heads=N / deit=True. A file without `transformer.temporal_embed` (spec §6.3.1)
converts with `temporal_embed=False` (the reference then keeps its zero init: the same function).
`num_frames` other than the file's: the table keeps its first T rows or is zero-padded (the
reference's `_inflate_positional_embeds`, load_temporal_fix='zeros').
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from vlx.convert import hooks as hk
from vlx.convert.errors import ConversionError, WrongFamilyError
from vlx.convert.rules import Rule, linear, norm
from vlx.layers import bert_rules, vit_rules
from vlx.models.allinone.model import SIZES, model_config

VARIANTS = ("pretrain", "downstream")
_TASK_HEADS = ("vqa_classifier.", "mc_vqa_classifier.", "rank_output.", "txt_proj.", "vid_proj.",
               "vcop_classifier.")
_IMAGE_HEADS = r"(?:nlvr2_classifier|rank_output_2)\..*"


def detect_variant(keys) -> str:
  keys = set(keys)
  if not {"transformer.cls_token", "token_type_embeddings.weight"} <= keys or not any(
      k.startswith("text_embeddings.") for k in keys):
    hint = (" (All-in-one+ co-training files use vtm_score.*: out of scope)"
            if any(k.startswith("vtm_score.") for k in keys) else "")
    raise WrongFamilyError(
        "not an All-in-one checkpoint: expected text_embeddings.*, token_type_embeddings.weight "
        f"and transformer.cls_token, got e.g. {sorted(keys)[:5]}{hint}")
  return "downstream" if any(k.startswith(_TASK_HEADS) for k in keys) else "pretrain"


# -- rules --------------------------------------------------------------------------------------
def _first_frames(num_frames: int) -> hk.Hook:
  """temporal_embed [1, T_file, D] -> [1, num_frames, D]: first rows kept, extra rows zero."""
  def hook(x):
    old = x.shape[1]
    if old == num_frames:
      return x
    idx = np.minimum(np.arange(num_frames), old - 1)
    keep = (np.arange(num_frames) < old).astype(np.float32).reshape(1, -1, 1)
    return x[:, idx] * keep
  return hook


def _classifier(src: str, dst: str) -> list[Rule]:
  """torch Sequential(Dropout, Linear, LayerNorm, GELU, Linear) = keys .1 .2 .4 -> NormMlp."""
  return [*linear(src + r"\.1", dst + "/fc1"), *norm(src + r"\.2", dst + "/norm"),
          *linear(src + r"\.4", dst + "/fc2")]


def rules(variant: str, c: ml_collections.ConfigDict) -> list[Rule]:
  if variant not in VARIANTS:
    raise ConversionError(f"unknown All-in-one variant {variant!r}; expected one of {VARIANTS}")
  out = [
      *bert_rules.embeddings(r"text_embeddings\.", "text_embeddings/"),
      Rule(r"token_type_embeddings\.weight", "token_type_embeddings/embedding"),
      *vit_rules.vision_transformer(r"transformer\.", "transformer/"),
      Rule(r"transformer\.temporal_embed", "transformer/temporal_embed",
           _first_frames(c.num_frames)),
      *linear(r"pooler\.dense", "pooler"),
  ]
  h = c.heads
  if h.mlm:
    out += [*bert_rules.mlm_head(r"mlm_score\.", "mlm_score/"),
            Rule(r"mlm_score\.decoder\.weight", "mlm_score/decoder/kernel", hk.linear)]
  if h.itm:
    out += linear(r"itm_score\.fc", "itm_score")
  if variant == "downstream":
    if h.rank_untied:
      out += linear(r"rank_output", "rank_head")
    if h.num_qa_labels > 0:
      out += _classifier(r"vqa_classifier", "vqa_classifier")
    if h.mc_vqa:
      out += _classifier(r"mc_vqa_classifier", "mc_vqa_classifier")
    if h.itc:
      out += [*linear(r"txt_proj", "txt_proj"), *linear(r"vid_proj", "vid_proj")]
    if h.vcop:
      out += linear(r"vcop_classifier\.(fc7|fc8)", r"vcop_head/\1")
  return out


def unused(variant: str) -> dict[str, str]:
  out = {
      r"text_embeddings\.position_ids": "constant buffer arange(max_text_len) (transformers "
                                        "4.2.1 persistent buffer); vlx builds positions itself",
      r"rank_output\.(?:weight|bias)": "view of itm_score.fc row 1 (shared storage in the "
                                       "reference; checked equal): vlx's rank_output() reads it",
      _IMAGE_HEADS: "image-pair (NLVR2) head of an image task: not part of vlx's All-in-one",
  }
  if variant == "pretrain":
    out[r"(?:vqa_classifier|mc_vqa_classifier|txt_proj|vid_proj|vcop_classifier)\..*"] = (
        "task head dropped: converting to the pre-training variant")
    out[r"rank_output\.(?:weight|bias)"] = "task head dropped: converting to pre-training"
  return out


# -- model config from shapes -------------------------------------------------------------------
def _shape(source: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
  if key not in source:
    raise ConversionError(f"All-in-one checkpoint has no key {key!r} ({what})")
  return tuple(int(d) for d in source[key].shape)


def _rank_untied(source: Mapping[str, Any]) -> bool:
  """True when rank_output is not the ITM match row (no itm_score, or different values)."""
  if "rank_output.weight" not in source:
    return False
  if "itm_score.fc.weight" not in source:
    return True
  w, b = source["rank_output.weight"], source.get("rank_output.bias")
  itm_w, itm_b = source["itm_score.fc.weight"], source.get("itm_score.fc.bias")
  if not isinstance(w, np.ndarray):           # dry run (shapes only): assume the released tie
    return False
  same = np.array_equal(w, np.asarray(itm_w)[1:]) and (
      b is None or itm_b is None or np.array_equal(b, np.asarray(itm_b)[1:]))
  return not same


def infer_model_config(source: Mapping[str, Any], variant: str) -> ml_collections.ConfigDict:
  """model_config('B') with every size the shapes determine (see module docstring for the rest)."""
  vocab, d = _shape(source, "text_embeddings.word_embeddings.weight", "vocabulary")
  distilled = "transformer.dist_token" in source
  name = next((n for n, (w, _, dist, _) in SIZES.items() if w == d and dist == distilled),
              "custom")
  c = model_config(name if name != "custom" else "B")
  c.variant = name
  patch = _shape(source, "transformer.patch_embed.proj.weight", "patch size")[-1]
  n = _shape(source, "transformer.pos_embed", "patch count")[1] - (2 if distilled else 1)
  grid = math.isqrt(n)
  if grid * grid != n:
    raise ConversionError(f"transformer.pos_embed has {n} patch positions, not a square grid")
  depth = 1 + max((int(m.group(1)) for k in source
                   if (m := re.match(r"transformer\.blocks\.(\d+)\.", k))), default=-1)
  mlp = _shape(source, "transformer.blocks.0.mlp.fc1.weight", "MLP width")[0]
  c.update(hidden_size=d, vocab_size=vocab, distilled=distilled, patch_size=patch,
           img_size=grid * patch, num_layers=depth, mlp_ratio=mlp / d,
           max_text_len=_shape(source, "text_embeddings.position_embeddings.weight", "")[0],
           temporal_embed="transformer.temporal_embed" in source)
  if name == "custom":
    c.num_heads, c.deit = max(d // 64, 1), distilled
  if c.temporal_embed:
    c.num_frames = _shape(source, "transformer.temporal_embed", "frames")[1]
  h = c.heads
  h.mlm = "mlm_score.decoder.weight" in source
  h.itm = "itm_score.fc.weight" in source
  if variant == "downstream":
    h.rank_untied = _rank_untied(source)
    if "vqa_classifier.4.weight" in source:
      h.num_qa_labels = _shape(source, "vqa_classifier.4.weight", "answers")[0]
    h.mc_vqa = "mc_vqa_classifier.4.weight" in source
    h.vcop = "vcop_classifier.fc8.weight" in source
    h.itc = "txt_proj.weight" in source
    if h.itc:
      c.shared_embedding_dim = _shape(source, "txt_proj.weight", "projection width")[0]
  return c

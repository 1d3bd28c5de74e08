"""Converter rules for the BERT pieces of vlx/layers/bert.py (Hugging Face `transformers` keys).

Source key names (facts of the public format): embeddings.{word,position,token_type}_embeddings,
embeddings.LayerNorm, encoder.layer.N.{attention.self.{query,key,value}, attention.output.dense,
attention.output.LayerNorm, intermediate.dense, output.dense, output.LayerNorm}; the MLM head
cls.predictions.{bias, transform.dense, transform.LayerNorm, decoder}. BertForPreTraining /
BertForMaskedLM files put `bert.` before the encoder keys; original Google-converted files name
LayerNorm parameters gamma/beta. Targets: BertEmbeddings, BertEncoder (layers/N/...), MlmHead.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlx.convert import hooks as hk
from vlx.convert import rules as r
from vlx.convert.errors import WrongFamilyError
from vlx.convert.rules import Rule, Tied


def embeddings(src: str, dst: str, *, legacy: bool = False) -> list[Rule]:
  """`src` = regex prefix of embeddings.* (ending in '\\.'), `dst` = BertEmbeddings path + '/'."""
  return [Rule(src + r"word_embeddings\.weight", dst + "word/embedding"),
          Rule(src + r"position_embeddings\.weight", dst + "position/embedding"),
          Rule(src + r"token_type_embeddings\.weight", dst + "token_type/embedding"),
          *r.norm(src + "LayerNorm", dst + "norm", legacy=legacy)]


def encoder(src: str, dst: str, *, legacy: bool = False) -> list[Rule]:
  """A BertModel under regex prefix `src` -> a BertEncoder at `dst` (both ending in a separator)."""
  return [*embeddings(src + r"embeddings\.", dst + "embeddings/", legacy=legacy),
          *layers(src + r"encoder\.", dst + "layers/", legacy=legacy)]


def layers(src: str, dst: str, *, legacy: bool = False) -> list[Rule]:
  """`src` layer.N.* (a BertEncoder module's keys, regex prefix) -> BertLayers at `dst`N/."""
  l, dl = src + r"layer\.(\d+)\.", dst + r"\1/"
  return [*r.linear(l + r"attention\.self\.(query|key|value)", dl + r"attn/\2"),
          *r.linear(l + r"attention\.output\.dense", dl + "attn/out"),
          *r.norm(l + r"attention\.output\.LayerNorm", dl + "attn_norm", legacy=legacy),
          *r.linear(l + r"intermediate\.dense", dl + "mlp/fc1"),
          *r.linear(l + r"output\.dense", dl + "mlp/fc2"),
          *r.norm(l + r"output\.LayerNorm", dl + "mlp_norm", legacy=legacy)]


def mlm_head(src: str, dst: str, *, legacy: bool = False) -> list[Rule]:
  """cls.predictions.* under regex prefix `src` -> MlmHead at `dst` (bias, dense, norm; the
  decoder is tied to the word embeddings or mapped by the caller)."""
  return [Rule(src + "bias", dst + "bias"), *r.linear(src + r"transform\.dense", dst + "dense"),
          *r.norm(src + r"transform\.LayerNorm", dst + "norm", legacy=legacy)]


def _word_and_decoder(x: Any) -> tuple[Any, Any]:
  """Word embeddings [vocab, hidden] -> (themselves, an untied decoder kernel [hidden, vocab])."""
  return x, hk.linear(x)


def hf_bert(source: Mapping[str, Any], text: str, mlm: str, *, has_mlm: bool, where: str,
            embeddings_dst: str | None = None, layers_dst: str | None = None,
            untied_decoder: bool = False
            ) -> tuple[list[Rule], dict[str, str], list[Tied], str]:
  """(rules, unused, tied, format name) for a Hugging Face BERT state dict, with or without the
  `bert.` level, onto a BertEncoder at `text` and an MlmHead at `mlm` (paths ending in '/').

  embeddings_dst / layers_dst: BertEmbeddings and BertLayer-list paths used instead of the
  BertEncoder's (a model whose BERT is split, e.g. VIOLET's text/ and encoder/N/).
  untied_decoder: the MlmHead has its own decoder kernel: filled from cls.predictions.decoder.weight
  (transposed) or, in a file without it (a bare BertModel, or a safetensors file that stores the
  tied tensor once), from the word embeddings, which is what tying gives."""
  if "bert.embeddings.word_embeddings.weight" in source:
    p, fmt = r"bert\.", ("BertForPreTraining" if any(k.startswith("cls.seq_relationship.")
                                                     for k in source) else "BertForMaskedLM")
  elif "embeddings.word_embeddings.weight" in source:
    p, fmt = "", "BertModel"
  else:
    raise WrongFamilyError(f"{where}: not a BERT state dict (expected bert.embeddings."
                           "word_embeddings.weight or embeddings.word_embeddings.weight, got e.g. "
                           f"{sorted(source)[:6]})")
  if embeddings_dst is None and layers_dst is None:
    rules = encoder(p, text, legacy=True)
  else:
    rules = [*embeddings(p + r"embeddings\.", embeddings_dst or text + "embeddings/", legacy=True),
             *layers(p + r"encoder\.", layers_dst or text + "layers/", legacy=True)]
  unused = {
      p + r"embeddings\.(?:position_ids|token_type_ids)":
          "constant buffer; vlx builds positions/types itself",
      p + r"pooler\.dense\.(?:weight|bias)": "BERT pooler: the model has no pooling layer here",
      r"cls\.seq_relationship\.(?:weight|bias)": "next-sentence-prediction head, not used",
  }
  tied: list[Tied] = []
  c = r"cls\.predictions\."
  if has_mlm:
    rules += mlm_head(c, mlm, legacy=True)
    if untied_decoder and "cls.predictions.decoder.weight" in source:
      rules.append(Rule(c + r"decoder\.weight", mlm + "decoder/kernel", hk.linear))
    elif untied_decoder:  # first match wins: this rule shadows the plain word-embedding rule
      word = "bert.embeddings.word_embeddings.weight" if p else "embeddings.word_embeddings.weight"
      emb = embeddings_dst or text + "embeddings/"
      rules.insert(0, Rule(word.replace(".", r"\."), (emb + "word/embedding",
                                                       mlm + "decoder/kernel"),
                           _word_and_decoder))
    elif p:
      tied.append(Tied(c + r"decoder\.weight", "bert.embeddings.word_embeddings.weight",
                       "MLM decoder weight = the word embeddings (tied)"))
    tied.append(Tied(c + r"decoder\.bias", "cls.predictions.bias",
                     "same Parameter as cls.predictions.bias"))
  else:
    unused[c + r".*"] = "MLM head: the model has none (e.g. the QA head)"
  return rules, unused, tied, fmt

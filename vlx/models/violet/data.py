"""VIOLET's data hook (vlx.data.hooks): the tokenizer's special ids for in-step masking.

Pre-training masks inside the step (spec §5.4: the attended branch needs the model's attention),
so the stream only has to say which ids are special: every training row gets
`special_token_ids` int32 [4] = ([CLS], [SEP], [PAD], [MASK]) of config.data.tokenizer
(bert-base-uncased: 101, 102, 0, 103 as in the reference; the shipped demo vocabulary has
others). Without the key (e.g. hand-made batches) the objectives assume the BERT ids.

MVM targets need no hook: they are the batch key `vq_tokens` [B,T,h,w] when the inputs read a
token dataset (`data.train.inputs.vq_tokens = ConfigDict(reader='token_grid',
align_with='video', height=h, width=w)`, vlx/data/modalities/token_grid.py), else they are
computed in the step by the model's frozen dVAE (vlx.models.violet.dvae_targets).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

PRETRAIN_OBJECTIVES = ("vtm", "mlm", "mvm")
KEY = "special_token_ids"


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
  """Adds the constant `special_token_ids` [4] to every training row."""
  ids: tuple[int, int, int, int]
  keys: tuple[str, ...] = (KEY,)

  def extra_dataset(self, ctx):
    del ctx
    return None

  def apply(self, row, ctx, counter):
    del row, ctx, counter
    return {KEY: tf.constant(self.ids, tf.int32)}

  def finish(self, batch, ctx):
    del batch, ctx
    return {}


def tokenizer_special_ids(config) -> tuple[int, int, int, int]:
  """([CLS], [SEP], [PAD], [MASK]) ids of config.data.tokenizer."""
  from vlx.data import text_ops  # pylint: disable=import-outside-toplevel (imports TF/HF)
  tok = text_ops.load_tokenizer(text_ops.tokenizer_name(config))
  ids = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id)
  if any(i is None for i in ids):
    raise ValueError(f"config.data.tokenizer={config.data.tokenizer!r} lacks one of [CLS], "
                     "[SEP], [PAD], [MASK] (VIOLET's masking needs all four)")
  return tuple(int(i) for i in ids)


def data_hooks(config) -> tuple:
  """Family hook: the special-id row hook when a pre-training objective is active."""
  weights = config.get("objectives", {}) or {}
  if not any(weights.get(name, 0) for name in PRETRAIN_OBJECTIVES):
    return ()
  return (SpecialTokenIds(tokenizer_special_ids(config)),)

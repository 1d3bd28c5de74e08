"""VIMPAC config checks (Family.validate_config): one ValueError naming the field.

The reference's constraints that would otherwise fail deep inside the model: heads = hidden // 64
split evenly over the parallel patterns of a stage (spec §2.2), token inputs whose clip length
and grid match the positional tables, the [MASK] id 8196 inside the embedding (vocab_size >=
8192), two clips per row for the contrastive pairs and a classifier for classification.
"""
from __future__ import annotations

from typing import Any

from vlx.models.vimpac import model as vm

TOKENS = "vq_tokens"


def _check_model(m: Any) -> None:
  stages = vm.parse_layout(m.layout)
  heads = int(m.get("num_heads", 0) or 0) or int(m.hidden) // 64
  if heads < 1:
    raise ValueError(f"config.model.hidden={m.hidden}: the reference uses hidden // 64 heads "
                     "(hidden >= 64)")
  d_att = int(m.hidden) // 2 if m.halve_att else int(m.hidden)
  for stage in stages:
    k = len(stage)
    if heads % k or d_att % k:
      raise ValueError(f"config.model.layout={m.layout!r}: a stage of {k} parallel patterns "
                       f"needs heads ({heads}) and attention width ({d_att}) divisible by {k}")
  if m.pos_emb not in vm.POS_EMBS:
    raise ValueError(f"config.model.pos_emb={m.pos_emb!r}: expected one of {vm.POS_EMBS}")
  if int(m.frame_size) % 8:
    raise ValueError(f"config.model.frame_size={m.frame_size}: must be a multiple of 8 "
                     "(the dVAE downsamples by 8)")


def _check_tokens(block: Any, where: str, m: Any, clips: int | None) -> None:
  """The block's token input matches the model's clip length and grid."""
  inputs = block.get("inputs", None) or {}
  if TOKENS not in inputs:
    raise ValueError(f"{where}.inputs needs a {TOKENS!r} input (reader 'token_grid' or "
                     "'frame_tokens')")
  t = inputs[TOKENS]
  side = int(m.frame_size) // 8
  grid = int(t.get("grid", 0) or 0)
  sizes = {"num_frames": int(t.get("num_frames", 0) or block.get("num_frames", 0) or 0),
           "height": int(t.get("height", 0) or grid), "width": int(t.get("width", 0) or grid)}
  want = {"num_frames": int(m.clip_len), "height": side, "width": side}
  for field, value in sizes.items():
    if value != want[field]:
      raise ValueError(f"{where}.inputs.{TOKENS}.{field}={value} but the model expects "
                       f"{want[field]} (config.model.clip_len={m.clip_len}, frame_size="
                       f"{m.frame_size} -> {side}x{side} codes)")
  if clips is not None and int(t.get("clips", 0) or 0) != clips:
    raise ValueError(f"{where}.inputs.{TOKENS}.clips={t.get('clips', 0)}: the contrastive "
                     f"objective pairs two clips of each video (set clips={clips})")


def validate_config(config: Any) -> None:
  m = config.model
  _check_model(m)
  active = {k for k, w in config.objectives.items() if float(w)}
  pretrain = bool(active & {"mlm", "nce"})
  if pretrain and "classification" in active:
    raise ValueError("config.objectives: 'classification' trains on single clips and mlm / nce "
                     "on clip pairs; use them in separate runs")
  if "mlm" in active and (not m.mlm_head or int(m.vocab_size) < 8192):
    raise ValueError("config.objectives.mlm needs config.model.mlm_head=True and vocab_size >= "
                     f"8192 ([MASK] is id {vm.MASK_TOKEN_ID})")
  if "nce" in active and not m.nce_head:
    raise ValueError("config.objectives.nce needs config.model.nce_head=True")
  if "classification" in active and int(m.num_classes) < 1:
    raise ValueError("config.objectives.classification needs config.model.num_classes > 0")
  if active:
    _check_tokens(config.data.train, "config.data.train", m, 2 if pretrain else 0)
  for name, ev in config.evals.items():
    if ev.get("type") == "classification":
      if int(m.num_classes) < 1:
        raise ValueError(f"config.evals.{name} (classification) needs config.model.num_classes "
                         "> 0")
      _check_tokens(ev, f"config.evals.{name}", m, 0)

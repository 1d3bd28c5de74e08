"""VIOLET's config checks (family contract `validate_config`): input geometry against the
embedding tables, the model's own sizes, and heads against objectives.

Each ValueError names the config field. Called by vlx.config_validation.validate after the
generic checks.
"""
from __future__ import annotations

import math

import ml_collections

PATCH = 32          # pixels per visual token (Video Swin: 4 x 2**3)
# objective -> heads (config.model.head) whose modules it needs
_HEADS = {"vtm": ("pretrain",), "mlm": ("pretrain",), "mvm": ("pretrain",),
          "ret": ("pretrain", "retrieval", "qamc"), "vtc": ("pretrain", "retrieval", "qamc"),
          "mc": ("pretrain", "retrieval", "qamc"), "qa": ("qaoe",)}


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise ValueError(msg)


def check_model(m: ml_collections.ConfigDict) -> None:
  """Sizes that must agree inside config.model."""
  v = m.video
  out_dim = int(v.embed_dim) * 2 ** (len(v.depths) - 1)
  _check(int(m.hidden) == out_dim,
         f"config.model.hidden={m.hidden} != the Video Swin's output width {out_dim} "
         "(model.video.embed_dim * 2**(len(depths)-1)); VIOLET has no projection between them")
  _check(len(v.depths) == len(v.num_heads),
         f"config.model.video.num_heads={tuple(v.num_heads)} needs one entry per stage of "
         f"depths={tuple(v.depths)}")
  _check(int(m.hidden) % int(m.text.num_heads) == 0,
         f"config.model.hidden={m.hidden} is not divisible by model.text.num_heads="
         f"{m.text.num_heads}")
  _check(m.head != "qaoe" or int(m.num_answers) > 0,
         "config.model.head='qaoe' needs config.model.num_answers > 0")
  if m.dvae.enabled:
    _check(int(m.dvae.vocab_size) == int(m.mvm_vocab),
           f"config.model.dvae.vocab_size={m.dvae.vocab_size} != config.model.mvm_vocab="
           f"{m.mvm_vocab}: the MVM head predicts the dVAE's codes")


def check_inputs(config: ml_collections.ConfigDict, block: ml_collections.ConfigDict,
                 where: str) -> None:
  """One data block (train or an eval) fits the embedding tables (spec §3)."""
  m = config.model
  frames = int(block.get("num_frames", 1))
  _check(frames <= int(m.num_frames_table),
         f"{where}.num_frames={frames} exceeds the {m.num_frames_table} rows of the frame "
         "embedding (config.model.num_frames_table)")
  size = int(block.get("crop", 0) or block.get("resolution", PATCH))
  side = math.isqrt(int(m.num_pos) - 1) * PATCH
  _check(size % PATCH == 0 and 0 < size <= side,
         f"{where} crop/resolution={size} must be a multiple of {PATCH} and at most {side} "
         f"(the {m.num_pos - 1} patch positions of config.model.num_pos)")
  text = int(block.get("max_text_len", 0))
  _check(text <= int(m.text.max_position_embeddings),
         f"{where}.max_text_len={text} exceeds config.model.text.max_position_embeddings="
         f"{m.text.max_position_embeddings}")


def check_objectives(config: ml_collections.ConfigDict) -> None:
  """Each objective with a non-zero weight has the head it needs."""
  head = config.model.head
  for name, weight in (config.get("objectives") or {}).items():
    if float(weight or 0) > 0 and name in _HEADS:
      _check(head in _HEADS[name],
             f"config.objectives.{name}={weight} needs config.model.head in {_HEADS[name]}, "
             f"not {head!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Family hook: raises ValueError naming the first bad field."""
  _check(config.model.get("kind", "violet") == "violet",
         f"config.model.kind={config.model.kind!r}: only 'violet' models train and evaluate "
         "(the other kinds exist for the converter)")
  check_model(config.model)
  data = config.get("data")
  if data is not None and data.get("train") is not None:
    check_inputs(config, data.train, "config.data.train")
  for name, block in (config.get("evals") or {}).items():
    if isinstance(block, ml_collections.ConfigDict):
      check_inputs(config, block, f"config.evals.{name}")
  check_objectives(config)

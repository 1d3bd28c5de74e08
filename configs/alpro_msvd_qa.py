"""ALPRO MSVD-QA fine-tuning (spec §6.2, §9): as configs/alpro_msrvtt_qa.py with 2423 answers,
grad clip 20 and 15 epochs (the reference's accuracy 45.91, spec §10). `:demo` / `:tiny`: the
moving_shapes QA presets.
"""
from __future__ import annotations

import ml_collections

from configs import alpro_common, common

TRAIN_EXAMPLES = 30_933   # MSVD-QA training question-answer pairs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = common.parse_preset(arg)
  c = alpro_common.finetune_config(
      preset, head="qa", objectives=dict(qa=1.0), builder="msvd_qa", num_frames=16,
      max_text_len=40, lr=5e-5, grad_clip=20.0, batch_size=12 * 8 * 2, grad_accum=2, epochs=15,
      train_examples=TRAIN_EXAMPLES,
      num_labels=2423 if preset == "" else alpro_common.MOVING_SHAPES_NUM_LABELS)
  if preset == "":
    c.init.from_converted = "converted/alpro_pretrain"
    c.model.remat = True
  c.evals = alpro_common.qa_evals(c, preset)
  return c


get_config = common.with_modifiers(get_config)

"""ALPRO MSRVTT-QA fine-tuning (spec §6.2, §9): answer classifier over the fused [CLS] (1500
answers), 16 frames, question 40 tokens, lr 5e-5, warm-up 10%, clip 5, batch 12 x 8 GPUs x 2
accumulation, 10 epochs; eval: accuracy overall and per what/who/how/where/when (42.12, spec §10).

`:demo` trains the QA head on moving_shapes' question/answer pairs (answer vocabulary built from
the train split, types from the builder's qa/qtype: colour/shape/direction/count); `:tiny` tests.
"""
from __future__ import annotations

import ml_collections

from configs import alpro_common, common

TRAIN_EXAMPLES = 158_581   # MSRVTT-QA training question-answer pairs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = common.parse_preset(arg)
  c = alpro_common.finetune_config(
      preset, head="qa", objectives=dict(qa=1.0), builder="msrvtt", builder_config="qa",
      num_frames=16, max_text_len=40, lr=5e-5, grad_clip=5.0, batch_size=12 * 8 * 2,
      grad_accum=2, epochs=10, train_examples=TRAIN_EXAMPLES,
      num_labels=1500 if preset == "" else alpro_common.MOVING_SHAPES_NUM_LABELS)
  if preset == "":
    c.init.from_converted = "converted/alpro_pretrain"
    c.model.remat = True   # the reference checkpoints TimeSformer activations for QA (_gc)
  c.evals = alpro_common.qa_evals(c, preset)
  return c


get_config = common.with_modifiers(get_config)

"""All-in-one MSRVTT-QA (spec §5, §7 `task_finetune_msrvttqa`): open-ended QA by `vqa_classifier`
on the pooled text [CLS] over 1501 classes (the 1500 most frequent train answers + 1 spare;
other answers are ignored in training and count as wrong in eval), 3 frames, lr 1e-4 with the
classifier at 10x, batch 512, 20 epochs, warm-up 10 %; eval: accuracy overall and per wh-word
(EVAL.md 42.5). `:demo` answers moving_shapes' questions (types colour/shape/direction/count).
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, common

TRAIN_EXAMPLES = 158_581    # MSRVTT-QA training question-answer pairs


def qa_config(preset: str, *, builder: str, builder_config: str, num_labels: int,
              train_examples: int, epochs: int = 20, variant: str = "B",
              **eval_overrides) -> ml_collections.ConfigDict:
  """Open-ended QA fine-tuning (shared by MSRVTT-QA, MSVD-QA and TGIF-FrameQA)."""
  labels = num_labels if preset == "" else allinone_common.MOVING_SHAPES_NUM_LABELS
  c = allinone_common.experiment(
      preset, objectives=dict(openend_vqa=1.0), task="qa", builder=builder,
      builder_config=builder_config, lr=1e-4, batch_size=512, epochs=epochs,
      train_examples=train_examples, heads=dict(num_qa_labels=labels, mlm=False, itm=False),
      lr_mult=allinone_common.HEAD_LR_MULT, variant=variant)
  if preset == "":
    c.data.answer_top_k = num_labels - 1
  c.evals = allinone_common.qa_evals(c, preset, **eval_overrides)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  return qa_config(preset, variant=variant, builder="msrvtt", builder_config="qa",
                   num_labels=1501, train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

"""VIOLET TGIF-Frame (open-ended TGIF-QA, spec §6): the MSRVTT-QA recipe
(configs/violet_msrvtt_qa.py) over the 1,540 most frequent training answers (the authors'
VIOLETv2 args; probable for v1), accuracy overall and per object / number / color / location
(paper 68.9)."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 39_392     # TGIF-QA FrameQA training question-answer pairs
FRAMEQA_TYPES = ("object", "number", "color", "location")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.qa_config(
      common.parse_preset(arg), vocab="tgif_frame", builder="tgif_qa", builder_config="frameqa",
      train_examples=TRAIN_EXAMPLES, qtypes=FRAMEQA_TYPES, qtype_source="feature")


get_config = common.with_modifiers(get_config)

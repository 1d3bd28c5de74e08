"""VIOLET MSRVTT-QA (spec §6, main_qaoe.py): fc over the 1,500 most frequent training answers at
the text [CLS] of (video, question), CE; 5 frames, text 25, lr 1.2e-5, wd 1e-3, batch 10 x 4
GPUs, 20 epochs; eval: accuracy (argmax == answer; an answer outside the vocabulary is wrong),
per wh-word too (paper 43.9, spec §8).

`:demo` answers moving_shapes' questions from scratch (answer vocabulary built from its train
split; accuracy per type colour / shape / direction / count); `:tiny` is for tests.
"""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 158_581    # MSRVTT-QA training question-answer pairs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.qa_config(common.parse_preset(arg), vocab="msrvtt_qa", builder="msrvtt",
                                 builder_config="qa", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

"""VIOLET MSVD-QA (spec §6, args_msvd-qa.json: size_vocab 1000): the MSRVTT-QA recipe
(configs/violet_msrvtt_qa.py) over the 1,000 most frequent training answers (paper 47.9)."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 30_933     # MSVD-QA training question-answer pairs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.qa_config(common.parse_preset(arg), vocab="msvd_qa", builder="msvd_qa",
                                 builder_config="", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

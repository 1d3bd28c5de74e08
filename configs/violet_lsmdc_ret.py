"""VIOLET LSMDC text-to-video retrieval (spec §6): the MSRVTT recipe
(configs/violet_msrvtt_ret.py) on the LSMDC 2016 training clips (one description each), 20
epochs; eval on the 1,000-clip public test set."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 101_079   # LSMDC16 training clips


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.retrieval_config(
      common.parse_preset(arg), builder="lsmdc", builder_config="retrieval", train_split="train",
      test_split="test", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

"""VIOLET DiDeMo paragraph-to-video retrieval (spec §6): the MSRVTT recipe
(configs/violet_msrvtt_ret.py) with each video's paragraph (its segment captions joined) as the
text, truncated to the 25 tokens of the released args; 20 epochs of the 8,394 training videos;
eval on the test split (paper ≈ 32.6 / 62.8 / 74.7, spec §8)."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 8_394     # DiDeMo training videos (one paragraph each)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.retrieval_config(
      common.parse_preset(arg), builder="didemo", builder_config="", train_split="train",
      test_split="test", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

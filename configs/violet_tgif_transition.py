"""VIOLET TGIF-Transition (multiple-choice QA, spec §6): the TGIF-Action recipe
(configs/violet_tgif_action.py) on the transition questions (paper 95.7)."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 52_704     # TGIF-QA Transition training questions


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.mc_config(common.parse_preset(arg), builder="tgif_qa",
                                 builder_config="transition", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

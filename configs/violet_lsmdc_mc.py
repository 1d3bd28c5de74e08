"""VIOLET LSMDC multiple choice (spec §6, main_qamc.py): the 5 captions of a clip (no question)
scored by fc at the text [CLS], CE over the options; the TGIF-Action recipe
(configs/violet_tgif_action.py) on the LSMDC16 multiple-choice training questions (paper 82.8)."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 101_079    # LSMDC16 multiple-choice training questions (one per clip)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.mc_config(common.parse_preset(arg), builder="lsmdc", builder_config="mc",
                                 train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

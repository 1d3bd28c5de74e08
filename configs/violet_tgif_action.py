"""VIOLET TGIF-Action (multiple-choice QA, spec §6, args_tgif-action.json): each of the 5 options
as "question option" with the video (encoded once), fc at the text [CLS] -> logits [B, 5] (no
temperature), CE; 5 frames, text 25, lr 1.2e-5, wd 1e-3, batch 8 x 4 GPUs, 20 epochs; accuracy
(paper 92.5). `:demo` / `:tiny`: moving_shapes' 5-way caption choice."""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 20_475     # TGIF-QA Action training questions


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.mc_config(common.parse_preset(arg), builder="tgif_qa",
                                 builder_config="action", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

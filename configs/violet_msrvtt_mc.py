"""VIOLET MSRVTT multiple choice (spec §6; paper 91.9): MSR-VTT has no multiple-choice training
set, so the model is the retrieval fine-tuning of configs/violet_msrvtt_ret.py ('ret' on the 9k
training videos) and each test question's 5 captions are scored by the same fc at the text [CLS]
(mc_scores), accuracy on the MSRVTT-MC test split. `--mode eval` with
`--config.init.from_checkpoint=<a violet_msrvtt_ret workdir>` scores an existing retrieval model.
`:demo` / `:tiny`: moving_shapes retrieval training, evaluated on its 5-way caption choice.
"""
from __future__ import annotations

import ml_collections

from configs import common, violet_common, violet_msrvtt_ret


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = common.parse_preset(arg)
  c = violet_common.finetune_config(
      preset, task="ret", builder="msrvtt", builder_config="retrieval", train_split="train_9k",
      train_examples=violet_msrvtt_ret.TRAIN_EXAMPLES)
  if preset == "":
    c.evals = violet_common.mc_evals(c, preset, builder="msrvtt", builder_config="mc",
                                     split="test")
  else:
    c.evals = violet_common.mc_evals(c, preset)
  return c


get_config = common.with_modifiers(get_config)

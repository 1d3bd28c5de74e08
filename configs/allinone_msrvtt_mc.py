"""All-in-one MSRVTT multiple choice (spec §5, §7 `task_finetune_msrvttchoice`): each of the 5
captions is paired with the video and scored by rank_output (= the ITM "match" logit); accuracy
on the MSRVTT-MC test split. Zero-shot (EVAL.md 77.5, `test_only=True`): `--mode eval` with the
converted pre-trained model. Fine-tuning: the multiple-choice CE over the true caption and 4
random captions of the training set (irtr with data.train.false_texts=4), lr 1e-4, batch 256,
10 epochs of the 9k training videos. `:demo` / `:tiny`: moving_shapes' 5-way caption choice.
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, common

TRAIN_EXAMPLES = 9_000


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  if preset == "":
    c = allinone_common.experiment(
        preset, variant=variant, objectives=dict(irtr=1.0), task="retrieval", builder="msrvtt",
        builder_config="retrieval", split="train_9k", lr=1e-4, batch_size=256, epochs=10,
        train_examples=TRAIN_EXAMPLES)
    c.model.irtr_false_texts = 4     # the in-batch fallback (false_texts=0) takes as many
    c.data.train.false_texts = 4     # the reference's draw_false_text for MSRVTT-MC training
    c.init.reinit = ("^itm_score/",)  # its multiple_choice loss re-creates the ITM head (§5)
    c.evals = allinone_common.mc_evals(c, preset, builder="msrvtt", builder_config="mc")
    return c
  c = allinone_common.experiment(preset, objectives=dict(multiple_choice=1.0),
                                 task="multiple_choice", builder="moving_shapes", lr=1e-4,
                                 batch_size=256)
  c.evals = allinone_common.mc_evals(c, preset)
  return c


get_config = common.with_modifiers(get_config)

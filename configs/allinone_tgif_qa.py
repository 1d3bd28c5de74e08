"""All-in-one TGIF-QA (spec §5, §7): `--config configs/allinone_tgif_qa.py:<task>[,<preset>]`,
task `frameqa` (default) | `action` | `transition`, preset '' | demo | tiny (and a size Ti/S/B).

* frameqa (`task_finetune_tgifqa`): open-ended, vqa_classifier over 1541 classes, 20 epochs,
  batch 512, lr 1e-4 (classifier 10x); per-type accuracy object/number/color/location
  (EVAL.md 64.0).
* action / transition (`task_finetune_tgif_action_trans`): 5-way multiple choice scored by
  mc_vqa_classifier on "question Options: all five options Answer: option_k", 100 epochs,
  batch 512, lr 1e-4 (EVAL.md Action 92.5).
`:demo` / `:tiny`: moving_shapes QA (frameqa) or its 5-way multiple choice (action/transition).
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, allinone_msrvtt_qa, common

TASKS = ("frameqa", "action", "transition")
FRAMEQA_TYPES = ("object", "number", "color", "location")
TRAIN_EXAMPLES = dict(frameqa=39_392, action=20_475, transition=52_704)
MC_TEMPLATE = "{question} Options: {options} Answer: {choice}"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  task, variant, preset = allinone_common.parse(arg, TASKS)
  if task == "frameqa":
    return allinone_msrvtt_qa.qa_config(
        preset, variant=variant, builder="tgif_qa", builder_config="frameqa", num_labels=1541,
        train_examples=TRAIN_EXAMPLES[task],
        **(dict(qtypes=FRAMEQA_TYPES, qtype_source="feature") if preset == "" else {}))
  c = allinone_common.experiment(
      preset, variant=variant, objectives=dict(mc_vqa=1.0), task="multiple_choice",
      builder="tgif_qa",
      builder_config=task, lr=1e-4, batch_size=512, epochs=100,
      train_examples=TRAIN_EXAMPLES[task], heads=dict(mc_vqa=True, mlm=False, itm=False),
      lr_mult=allinone_common.HEAD_LR_MULT, mc_template=MC_TEMPLATE)
  c.evals = allinone_common.mc_evals(c, preset, mc_template=MC_TEMPLATE)
  return c


get_config = common.with_modifiers(get_config)

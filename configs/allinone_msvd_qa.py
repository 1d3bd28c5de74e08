"""All-in-one MSVD-QA (spec §7 `task_finetune_msvdqa`): as configs/allinone_msrvtt_qa.py with
1001 answer classes (1000 most frequent train answers + 1); EVAL.md accuracy 46.5."""
from __future__ import annotations

import ml_collections

from configs import allinone_common, allinone_msrvtt_qa, common

TRAIN_EXAMPLES = 30_933     # MSVD-QA training question-answer pairs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  return allinone_msrvtt_qa.qa_config(preset, variant=variant, builder="msvd_qa",
                                      builder_config="", num_labels=1001,
                                      train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

"""All-in-one HMDB51 linear evaluation, split 1 (spec §5, §7
`task_finetune_action_recognition_hmdb51`): prompt "A person is doing [MASK]", 3 frames, 52
classes, lr 1e-4, batch 256, 50 epochs, only head-like parameters trained; top-1 / top-5 on the
split-1 test videos (EVAL.md 50.8). `:demo` / `:tiny`: moving_shapes' 8 motion directions.
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, common

TRAIN_EXAMPLES = 3_570     # split 1: 70 training clips x 51 classes


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  return allinone_common.classification_config(
      preset, variant=variant, builder="hmdb51", builder_config="split1", num_classes=51,
      prompt="A person is doing [MASK]", lr=1e-4, num_frames=3, train_examples=TRAIN_EXAMPLES,
      eval_split="test")


get_config = common.with_modifiers(get_config)

"""All-in-one Kinetics-400 linear evaluation (spec §5, §7
`task_finetune_action_recognition_k400`): prompt "A persion is doing [MASK]" (the reference's
spelling) with 8 frames (the 3-frame temporal embedding is re-initialised), 401 classes, lr
3e-4, batch 256, 50 epochs, only head-like parameters trained; top-1 / top-5 on the validation
split (EVAL.md 50.8). `:demo` / `:tiny`: moving_shapes' 8 motion directions.
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, common

TRAIN_EXAMPLES = 240_436    # Kinetics-400 training clips (the count depends on your copy)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  return allinone_common.classification_config(
      preset, variant=variant, builder="kinetics400", num_classes=400,
      prompt="A persion is doing [MASK]", lr=3e-4, num_frames=8, train_examples=TRAIN_EXAMPLES,
      eval_split="validation", 
      # converted with 8 frames (the first 3 temporal rows kept, the rest zero, as the reference
      # loads it): python -m vlx.convert ... --set num_frames=8 --out <this dir>
      init=allinone_common.converted_pretrain(variant) + "_8f")


get_config = common.with_modifiers(get_config)

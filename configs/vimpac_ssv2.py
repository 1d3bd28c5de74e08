"""VIMPAC action classification on Something-Something v2 (spec §5; paper 68.1 top-1, large).

No horizontal flip (direction words would swap meaning): 6 training views (crop x scale) and the
centre crop only at test, 22 epochs. Data: `vlx-tfds build data_builders/ssv2` (6 fps), then the
token datasets (README "VIMPAC"); evaluated on the validation split (the test labels are not
public).
"""
from __future__ import annotations

import ml_collections

from configs import vimpac_common as vc

TRAIN_EXAMPLES = 168_913


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return vc.finetune_config(arg, builder="ssv2", builder_config="default", num_classes=174,
                            train_examples=TRAIN_EXAMPLES, test_split="validation", epochs=22,
                            flip=False, test_crops=False)

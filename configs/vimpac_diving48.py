"""VIMPAC action classification on Diving48 (V2 labels; spec §5; paper 85.5 top-1, large).

Data: `vlx-tfds build data_builders/diving48 --config=fps16` (16 fps, as the reference's token
LMDBs; stride 8 gives the 2 fps clips), then the token datasets (README "VIMPAC").
"""
from __future__ import annotations

import ml_collections

from configs import vimpac_common as vc

TRAIN_EXAMPLES = 15_027


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return vc.finetune_config(arg, builder="diving48", builder_config="fps16", num_classes=48,
                            train_examples=TRAIN_EXAMPLES, test_split="test")

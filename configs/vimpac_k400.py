"""VIMPAC action classification on Kinetics-400 (spec §5; paper 75.3 top-1, large).

Data: `vlx-tfds build data_builders/kinetics400 --config=fps8`, then the token datasets (README
"VIMPAC"); evaluated on the validation split.
"""
from __future__ import annotations

import ml_collections

from configs import vimpac_common as vc

TRAIN_EXAMPLES = 240_436    # Kinetics-400 training clips (the count depends on your copy)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return vc.finetune_config(arg, builder="kinetics400", builder_config="fps8", num_classes=400,
                            train_examples=TRAIN_EXAMPLES, test_split="validation")

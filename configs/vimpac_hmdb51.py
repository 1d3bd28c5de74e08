"""VIMPAC action classification on HMDB51 (spec §5; paper 65.9 top-1, large, mean of 3 splits).

Options: '' small / `large` / `large_frame256`, `split1` (default) / `split2` / `split3`. Data:
`vlx-tfds build data_builders/hmdb51 --config=splitN`, then the token datasets (README "VIMPAC").
"""
from __future__ import annotations

import ml_collections

from configs import vimpac_common as vc

TRAIN_EXAMPLES = 3_570      # 70 training clips x 51 classes per split


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return vc.finetune_config(arg, builder="hmdb51", builder_config="", num_classes=51,
                            train_examples=TRAIN_EXAMPLES, test_split="test", splits=True)

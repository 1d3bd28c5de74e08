"""VIMPAC action classification on UCF101 (spec §5; paper 92.7 top-1, large, mean of 3 splits).

Options: '' small / `large` / `large_frame256`, `split1` (default) / `split2` / `split3`, e.g.
`--config configs/vimpac_ucf101.py:large,split2`. Data: `vlx-tfds build data_builders/ucf101
--config=splitN`, then the token datasets (vlx.tokenize, README "VIMPAC"). `:demo` fine-tunes
from scratch on moving_shapes tokens (label: the shapes' colour, 8 classes; why not the motion
direction: vimpac_common.finetune_config) on a CPU in minutes and reports
eval/moving_shapes_test/top1 with num_classes and num_videos.
"""
from __future__ import annotations

import ml_collections

from configs import vimpac_common as vc

TRAIN_EXAMPLES = 9_537      # split 1 training videos (split 2: 9,586; split 3: 9,624)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return vc.finetune_config(arg, builder="ucf101", builder_config="", num_classes=101,
                            train_examples=TRAIN_EXAMPLES, test_split="test", splits=True)

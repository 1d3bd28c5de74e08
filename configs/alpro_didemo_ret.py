"""ALPRO DiDeMo paragraph-to-video retrieval fine-tuning (spec §6.1, §9): VTC + VTM from the
pre-trained checkpoint, 8 frames, text 50, lr 4e-5, warm-up 10%, clip 20, batch 12 x 8 GPUs,
10 epochs; eval: exact VTM ranking on the test split (the reference's R@1 35.9, spec §10).

`:demo` / `:tiny`: the moving_shapes presets of configs/alpro_msrvtt_ret.py with these numbers.
"""
from __future__ import annotations

import ml_collections

from configs import alpro_common, common

TRAIN_EXAMPLES = 8_394   # DiDeMo training videos, one paragraph each


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return alpro_common.retrieval_config(
      common.parse_preset(arg), builder="didemo", max_text_len=50, lr=4e-5, grad_clip=20.0,
      batch_size=12 * 8, epochs=10, train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

"""ALPRO MSRVTT text-video retrieval fine-tuning (spec §6.1, §9): VTC + VTM from the pre-trained
checkpoint, 8 frames, text 40, lr 2.5e-5, warm-up 10%, clip 5, batch 8 x 8 GPUs, 5 epochs; eval:
exact VTM ranking on the 1k test split (the reference's R@1 33.9, spec §10).

`:demo` fine-tunes on moving_shapes (init from a demo pre-training workdir with
--config.init.from_checkpoint=W, else from scratch) and compares vtc / vtm / rerank; `:tiny` tests.
"""
from __future__ import annotations

import ml_collections

from configs import alpro_common, common

# 7,010 training videos x 20 captions (the 7k split of the reference's train.jsonl).
TRAIN_EXAMPLES = 140_200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return alpro_common.retrieval_config(
      common.parse_preset(arg), builder="msrvtt", builder_config="retrieval",
      train_split="train_7k", test_split="test_1ka", max_text_len=40, lr=2.5e-5, grad_clip=5.0,
      batch_size=8 * 8, epochs=5, train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

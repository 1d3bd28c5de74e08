"""VIOLET MSRVTT text-to-video retrieval (spec §6, args_msrvtt-retrieval.json): every (video,
caption) pair of a 6-row group through the cross-modal transformer, fc / 0.05, softmax over the
texts per video; 5 frames, text 25, lr 1.2e-5, wd 1e-3, batch 6 x 4 GPUs, 20 epochs on the 9k
training videos (20 captions each); eval: sigmoid(fc) over every pair of the 1k-A test split,
R@1/5/10 + median rank (paper ≈ 34.5 / 63.0 / 73.4, spec §8).

`:demo` trains from scratch on moving_shapes ('ret' + the fast first stage 'vtc') and compares
exact 'vtm', 'vtc' and 'rerank' on the first 100 test clips; `:tiny` is for tests.
"""
from __future__ import annotations

import ml_collections

from configs import common, violet_common

TRAIN_EXAMPLES = 9_000 * 20   # MSRVTT train_9k: (video, caption) items, 20 captions per video


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return violet_common.retrieval_config(
      common.parse_preset(arg), builder="msrvtt", builder_config="retrieval",
      train_split="train_9k", test_split="test_1ka", train_examples=TRAIN_EXAMPLES)


get_config = common.with_modifiers(get_config)

"""Everything-at-Once MSR-VTT retrieval fine-tuning (spec §6, configs/finetuning/msrvtt*.yaml).

Paper preset: the authors' released MSR-VTT feature files (data_builders/msrvtt_features),
48 video tokens ([2D | 3D], 32 s) and 3072 audio frames per clip, batch 128, Adam lr 5e-5, 25
epochs, all six pair losses at weight 1, DAVEnet in eval mode; evals t2v / t2va / t2v+a on the
JSFusion 1k-A test split with R@k over 1000 queries (968 clips present). Options: `:s3d`, `:clip`
(batch 64, CLIP features and the frozen CLIP text tower). `:demo` / `:tiny` fine-tune from scratch
on moving_shapes (see configs/eao_pretrain.py); `:demo` measured once (300 steps, 2 shared cores,
2 min 52 s wall): t2v R@1 41, t2va R@1 88 on 100 test clips (chance 1)."""
from __future__ import annotations

import ml_collections

from configs import eao_common as ec

TRAIN_EXAMPLES = 9000   # 1k-A training videos (one random caption each per epoch)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset, variant, strategy = ec.parse(arg)
  return ec.finetune_config(preset, variant, strategy, builder="msrvtt_features",
                            train_examples=TRAIN_EXAMPLES, batch=64 if variant == "clip" else 128,
                            lr=5e-5, epochs=25, video_tokens=48, audio_frames=3072,
                            complete_size=1000, test_split="test_1ka")


get_config = ec.with_modifiers(get_config)

"""Everything-at-Once YouCook2 retrieval fine-tuning (spec §6, configs/finetuning/youcook*.yaml).

Paper preset: the authors' released YouCook2 feature files (data_builders/youcook2_features),
72 video tokens ([2D | 3D], 48 s) and 4608 audio frames per clip, batch 256, Adam lr 1e-5, 5
epochs, all six pair losses at weight 1, DAVEnet in eval mode; evals t2v / t2va / t2v+a on the
validation clips with R@k over 3350 queries (the clips with features present). Options: `:s3d`,
`:clip`. `:demo` / `:tiny` fine-tune from scratch on moving_shapes."""
from __future__ import annotations

import ml_collections

from configs import eao_common as ec

TRAIN_EXAMPLES = 10_337   # YouCook2 training clips (adjust to your copy's count)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset, variant, strategy = ec.parse(arg)
  return ec.finetune_config(preset, variant, strategy, builder="youcook2_features",
                            train_examples=TRAIN_EXAMPLES, batch=256, lr=1e-5, epochs=5,
                            video_tokens=72, audio_frames=4608, complete_size=3350,
                            test_split="validation")


get_config = ec.with_modifiers(get_config)

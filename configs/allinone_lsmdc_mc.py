"""All-in-one LSMDC multiple choice (spec §7 `task_finetune_lsmdcchoice`): 5 captions per clip
scored by rank_output, CE over the options, lr 1e-5, batch 256, 20 epochs of the LSMDC16
multiple-choice training questions; accuracy on its test split (zero-shot EVAL.md 56.3: `--mode
eval` with the converted pre-trained model). `:demo` / `:tiny`: moving_shapes' 5-way choice.
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, common

TRAIN_EXAMPLES = 101_079    # LSMDC16 multiple-choice training questions (one per clip)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  c = allinone_common.experiment(
      preset, variant=variant, objectives=dict(multiple_choice=1.0), task="multiple_choice",
      builder="lsmdc",
      builder_config="mc", lr=1e-5, batch_size=256, epochs=20, train_examples=TRAIN_EXAMPLES)
  if preset == "demo":   # 5 joint passes per clip: fewer steps keep it to minutes
    c.optim.lr = 3e-4
    c.train.update(num_steps=200, ckpt_every=200)
  c.evals = allinone_common.mc_evals(c, preset)
  return c


get_config = common.with_modifiers(get_config)

"""ALPRO's entity prompter, stage 1 of pre-training (spec §5.4): the same model trained with VTC only.

Default: the paper's setting (spec §9, pretrain_prompter.json): WebVid2M + CC3M, 4 frames at 224²,
AdamW(0.9, 0.98) lr 1e-4, 5% linear warm-up then linear decay, clip 20, batch 16 x 8 GPUs x 2
accumulation steps (256 per update), 10 epochs. The data, presets and model sizes are those of
configs/alpro_pretrain.py; stage 2 loads the result with --config.init.prompter=<this workdir>.
"""
from __future__ import annotations

import ml_collections

from configs import alpro_pretrain, common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = common.parse_preset(arg)
  c = alpro_pretrain.get_config(preset)
  c.model.head = "prompter"
  c.model.pem = False
  c.objectives = ml_collections.ConfigDict(dict(vtc=1.0))
  if preset == "":
    c.optim.update(lr=1e-4, grad_clip=20.0)
    c.optim.schedule.warmup_ratio = 0.05
    c.train.grad_accum = 2   # 16 per GPU x 8 GPUs x 2 accumulation steps = 256 per update
    c.data.global_batch_size = 16 * 8 * 2
    c.train.num_steps = alpro_pretrain.PAPER_NUM_STEPS  # 10 epochs at 256 per update
  return c


get_config = common.with_modifiers(get_config)

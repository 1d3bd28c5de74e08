"""All-in-one pre-training (spec §4, §7 `task_mlm_itm_webvid_howto`): VTM (ITM + 0.1 x WPA) + MLM.

Paper: WebVid2M + HowTo100M, 3 frames, text 40, AdamW (0.9, 0.98) lr 1e-4, wd 0.01, 2,500 warm-up
steps then linear decay over 25,000 steps (200,000 for B in TRAIN.md: --config.train.num_steps),
batch 4096 (set --config.train.grad_accum so a device holds 16-32 clips), ViT-B/16 from ImageNet.
ITM negatives are random clips of the dataset (data.train.false_videos=1, draw_false_image=1).
Paper preset: `init.vit_file` names the timm ImageNet weights the reference loads with
`pretrained=True` (spec §6.2; timm 0.4.5 names: B `vit_base_patch16_224` = today's
`vit_base_patch16_224.orig_in21k_ft_in1k`, S `deit_small_distilled_patch16_224`, Ti
`deit_tiny_patch16_224`), saved as a state dict (.pth or .safetensors); no BERT weights are loaded
(the text embeddings start fresh, as in the reference).
`:demo` pre-trains a small All-in-one on moving_shapes and evaluates zero-shot text->video
retrieval by exact VTM (rank_output over every pair of 100 test clips); `:tiny` is for tests.
"""
from __future__ import annotations

import ml_collections

from configs import allinone_common, common

OBJECTIVES = dict(mlm=1.0, itm=1.0, wpa=1.0)
# timm state dicts per size: torch.save(timm.create_model(name, pretrained=True).state_dict(), f)
PRETRAINED_VIT = {"B": "pretrained/vit_base_patch16_224.pth",
                  "S": "pretrained/deit_small_distilled_patch16_224.pth",
                  "Ti": "pretrained/deit_tiny_patch16_224.pth"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  _, variant, preset = allinone_common.parse(arg)
  c = allinone_common.experiment(
      preset, variant=variant, objectives=OBJECTIVES, task="retrieval", builder="webvid", lr=1e-4,
      batch_size=4096, num_steps=25_000, warmup_steps=2_500, init="")
  if preset == "":
    # WebVid2M + HowTo100M: one dataset per step (vlx.data.mixture)
    c.data.train.mixture = ("webvid", "howto100m")
    c.init.vit_file = PRETRAINED_VIT[variant]
    c.train.update(ckpt_every=5000, keep=3)
    c.evals = ml_collections.ConfigDict()
  else:
    if preset == "demo":
      c.optim.lr = 5e-4
      c.train.update(num_steps=500, ckpt_every=250)
    c.evals = allinone_common.retrieval_evals(c, preset, ("vtm",))
  # ITM negatives: a random other clip of the dataset per row (the reference's draw_false_image=1)
  c.data.train.false_videos = 1
  return c


get_config = common.with_modifiers(get_config)

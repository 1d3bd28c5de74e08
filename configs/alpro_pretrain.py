"""ALPRO pre-training (VTC + VTM + MLM [+ PEM]); stage 2 after configs/alpro_prompter_pretrain.py.

Default: the paper's setting (spec §9: WebVid2M + CC3M, TimeSformer-B/16 + BERT-base, 4 frames at
224², AdamW(0.9, 0.98) lr 1e-4, 5% linear warm-up then linear decay, clip 20, batch 16x16 GPUs, 10 epochs).
`:demo` runs the same code on the embedded moving_shapes data on a CPU in minutes; `:tiny` is for tests.
"""
from __future__ import annotations

import ml_collections

from configs import common
from vlx.models.alpro.model import model_config as alpro_model  # noqa: F401 (configs' name)

# Paper: 10 epochs over WebVid2M (~2.5M clips) + CC3M (~3.0M images) at batch 256 (spec §9);
# the exact count depends on the number of readable examples of your copies.
PAPER_NUM_STEPS = 10 * (2_500_000 + 3_000_000) // 256


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = common.parse_preset(arg)
  c = common.base_config()
  c.seed = 42
  c.model = alpro_model(preset)
  # PEM (spec §5.4) needs a prompter trained first (configs/alpro_prompter_pretrain.py): on in
  # the paper's setting; demo/tiny turn it on with --config.model.pem=True
  # --config.objectives.pem=1.0 --config.init.prompter=<prompter workdir> (README).
  c.model.pem = preset == ""
  c.objectives = ml_collections.ConfigDict(dict(vtc=1.0, vtm=1.0, mlm=1.0,
                                                pem=1.0 if c.model.pem else 0.0))
  # init.prompter: a vlx workdir of a prompter run (its latest params) or a converted prompter
  # dir; loaded into model.prompter (without prompt features) at a fresh start.
  c.init.prompter = ""
  c.optim.update(name="adamw", lr=1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.0,
                 grad_clip=20.0)
  c.optim.schedule.update(type="linear", warmup_steps=0, warmup_ratio=0.05, end_value=0.0)

  if preset == "":
    # WebVid2M + CC3M (spec §7, §9): 4 frames headtail, decoded to 256, random 224 crop.
    c.data.update(global_batch_size=256, tokenizer="bert-base-uncased", mlm_probability=0.15,
                  shuffle_buffer=10_000)
    c.data.train.update(builder="webvid", builder_config="", split="train", num_frames=4,
                        sampling="headtail", resolution=256, crop=224, max_text_len=30)
    # MetaLoader: one dataset per step, uniformly; CC3M rows are images (is_image -> PEM's image
    # prompts), 1 frame repeated 4x. Augmentation (spec §7): WebVid TemporalConsistent
    # RandomAugment(2, 5); CC3M RandomResizedCrop(224, 0.2-1) + h-flip + RandomAugment(2, 7).
    c.data.train.update(mixture=("webvid", "cc3m"), augment="temporal_randaug",
                        image_augment="image_randaug")
    c.train.update(num_steps=PAPER_NUM_STEPS, log_every=100, eval_every=0, ckpt_every=5000,
                   keep=3, grad_accum=1)
    c.evals = ml_collections.ConfigDict()
  elif preset == "demo":
    # moving_shapes on one CPU in minutes; retrieval on its test split.
    c.data.update(global_batch_size=32, tokenizer="moving_shapes", shuffle_buffer=4000,
                  mlm_probability=0.15)
    c.data.train.update(builder="moving_shapes", builder_config="", split="train",
                        num_frames=c.model.video.num_frames, sampling="rand",
                        resolution=c.model.video.img_size, crop=0, max_text_len=24)
    c.optim.lr = 5e-4
    # From scratch, BERT's [CLS] starts almost identical for every caption (cosine ~0.9999 at
    # init), which stalls VTC for hundreds of steps; a larger text lr breaks the tie quickly.
    c.optim.lr_mult = ml_collections.ConfigDict({"^text/": 4.0})
    c.optim.grad_clip = 5.0
    c.optim.schedule.warmup_ratio = 0.1
    c.train.update(num_steps=400, log_every=20, eval_every=0, ckpt_every=200, keep=2)
    c.evals = ml_collections.ConfigDict(dict(moving_shapes_test=common.retrieval_eval(
        builder="moving_shapes", split="test", num_frames=c.model.video.num_frames,
        sampling="uniform", resolution=c.model.video.img_size, max_text_len=24, batch_size=50,
        mode="vtc")))
  else:  # tiny: seconds, for tests
    c.data.update(global_batch_size=8, tokenizer="moving_shapes", shuffle_buffer=64)
    c.data.train.update(builder="moving_shapes", builder_config="tiny", split="train",
                        num_frames=c.model.video.num_frames, sampling="rand",
                        resolution=c.model.video.img_size, crop=0, max_text_len=16)
    c.optim.lr = 1e-3
    c.optim.schedule.warmup_ratio = 0.0
    c.optim.schedule.warmup_steps = 1
    c.train.update(num_steps=4, log_every=1, eval_every=0, ckpt_every=2, keep=3)
    c.evals = ml_collections.ConfigDict(dict(moving_shapes_test=common.retrieval_eval(
        builder="moving_shapes", builder_config="tiny", split="test",
        num_frames=c.model.video.num_frames, sampling="uniform",
        resolution=c.model.video.img_size, max_text_len=16, batch_size=8, mode="vtc")))
  return c


get_config = common.with_modifiers(get_config)

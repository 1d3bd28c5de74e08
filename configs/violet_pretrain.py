"""VIOLET pre-training: VTM + MLM + MVM (spec §5, §8).

Paper preset (`_data/args_pretrain.json`, README, spec §8): WebVid2.5M + CC3M + YT-Temporal-180M
(the README's best checkpoint; the code loops WebVid then CC3M each epoch) as a one-dataset-per-step
mixture, 4 frames at 224 px (zero-padded to a square, `resize='pad_square'`, ImageNet
normalisation), 32 text tokens, batch 12 per GPU x 4 GPUs, AdamW (0.9, 0.98, eps 1e-8) lr 2e-5
with decoupled weight decay 1e-3 on every parameter (torch AdamW: no exclusions), constant lr, no
clipping, 5 epochs of WebVid + CC3M, every loss weight 1. Frames: the reference pre-extracts T
frames at int(n/(T+1)*(i+1)); `sampling='interior'` does the same on the stored frames. CC3M images are
1-frame videos in the reference (Lv = 50); here a mixture batch has one frame count, so an image
is repeated to 4 frames.

Initialisation: the Kinetics Video Swin the reference loads (`_snapshot/ckpt_video-swin.pt`),
converted with `python -m vlx.convert --family violet` (its 'video_swin' variant puts the weights
at `video/`), as `init.from_converted`. The reference also starts the text embeddings, the
cross-modal layers and the (untied) MLM head from bert-base-uncased: add
`--config.init.bert_dir=<local copy of bert-base-uncased>` (a Hugging Face folder, like ALPRO's) to
fill `text/`, `encoder/N` and `mlm_head/` (vlx/models/violet/layout.py); without it they start
fresh. `init.vit_file` is refused (the video tower is a Video Swin).

MVM targets: on the fly from the frozen DALL-E encoder (`model.dvae`, OpenAI's encoder.pkl
converted with `python -m vlx.convert --family violet` into DVAE_CONVERTED), or, with the `tokens`
option (`--config configs/violet_pretrain.py:tokens`, `:demo,tokens`), from token datasets written
by `python -m vlx.tokenize` (builder `<name>_vq` beside each source in the same data_dir, with
`--grid` = resolution / 32): the `frames` reader plus a `token_grid` reader aligned with it, so
`vq_tokens` are the codes of exactly the sampled frames, and no dVAE in the step.

`:demo` pre-trains a small VIOLET on moving_shapes on a CPU in minutes (frames resized to 96 px:
3x3 visual tokens, the least blockwise masking allows; targets from a random dVAE) and logs
train/{vtm,mlm,mvm}_loss and train/{vtm,mlm,mvm}_acc; `:tiny` is for tests.
"""
from __future__ import annotations

import ml_collections

from configs import common
from vlx.models.violet.model import model_config

VIDEO_SWIN_CONVERTED = "converted/violet_video_swin"   # ckpt_video-swin.pt, converted
DVAE_CONVERTED = "converted/dalle_encoder"            # OpenAI's encoder.pkl, converted
REFERENCE_GPUS = 4
PER_GPU_BATCH = 12
# 5 epochs over WebVid2.5M + CC3M at 48 clips per step (the args json); adjust for your copies.
PAPER_NUM_STEPS = 5 * (2_500_000 + 3_000_000) // (PER_GPU_BATCH * REFERENCE_GPUS)
# One dataset per step with probability ∝ weight: WebVid and CC3M by size (the reference visits
# each whole dataset once per epoch); YT-Temporal's share is not given by the reference (it is
# not in the released code): as WebVid's here.
# Builder configs named so `:tokens` finds the token datasets `vlx.tokenize --config C` writes.
PAPER_MIXTURE = ("webvid/2M:2.5", "cc3m/default:3.0", "yt_temporal/default:2.5")
DEMO = dict(num_frames=4, resolution=96, max_text_len=16, batch=16)
TINY = dict(num_frames=2, resolution=96, max_text_len=12, batch=8)


def _vq(name: str, config: str, grid: int) -> tuple[str, str]:
  """The token dataset `vlx.tokenize --builder name --config config --grid grid` writes:
  builder `<name>_vq`, config `<config>[_g<grid>_pad]` (no suffix at VIOLET's grid 7)."""
  tag = "" if grid == 7 else f"g{grid}_pad"
  return name + "_vq", "_".join(p for p in (config, tag) if p)


def _vq_entry(entry: str, grid: int) -> str:
  """A mixture entry 'name[/config][:weight]' -> the same entry on its token dataset."""
  head, colon, weight = entry.partition(":")
  name, _, config = head.partition("/")
  name, config = _vq(name, config, grid)
  return name + (f"/{config}" if config else "") + colon + weight


def from_token_datasets(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """MVM targets from `vlx.tokenize` datasets instead of the dVAE inside the step."""
  t = c.data.train
  grid = int(t.resolution) // 32
  t.builder, t.builder_config = _vq(t.builder, t.builder_config, grid)
  t.mixture = tuple(_vq_entry(e, grid) for e in t.mixture)
  t.inputs = ml_collections.ConfigDict(dict(
      video=dict(reader="frames"),
      vq_tokens=dict(reader="token_grid", height=grid, width=grid, align_with="video")))
  c.model.dvae.enabled = False
  c.model.dvae.converted = ""
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  tokens = "tokens" in parts
  c = _get_config(",".join(p for p in parts if p != "tokens"))
  return from_token_datasets(c) if tokens else c


def _get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = common.parse_preset(arg)
  c = common.base_config()
  c.seed = 42
  c.model = model_config(preset)
  c.model.head = "pretrain"
  c.model.dvae.enabled = True
  c.objectives = ml_collections.ConfigDict(dict(vtm=1.0, mlm=1.0, mvm=1.0))
  c.optim.update(name="adamw", lr=2e-5, b1=0.9, b2=0.98, eps=1e-8, weight_decay=1e-3,
                 grad_clip=0.0, wd_exclude=())
  c.optim.schedule.update(type="constant", warmup_steps=0, warmup_ratio=0.0, end_value=0.0)
  c.data.train.update(task="retrieval", resize="pad_square", norm="imagenet", crop=0,
                      text_field="captions")
  c.evals = ml_collections.ConfigDict()
  if preset == "":
    c.model.dvae.converted = DVAE_CONVERTED
    c.init.from_converted = VIDEO_SWIN_CONVERTED
    c.data.update(global_batch_size=PER_GPU_BATCH * REFERENCE_GPUS, tokenizer="bert-base-uncased",
                  shuffle_buffer=10_000)
    c.data.train.update(builder="webvid", builder_config="2M", split="train", num_frames=4,
                        sampling="interior", resolution=224, max_text_len=32,
                        mixture=PAPER_MIXTURE)
    c.train.update(num_steps=PAPER_NUM_STEPS, log_every=100, eval_every=0, ckpt_every=5000,
                   keep=3)
    return c
  sizes = DEMO if preset == "demo" else TINY
  c.model.text.max_position_embeddings = max(c.model.text.max_position_embeddings,
                                             sizes["max_text_len"])
  c.data.update(global_batch_size=sizes["batch"], tokenizer="moving_shapes",
                shuffle_buffer=4000 if preset == "demo" else 64)
  c.data.train.update(builder="moving_shapes", builder_config="" if preset == "demo" else "tiny",
                      split="train", num_frames=sizes["num_frames"], sampling="rand",
                      resolution=sizes["resolution"], max_text_len=sizes["max_text_len"])
  if preset == "demo":
    c.optim.update(lr=5e-4, grad_clip=5.0)
    c.optim.schedule.update(type="linear", warmup_ratio=0.1)
    c.train.update(num_steps=300, log_every=25, eval_every=0, ckpt_every=300, keep=1)
  else:  # tiny: seconds, for tests
    c.optim.lr = 1e-3
    c.train.update(num_steps=2, log_every=1, eval_every=0, ckpt_every=2, keep=1)
  return c


get_config = common.with_modifiers(get_config)

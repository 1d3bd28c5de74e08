"""Shared pieces of the All-in-one configs (spec §7: config.py named configs + TRAIN.md / EVAL.md).

`experiment()` builds one run from the paper's per-task numbers; the task files only name those
numbers, their data and their evals. Presets: '' = the paper's setting (All-in-one-B unless
`variant` says otherwise; needs the real datasets), `demo` = moving_shapes on one CPU in minutes
(a small All-in-one), `tiny` = seconds, for tests. Step counts: epochs x training examples / batch
(the example counts of the official annotation files; set --config.train.num_steps for yours).
"""
from __future__ import annotations

import math

import ml_collections

from configs import common
from vlx.models.allinone.model import model_config

VARIANTS = ("Ti", "S", "B")


def converted_pretrain(variant: str) -> str:
  """The released pre-trained model converted by `python -m vlx.convert --family allinone`."""
  return f"converted/allinone_pretrain_{variant.lower()}"


def parse(arg: str | None, tasks: tuple[str, ...] = ()) -> tuple[str, str, str]:
  """`--config FILE:<parts>`: comma-separated task (of `tasks`, default the first), model size
  (Ti | S | B, default B) and preset ('' | demo | tiny), in any order -> (task, variant, preset).
  E.g. `:S`, `:demo`, `:action,S`."""
  task, variant, preset = (tasks[0] if tasks else ""), "B", ""
  for part in [p.strip() for p in (arg or "").split(",") if p.strip()]:
    if part in tasks:
      task = part
    elif part in VARIANTS:
      variant = part
    else:
      preset = common.parse_preset(part)
  return task, variant, preset
# Paper video input (spec §2): one frame per segment (random in training, middle in eval),
# frames squashed to 268 x 268 (the reference decodes at 512 x 512, aspect ignored, then resizes
# the short side to 268 = 224 x 1.2), crop 224, ImageNet statistics. (Interpolation: bilinear
# with antialiasing here, nearest in the reference.)
PAPER_VIDEO = dict(resolution=268, crop=224, resize="square", norm="imagenet")
DEMO_SIZE = 32                      # moving_shapes clips (64 px) resized to 32 px, patch 8
MOVING_SHAPES_QTYPES = ("colour", "shape", "direction", "count")
MOVING_SHAPES_NUM_LABELS = 32       # 25 answers in moving_shapes QA (+ spare classes)
MOVING_SHAPES_CLASSES = 8           # `label`: the 8 motion directions
# The QA / MC heads learn 10x faster than the backbone (lr_mult=10, spec §7).
HEAD_LR_MULT = {"^vqa_classifier/": 10.0}
# Linear evaluation (K400 / HMDB51): only the reference's head-like names train (spec §5).
# One regex (a ConfigDict iterates its keys sorted, so no first-match ordering is relied on).
LINEAR_EVAL_LR_MULT = {"^(?!(mlm_score|itm_score|txt_proj|vid_proj|pooler|vqa_classifier)/)": 0.0}


def allinone_model(preset: str, variant: str = "B") -> ml_collections.ConfigDict:
  """The model block: a released size for the paper preset, a small one for demo / tiny."""
  m = model_config(variant if preset == "" else "tiny")
  # irtr's false texts when the batch has no `false_text_ids` (config.data.train.false_texts = 0):
  # that many other rows of the batch; with false_texts > 0 the data's random captions are used.
  m.irtr_false_texts = 15               # draw_false_text of the retrieval configs (spec §7)
  # Evaluation patch order: 'random' = the reference (visual_embed permutes every frame's patches
  # in eval too; here reproducibly per clip and view), 'raster' = identity order.
  m.eval_patch_order = "random"
  if preset == "demo":
    m.update(variant="custom", img_size=DEMO_SIZE, patch_size=8, hidden_size=128, num_layers=4,
             num_heads=4, max_text_len=24, drop_rate=0.0, drop_path_rate=0.0, shared_embedding_dim=64,
             kernel_init="lecun")
    m.irtr_false_texts = 7
  elif preset == "tiny":
    m.irtr_false_texts = 3
  return m


# config.data.train.false_texts of the retrieval fine-tunings (the reference's draw_false_text,
# spec §7: 15); demo / tiny keep the irtr passes cheap.
RETRIEVAL_FALSE_TEXTS = {"": 15, "demo": 3, "tiny": 2}


def experiment(preset: str, *, objectives: dict[str, float], task: str, builder: str,
               builder_config: str = "", split: str = "train", lr: float, batch_size: int,
               epochs: float = 0, train_examples: int = 0, num_steps: int = 0,
               warmup_steps: int = 0, num_frames: int = 3, max_text_len: int = 40,
               heads: dict | None = None, lr_mult: dict | None = None, variant: str = "B",
               init: str | None = None, **train_fields) -> ml_collections.ConfigDict:
  """One All-in-one run: AdamW (0.9, 0.98, eps 1e-8, wd 0.01), linear warm-up (10 % of the
  steps unless `warmup_steps`) then linear decay to 0, for the paper preset; demo / tiny data
  otherwise. `train_fields` go to config.data.train (mc_template, class_prompt, ...)."""
  c = common.base_config()
  c.model = allinone_model(preset, variant)
  c.model.heads.update(heads or {})
  c.objectives = ml_collections.ConfigDict(objectives)
  c.optim.update(name="adamw", lr=lr, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.01,
                 grad_clip=0.0)
  c.optim.schedule.update(type="linear", warmup_steps=warmup_steps,
                          warmup_ratio=0.0 if warmup_steps else 0.1, end_value=0.0)
  c.optim.lr_mult = ml_collections.ConfigDict(lr_mult or {})
  # Paths whose shape may change from the init source and then keep their fresh init: the text
  # position table (max_text_len != 40: the reference re-initialises it) and the temporal
  # embedding (frames != 3: fresh zeros; the reference keeps the first 3 rows and zero-pads,
  # which `python -m vlx.convert ... --set num_frames=T` reproduces, e.g. for K400).
  c.init.keep_init = ("^text_embeddings/position/", "^transformer/temporal_embed$")
  if {"multiple_choice", "mc_vqa"} & set(objectives):  # the reference re-creates its ITM head
    c.init.reinit = ("^itm_score/",)                   # for these fine-tunings (spec §5)
  c.data.train.update(task=task, **train_fields)
  c.data.mlm_masking = "whole_word"   # whole_word_masking=True in every reference command (§2)
  if preset == "":
    c.model.num_frames = num_frames
    c.model.max_text_len = max(max_text_len, 40)
    c.init.from_converted = converted_pretrain(variant) if init is None else init
    c.data.update(global_batch_size=batch_size, tokenizer="bert-base-uncased",
                  shuffle_buffer=10_000, mlm_probability=0.15)
    c.data.train.update(builder=builder, builder_config=builder_config, split=split,
                        num_frames=num_frames, sampling="segment_rand",
                        max_text_len=max_text_len, **PAPER_VIDEO)
    steps = num_steps or math.ceil(epochs * train_examples / batch_size)
    c.train.update(num_steps=steps, log_every=100, eval_every=0, ckpt_every=1000, keep=2)
  elif preset == "demo":
    c.data.update(global_batch_size=32, tokenizer="moving_shapes", shuffle_buffer=4000)
    c.data.train.update(builder="moving_shapes", builder_config="", split="train",
                        num_frames=c.model.num_frames, sampling="segment_rand",
                        resolution=DEMO_SIZE, crop=0, resize="square", norm="imagenet",
                        max_text_len=c.model.max_text_len)
    c.optim.update(lr=3e-4, weight_decay=0.01, grad_clip=5.0)
    c.optim.schedule.update(warmup_steps=0, warmup_ratio=0.1)
    c.train.update(num_steps=300, log_every=25, eval_every=0, ckpt_every=300, keep=1)
  else:  # tiny: seconds, for tests
    c.data.update(global_batch_size=8, tokenizer="moving_shapes", shuffle_buffer=64)
    c.data.train.update(builder="moving_shapes", builder_config="tiny", split="train",
                        num_frames=c.model.num_frames, sampling="segment_rand",
                        resolution=c.model.img_size, crop=0, resize="square", norm="imagenet",
                        max_text_len=c.model.max_text_len)
    c.optim.update(lr=1e-3)
    c.optim.schedule.update(warmup_ratio=0.0, warmup_steps=1)
    c.train.update(num_steps=2, log_every=1, eval_every=0, ckpt_every=2, keep=1)
  return c


def eval_fields(c: ml_collections.ConfigDict, preset: str, **overrides) -> dict:
  """Data fields of an eval block: the training input's frames / size / text, middle frames,
  centre crop; `split` 'test' (demo: the first 100 clips; tiny: the 16-clip test split)."""
  t = c.data.train
  out = dict(builder=t.builder, builder_config=t.builder_config, num_frames=t.num_frames,
             sampling="segment_middle", resolution=t.resolution, crop=t.crop, resize=t.resize,
             norm=t.norm, max_text_len=t.max_text_len,
             split="test[:100]" if preset == "demo" else "test",
             batch_size={"": 32, "demo": 50}.get(preset, 8))
  out.update(overrides)
  return out


def retrieval_evals(c: ml_collections.ConfigDict, preset: str, modes: tuple[str, ...],
                    **overrides) -> ml_collections.ConfigDict:
  """One retrieval eval per mode ('vtc' = ind_itc cosine, 'vtm' = rank_output over every pair,
  'rerank' = VTC top-k re-scored by VTM); named `test` when there is one mode."""
  base = eval_fields(c, preset, video_chunk=16, text_chunk=64, pair_chunk=64, k=16,
                     protocol="tie_aware", **overrides)  # the reference's tie rules (spec §5)
  if len(modes) == 1:
    return ml_collections.ConfigDict(dict(test=common.retrieval_eval(mode=modes[0], **base)))
  return ml_collections.ConfigDict({f"test_{m}": common.retrieval_eval(mode=m, **base)
                                    for m in modes})


def qa_evals(c: ml_collections.ConfigDict, preset: str, **overrides) -> ml_collections.ConfigDict:
  """Open-ended QA accuracy as the reference measures it: over in-vocabulary answers only."""
  overrides = dict(overrides, protocol="oov_excluded")
  if preset:
    overrides = dict(overrides, qtypes=MOVING_SHAPES_QTYPES, qtype_source="feature")
  return ml_collections.ConfigDict(dict(test=common.qa_eval(**eval_fields(c, preset,
                                                                          **overrides))))


def mc_evals(c: ml_collections.ConfigDict, preset: str, **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(test=common.mc_eval(**eval_fields(c, preset,
                                                                          **overrides))))


def classification_evals(c: ml_collections.ConfigDict, preset: str,
                         **overrides) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(test=common.classification_eval(
      **eval_fields(c, preset, class_prompt=c.data.train.class_prompt, **overrides))))


def classification_config(preset: str, *, builder: str, builder_config: str = "",
                          num_classes: int, prompt: str, lr: float, num_frames: int,
                          train_examples: int, eval_split: str, variant: str = "B",
                          init: str | None = None) -> ml_collections.ConfigDict:
  """Action recognition by linear evaluation (spec §5, §7: K400 / HMDB51): the fixed prompt
  text with the clip, vqa_classifier over classes + 1 on the pooled [CLS]; only head-like
  parameters train (LINEAR_EVAL_LR_MULT), batch 256, 50 epochs. Demo / tiny: moving_shapes'
  8 motion directions, fully fine-tuned (a from-scratch demo backbone has little to probe)."""
  classes = num_classes + 1 if preset == "" else MOVING_SHAPES_CLASSES
  c = experiment(preset, objectives=dict(openend_vqa=1.0), task="classification",
                 builder=builder, builder_config=builder_config, lr=lr, batch_size=256,
                 epochs=50, train_examples=train_examples, num_frames=num_frames,
                 heads=dict(num_qa_labels=classes, mlm=False, itm=False),
                 lr_mult=LINEAR_EVAL_LR_MULT if preset == "" else None,
                 class_prompt=prompt if preset == "" else "", variant=variant, init=init)
  c.evals = classification_evals(c, preset, **({"split": eval_split} if preset == "" else {}))
  return c

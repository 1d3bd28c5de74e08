"""Shared pieces of the VIOLET downstream configs (spec §6: retrieval, open-ended QA, QA-MC).

`finetune_config` builds one fine-tuning run from the paper's per-task numbers; the task files only
name their dataset, training size and evals. The paper preset follows the released args_*.json
and agent.py: AdamW (0.9, 0.98, eps 1e-8) with decoupled weight decay 1e-3 on EVERY parameter
(torch AdamW on model.parameters(): no exclusions), constant lr 1.2e-5, no clipping, 20 epochs,
5 frames at 224 px, 25 text tokens, initialised from the converted pre-trained checkpoint (every
same-name, same-shape key: the heads `fc` come from the VTM head; QA-OE keeps a fresh last layer).

Batch: `size_batch` per GPU x `torch.cuda.device_count()` under DataParallel; the README runs
every fine-tuning with CUDA_VISIBLE_DEVICES='0,1,2,3', so REFERENCE_GPUS = 4 -> global batch
24 (retrieval), 40 (QA-OE), 32 (QA-MC). DataParallel splits the batch over the GPUs before the
model pairs rows, so the retrieval softmax runs over each GPU's 6 rows: config.model.ret_group.

Step counts: epochs x training examples / batch, with the example counts of the official
annotation files (override --config.train.num_steps for your copy). Frames: the reference
pre-extracts T frames at int(n/(T+1)*(i+1)) (uniform, endpoints excluded) for training and
testing alike: `sampling='interior'` does the same on the stored frames. Frames are zero-padded
to a square, then resized (`resize='pad_square'`, the reference's str2img).
"""
from __future__ import annotations

import math

import ml_collections

from configs import common
from vlx.models.violet.model import model_config

CONVERTED_PRETRAIN = "converted/violet_pretrain"   # python -m vlx.convert --family violet
REFERENCE_GPUS = 4
PER_GPU_BATCH = {"ret": 6, "qa": 10, "mc": 8}      # args_msrvtt-retrieval / msvd-qa / tgif-action
HEADS = {"ret": "retrieval", "qa": "qaoe", "mc": "qamc"}
DATA_TASKS = {"ret": "retrieval", "qa": "qa", "mc": "multiple_choice"}
PAPER = dict(lr=1.2e-5, weight_decay=1e-3, epochs=20, num_frames=5, resolution=224,
             max_text_len=25)
# QA-OE answer vocabularies (spec §6): the `size_vocab` most frequent training answers.
ANSWER_VOCAB = {"msvd_qa": 1000, "msrvtt_qa": 1500, "tgif_frame": 1540, "lsmdc_fib": 908}
# QA-OE keeps a fresh last head layer (shape differs from the pre-trained VTM head's, spec §6).
QAOE_FRESH = ("^fc/fc2/",)

# Demo / tiny data: moving_shapes (25 answers: 8 colours + 7 shapes + 8 directions + 2 counts).
MOVING_SHAPES_QTYPES = ("colour", "shape", "direction", "count")
MOVING_SHAPES_ANSWERS = 32
DEMO = dict(num_frames=4, resolution=32, max_text_len=16)
TINY = dict(num_frames=2, resolution=32, max_text_len=12)


def violet_model(preset: str, *, task: str, num_answers: int = 0) -> ml_collections.ConfigDict:
  """config.model: the released sizes ('') or the small demo / tiny ones, with `task`'s head."""
  m = model_config(preset)
  m.update(head=HEADS[task], num_answers=num_answers if task == "qa" else 0)
  # rows per retrieval pairing group ('ret'): the reference's per-GPU batch; 0 = whole batch
  m.ret_group = PER_GPU_BATCH["ret"] if preset == "" else 0
  return m


def finetune_config(preset: str, *, task: str, builder: str, builder_config: str = "",
                    train_split: str = "train", train_examples: int = 0, num_answers: int = 0,
                    text_field: str = "captions",
                    objectives: dict[str, float] | None = None) -> ml_collections.ConfigDict:
  """One VIOLET fine-tuning run: task 'ret' | 'qa' | 'mc' on `builder`/`builder_config`
  (paper preset) or moving_shapes (demo / tiny). Evals are added by the task files."""
  if task not in HEADS:
    raise ValueError(f"VIOLET fine-tuning task {task!r}; expected one of {tuple(HEADS)}")
  c = common.base_config()
  answers = num_answers if preset == "" else MOVING_SHAPES_ANSWERS
  c.model = violet_model(preset, task=task, num_answers=answers)
  c.objectives = ml_collections.ConfigDict(objectives or {task: 1.0})
  c.optim.update(name="adamw", lr=PAPER["lr"], b1=0.9, b2=0.98, eps=1e-8,
                 weight_decay=PAPER["weight_decay"], grad_clip=0.0, wd_exclude=())
  c.optim.schedule.update(type="constant", warmup_steps=0, warmup_ratio=0.0, end_value=0.0)
  c.init.keep_init = QAOE_FRESH if task == "qa" else ()
  c.data.answer_top_k = num_answers if task == "qa" and preset == "" else 0
  c.data.train.update(task=DATA_TASKS[task], resize="pad_square", norm="imagenet", crop=0,
                      text_field=text_field, mc_template="{question} {choice}")
  if preset == "":
    batch = PER_GPU_BATCH[task] * REFERENCE_GPUS
    c.init.from_converted = CONVERTED_PRETRAIN
    c.data.update(global_batch_size=batch, tokenizer="bert-base-uncased", shuffle_buffer=10_000)
    c.data.train.update(builder=builder, builder_config=builder_config, split=train_split,
                        num_frames=PAPER["num_frames"], sampling="interior",
                        resolution=PAPER["resolution"], max_text_len=PAPER["max_text_len"])
    c.train.update(num_steps=math.ceil(PAPER["epochs"] * train_examples / batch), log_every=100,
                   eval_every=0, ckpt_every=1000, keep=2)
  elif preset == "demo":
    c.model.text.max_position_embeddings = max(c.model.text.max_position_embeddings,
                                               DEMO["max_text_len"])
    c.data.update(global_batch_size=16, tokenizer="moving_shapes", shuffle_buffer=4000)
    c.data.train.update(builder="moving_shapes", builder_config="", split="train",
                        num_frames=DEMO["num_frames"], sampling="rand",
                        resolution=DEMO["resolution"], max_text_len=DEMO["max_text_len"])
    # from scratch: lr 1e-4 (3e-4 collapses the embeddings to one point), clipping, warm-up
    c.optim.update(lr=1e-4, weight_decay=1e-3, grad_clip=5.0)
    c.optim.schedule.update(type="constant", warmup_ratio=0.1)
    c.train.update(num_steps=600, log_every=25, eval_every=0, ckpt_every=600, keep=1)
  else:  # tiny: seconds, for tests
    c.data.update(global_batch_size=8, tokenizer="moving_shapes", shuffle_buffer=64)
    c.data.train.update(builder="moving_shapes", builder_config="tiny", split="train",
                        num_frames=TINY["num_frames"], sampling="rand",
                        resolution=TINY["resolution"], max_text_len=TINY["max_text_len"])
    c.optim.update(lr=1e-3)
    c.train.update(num_steps=2, log_every=1, eval_every=0, ckpt_every=2, keep=1)
  return c


def eval_fields(c: ml_collections.ConfigDict, preset: str, **overrides) -> dict:
  """Data fields of an eval block: the training input's frames / size / text, fixed frames
  (the paper: interior, as the reference's extraction; demo / tiny: segment middles), split
  'test' (demo: its first 100 clips)."""
  t = c.data.train
  out = dict(builder=t.builder, builder_config=t.builder_config, num_frames=t.num_frames,
             sampling="interior" if preset == "" else "segment_middle", resolution=t.resolution, crop=0, resize=t.resize,
             norm=t.norm, max_text_len=t.max_text_len,
             split="test[:100]" if preset == "demo" else "test",
             batch_size={"": 32, "demo": 50}.get(preset, 4))
  out.update(overrides)
  return out


def retrieval_evals(c: ml_collections.ConfigDict, preset: str,
                    **overrides) -> ml_collections.ConfigDict:
  """Paper: 'vtm' = sigmoid(fc) over every (text, video) pair, videos ranked per text by a stable
  sort without rounding (eval_retrieval.py; protocol 'stable'), every caption a query. Demo: the
  three modes ('vtc' cosine, exact 'vtm', 'vtc' top-16 re-scored by the cross-modal head)."""
  chunks = dict(video_chunk=8, text_chunk=32, pair_chunk=64, k=16, protocol="stable")
  base = eval_fields(c, preset, **dict(chunks, **overrides))
  if preset == "":
    return ml_collections.ConfigDict(dict(test=common.retrieval_eval(
        mode="vtm", all_captions=True, **base)))
  if preset == "demo":
    return ml_collections.ConfigDict({f"test_{m}": common.retrieval_eval(mode=m, **base)
                                      for m in ("vtm", "vtc", "rerank")})
  return ml_collections.ConfigDict(dict(test=common.retrieval_eval(
      mode="vtm", **dict(base, video_chunk=4, text_chunk=4))))


def qa_evals(c: ml_collections.ConfigDict, preset: str, **overrides) -> ml_collections.ConfigDict:
  """Accuracy = argmax == answer over every test question; an answer outside the vocabulary
  counts as wrong ('oov_wrong'). Demo / tiny: moving_shapes' question types."""
  if preset:
    overrides = dict(overrides, qtypes=MOVING_SHAPES_QTYPES, qtype_source="feature")
  return ml_collections.ConfigDict(dict(test=common.qa_eval(
      **eval_fields(c, preset, protocol="oov_wrong", **overrides))))


def mc_evals(c: ml_collections.ConfigDict, preset: str, **overrides) -> ml_collections.ConfigDict:
  """Accuracy = argmax over the options' fc logits == answer."""
  return ml_collections.ConfigDict(dict(test=common.mc_eval(
      **eval_fields(c, preset, mc_template=c.data.train.mc_template, **overrides))))


def retrieval_config(preset: str, *, builder: str, builder_config: str = "", train_split: str,
                     test_split: str, train_examples: int) -> ml_collections.ConfigDict:
  """Text-to-video retrieval fine-tuning ('ret'; demo adds 'vtc' for the fast first stage)."""
  # demo, from scratch: the cross-encoder 'ret' (fc / 0.05 from a random head) overwhelms the
  # shared transformer at full weight; at 0.1 'vtc' aligns the modalities and 'ret' follows
  objectives = {"ret": 0.1, "vtc": 1.0} if preset == "demo" else {"ret": 1.0}
  c = finetune_config(preset, task="ret", builder=builder, builder_config=builder_config,
                      train_split=train_split, train_examples=train_examples,
                      objectives=objectives)
  c.evals = retrieval_evals(c, preset, **({"split": test_split} if preset == "" else {}))
  return c


def qa_config(preset: str, *, vocab: str, builder: str, builder_config: str = "",
              train_examples: int, test_split: str = "test",
              **eval_overrides) -> ml_collections.ConfigDict:
  """Open-ended QA fine-tuning over the `ANSWER_VOCAB[vocab]` most frequent training answers."""
  c = finetune_config(preset, task="qa", builder=builder, builder_config=builder_config,
                      train_examples=train_examples, num_answers=ANSWER_VOCAB[vocab])
  c.evals = qa_evals(c, preset, **(dict(eval_overrides, split=test_split) if preset == ""
                                   else {}))
  return c


def mc_config(preset: str, *, builder: str, builder_config: str, train_examples: int,
              test_split: str = "test") -> ml_collections.ConfigDict:
  """Multiple-choice QA fine-tuning ('mc'): CE over the options' logits."""
  c = finetune_config(preset, task="mc", builder=builder, builder_config=builder_config,
                      train_examples=train_examples)
  c.evals = mc_evals(c, preset, **({"split": test_split} if preset == "" else {}))
  return c

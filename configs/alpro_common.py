"""Shared pieces of the ALPRO downstream configs (retrieval and QA fine-tuning, spec §6/§9).

`finetune_config` builds one experiment from the paper's per-task numbers; the task files only
name those numbers and the demo/tiny data. Step counts: epochs x training examples / batch; the
example counts are those of the reference's annotation files as far as the spec states them (set
`--config.train.num_steps` for your copy).
"""
from __future__ import annotations

import math

import ml_collections

from configs import common
from configs.alpro_pretrain import alpro_model

# Demo / tiny data: moving_shapes (answers: 8 colours + 7 shapes + 8 directions + 2 counts = 25).
MOVING_SHAPES_QTYPES = ("colour", "shape", "direction", "count")
MOVING_SHAPES_NUM_LABELS = 32


def finetune_config(preset: str, *, head: str, objectives: dict[str, float], builder: str,
                    builder_config: str = "", num_frames: int, max_text_len: int, lr: float,
                    grad_clip: float, batch_size: int, grad_accum: int = 1, epochs: int,
                    train_examples: int, num_labels: int = 0, train_split: str = "train",
                    test_split: str = "test") -> ml_collections.ConfigDict:
  """A fine-tuning config: the paper's setting for preset '' (arguments), demo/tiny otherwise.

  Init: config.init.from_converted = a converted released checkpoint (`python -m vlx.convert`),
  or config.init.from_checkpoint = a vlx pre-training workdir; time_embed is resized on load."""
  c = common.base_config()
  c.model = alpro_model(preset)
  c.model.update(head=head, num_labels=num_labels, pem=False)
  c.objectives = ml_collections.ConfigDict(objectives)
  c.optim.update(name="adamw", lr=lr, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.0,
                 grad_clip=grad_clip)
  c.optim.schedule.update(type="linear", warmup_steps=0, warmup_ratio=0.1, end_value=0.0)
  c.optim.lr_mult = ml_collections.ConfigDict()
  # Model keys whose shape may differ from the init source and then keep their fresh init
  # (regexes; time_embed is always resized instead, spec §8). Empty: any other change is an error.
  c.init.keep_init = ()
  task = "qa" if head == "qa" else "retrieval"
  if preset == "":
    c.model.video.num_frames = num_frames
    c.model.video.drop_path_rate = 0.1
    c.data.update(global_batch_size=batch_size, tokenizer="bert-base-uncased",
                  shuffle_buffer=10_000)
    c.data.train.update(builder=builder, builder_config=builder_config, split=train_split,
                        # spec §7: fine-tuning decodes straight to 224x224, no crop
                        num_frames=num_frames, sampling="rand", resolution=224, crop=0,
                        max_text_len=max_text_len, task=task,
                        # spec §7: TemporalConsistentRandomAugment(2, 5) in QA fine-tuning;
                        # retrieval builds it but never applies it
                        augment="temporal_randaug" if task == "qa" else "")
    c.train.update(num_steps=math.ceil(epochs * train_examples / batch_size), log_every=100,
                   eval_every=0, ckpt_every=1000, keep=2, grad_accum=grad_accum)
  elif preset == "demo":
    c.model.video.num_frames = 8          # 4 pre-training frames -> 8: time_embed is resized
    c.data.update(global_batch_size=32, tokenizer="moving_shapes", shuffle_buffer=4000)
    c.data.train.update(builder="moving_shapes", builder_config="", split="train", num_frames=8,
                        sampling="rand", resolution=c.model.video.img_size, crop=0,
                        max_text_len=24, task=task)
    c.optim.lr = 1e-4 if task == "retrieval" else 2e-4
    c.optim.grad_clip = 5.0
    c.train.update(num_steps=200, log_every=20, eval_every=0, ckpt_every=200, keep=1)
  else:  # tiny: seconds, for tests
    c.data.update(global_batch_size=8, tokenizer="moving_shapes", shuffle_buffer=64)
    c.data.train.update(builder="moving_shapes", builder_config="tiny", split="train",
                        num_frames=c.model.video.num_frames, sampling="rand",
                        resolution=c.model.video.img_size, crop=0, max_text_len=16, task=task)
    c.optim.lr = 1e-3
    c.optim.schedule.update(warmup_ratio=0.0, warmup_steps=1)
    c.train.update(num_steps=2, log_every=1, eval_every=0, ckpt_every=2, keep=1)
  return c


def retrieval_config(preset: str, *, builder: str, builder_config: str = "", max_text_len: int,
                     lr: float, grad_clip: float, batch_size: int, epochs: int,
                     train_examples: int, train_split: str = "train",
                     test_split: str = "test") -> ml_collections.ConfigDict:
  """A retrieval fine-tuning experiment (VTC + VTM, 8 frames, from the converted pre-trained
  checkpoint in the paper's setting) with its evals: the task files only give the numbers."""
  c = finetune_config(
      preset, head="retrieval", objectives=dict(vtc=1.0, vtm=1.0), builder=builder,
      builder_config=builder_config, num_frames=8, max_text_len=max_text_len, lr=lr,
      grad_clip=grad_clip, batch_size=batch_size, epochs=epochs, train_examples=train_examples,
      train_split=train_split)
  if preset == "":
    c.init.from_converted = "converted/alpro_pretrain"  # python -m vlx.convert (README)
  c.evals = retrieval_evals(c, preset, test_split=test_split)
  return c


def eval_fields(c: ml_collections.ConfigDict) -> dict:
  """The data fields an eval shares with the training input of `c` (frames, size, text)."""
  t = c.data.train
  return dict(builder=t.builder, builder_config=t.builder_config, num_frames=t.num_frames,
              sampling="uniform", resolution=t.crop or t.resolution, max_text_len=t.max_text_len)


def retrieval_evals(c: ml_collections.ConfigDict, preset: str,
                    test_split: str = "test") -> ml_collections.ConfigDict:
  """Paper: exact 'vtm' on the test split (every pair through the fusion encoder, spec §6.1).
  Demo: the three modes on the first 100 test clips (vtc / exact vtm / vtc top-16 re-ranked)."""
  base = eval_fields(c)
  chunks = dict(video_chunk=16, text_chunk=64, pair_chunk=64, k=16)
  if preset == "":
    return ml_collections.ConfigDict(dict(test=common.retrieval_eval(
        split=test_split, batch_size=32, mode="vtm", all_captions=True, **chunks, **base)))
  if preset == "demo":
    return ml_collections.ConfigDict({f"test_{m}": common.retrieval_eval(
        split="test[:100]", batch_size=50, mode=m, **chunks, **base)
        for m in ("vtc", "vtm", "rerank")})
  return ml_collections.ConfigDict(dict(test=common.retrieval_eval(
      split="test", batch_size=8, mode="vtm", **dict(chunks, video_chunk=4, text_chunk=8),
      **base)))


def qa_evals(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
  """Open-ended QA accuracy on the test split; moving_shapes types come from its qa/qtype."""
  base = eval_fields(c)
  if preset == "":
    return ml_collections.ConfigDict(dict(test=common.qa_eval(split="test", batch_size=32,
                                                              **base)))
  return ml_collections.ConfigDict(dict(test=common.qa_eval(
      split="test", batch_size=50 if preset == "demo" else 8, qtypes=MOVING_SHAPES_QTYPES,
      qtype_source="feature", **base)))

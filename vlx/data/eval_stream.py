"""Per-host evaluation batches over a whole split, in a fixed order (make_eval_batches)."""
from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import modalities, qa, tasks, text_ops, video_ops
from vlx.data.errors import DataConfigError
from vlx.data.pipeline import get_builder
from vlx.padding import pad_rows


def _row_counts(builder, splits: list[str], ctx: tasks.EvalText, rows: str,
                num_views: int) -> list[int]:
  """Evaluation rows in each host's share of the split (reads only text features if needed)."""
  if rows in ("clip", "multiple_choice", "classification"):
    return [builder.info.splits[s].num_examples * num_views for s in splits]
  if rows == "qa":
    return [sum(len(c["question"]) for c in qa.read_qa_pairs(builder, s))
            for s in splits]
  return [sum(int(np.size(ex[ctx.field])) for ex in tasks.read_features(builder, s, (ctx.field,)))
          for s in splits]


def _eval_context(eval_cfg, config, builder, task: str,
                  inputs: dict | None = None) -> tasks.EvalText:
  """The tokenizer, labels, per-task text settings and input specs of one eval block."""
  where = "evals.<name>"
  tokenizer = text_ops.load_tokenizer(text_ops.tokenizer_name(config))
  ctx = tasks.EvalText(task=task, tokenizer=tokenizer, max_len=int(eval_cfg.max_text_len),
                       inputs=dict(inputs or {}))
  if task == "retrieval":
    ctx.field = tasks.text_field(eval_cfg, builder, where)
  elif task == "qa":
    ctx.qa_feature = qa.qa_feature(builder, f"{where}.task='qa'")
    ctx.vocab = qa.resolve_answer_vocab(config)
    ctx.qtypes = tuple(eval_cfg.get("qtypes", qa.MSRVTT_QTYPES))
    ctx.qtype_source = eval_cfg.get("qtype_source", "first_word")
    if ctx.qtype_source not in qa.QTYPE_SOURCES:
      raise DataConfigError(f"{where}.qtype_source={ctx.qtype_source!r}: expected one of "
                       f"{qa.QTYPE_SOURCES}")
  elif task == "multiple_choice":
    ctx.num_choices = tasks.num_choices(builder, eval_cfg.split, where)
    ctx.template = tasks.check_template(
        eval_cfg.get("mc_template", tasks.MC_TEMPLATE) or tasks.MC_TEMPLATE, where)
  else:
    tasks.num_classes(builder, where)
    ctx.prompt = eval_cfg.get("class_prompt", "") or ""
  return ctx


def make_eval_batches(eval_cfg, config, *, batch_size: int,
                      process_index: int | None = None,
                      process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This host's numpy batches over a whole split, in a fixed order; keys: the inputs' (the
  block's modality readers, vlx.data.modalities; default `video`) and tasks.TASK[task].eval_keys.

  Retrieval (default): one row per clip with its first, canonical caption (of
  eval_cfg.text_field, default 'captions'); with eval_cfg.all_captions one row per caption
  (video_index maps each text to its clip; the clip's video is repeated). QA (task or type 'qa'):
  one row per QA pair, text = the question, plus label (answer index in the vocabulary, -1 if not
  in it), qtype (index in eval_cfg.qtypes, -1 otherwise) and example_index (position of the QA
  pair in the split). Multiple choice: one row per example, choice_ids/choice_mask [B, K, L]
  (eval_cfg.mc_template), label = mc_answer. Classification: eval_cfg.num_views rows per clip
  (view_index v = the v-th of evenly spread temporal windows, or a reader's own view v when it
  reads whole views, e.g. token_grid's spatial_views x test_clips; example_index = the clip), text =
  eval_cfg.class_prompt, label = the ClassLabel index: average the logits over the rows of an
  example_index (tasks.average_over_views).
  Every host yields the same number of batches (`batch_size` rows each); rows past the end
  repeat the batch's first row with valid=False and video_index = example_index = view_index = -1.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  task = tasks.eval_task(eval_cfg)
  readers = modalities.make_readers(eval_cfg, "evals.<name>")
  builder = get_builder(eval_cfg.builder, eval_cfg.get("builder_config", ""), config.data.data_dir,
                        config.data.get("manual_dir", ""))
  ctx = _eval_context(eval_cfg, config, builder, task,
                      {k: v for r in readers.values() for k, v in r.spec().items()})
  rows = task if task != "retrieval" else (
      "captions" if eval_cfg.get("all_captions", False) else "clip")
  views = int(eval_cfg.get("num_views", 1) or 1) if task == "classification" else 1
  if views < 1:
    raise DataConfigError(f"evals.<name>.num_views={views} must be >= 1")
  if task == "classification":
    _check_whole_views(readers, views)
  splits = [tfds.split_for_jax_process(eval_cfg.split, process_index=i, process_count=process_count)
            for i in range(process_count)]
  clip_sizes = [builder.info.splits[s].num_examples for s in splits]
  if process_count > 1 or rows in ("clip", "multiple_choice", "classification"):
    sizes = _row_counts(builder, splits, ctx, rows, views)
    num_batches = -(-max(sizes) // batch_size)
    row_offset = sum(sizes[:process_index])
  else:
    num_batches, row_offset = None, 0  # one host: as many batches as its rows need
  clip_offset = sum(clip_sizes[:process_index])
  decoders = {r.feature: r.decoder() for r in readers.values() if r.decoder() is not None}
  ds = builder.as_dataset(split=splits[process_index], shuffle_files=False, decoders=decoders)
  view = int(eval_cfg.get("view", 0) or 0)  # retrieval views: an independent random sampling

  def process(i, ex):  # random samplings (if asked for) are fixed per clip (and view)
    seed = tf.stack([tf.constant(int(config.seed), tf.int64), i])
    if view:
      seed = tf.random.experimental.stateless_fold_in(seed, 7919 + view)
    out = _read_inputs(readers, ex, seed, views if task == "classification" else 0)
    out["video_index"] = tf.cast(i, tf.int32)
    out.update(tasks.TASK[task].eval_fields(ex, ctx))
    return out

  ds = ds.enumerate(start=clip_offset).map(process, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True).prefetch(2 * batch_size)
  empty = ctx.empty()
  emitted, start, buf = 0, row_offset, []
  for ex in ds.as_numpy_iterator():
    for row in ctx.rows(rows, ex):
      buf.append(row)
      if len(buf) == batch_size:
        yield pad_rows(ctx.finish(buf, start), batch_size)
        emitted, start, buf = emitted + 1, start + batch_size, []
  if buf:
    yield pad_rows(ctx.finish(buf, start), batch_size)
    emitted += 1
  while num_batches is not None and emitted < num_batches:  # this host's share ended first
    yield pad_rows(empty, batch_size)
    emitted += 1


def _check_whole_views(readers, views: int) -> None:
  """A reader that reads whole views (e.g. token_grid's spatial_views x test_clips) defines how
  many a video has: num_views must be that number."""
  for prefix, reader in readers.items():
    if getattr(reader, "reads_whole_views", False) and reader.num_views != views:
      raise DataConfigError(
          f"evals.<name>.num_views={views}: input {prefix!r} reads {reader.num_views} views per "
          f"video (max(spatial_views, 1) x test_clips); set num_views={reader.num_views}")


def _read_inputs(readers, ex: dict, seed: tf.Tensor, views: int) -> dict[str, tf.Tensor]:
  """Every input of one evaluation example. views > 0: a leading axis of `views` rows, view v
  reading the v-th temporal window of the feature with fold_in(seed, v) (one view: the whole
  feature with `seed`); a reader with `reads_whole_views` reads view v of the whole feature
  (read(..., view=v)) instead."""
  out = {}
  for prefix, reader in readers.items():
    s = modalities.input_seed(seed, prefix, reader)
    encoded = modalities.encoded_input(reader, ex)
    if not views:
      out.update(reader.read(encoded, s, train=False))
      continue
    if views == 1:
      per_view = [reader.read(encoded, s, train=False)]
    elif getattr(reader, "reads_whole_views", False):
      per_view = [reader.read(encoded, tf.random.experimental.stateless_fold_in(s, v),
                              train=False, view=v) for v in range(views)]
    else:
      per_view = [reader.read(video_ops.temporal_window(encoded, v, views),
                              tf.random.experimental.stateless_fold_in(s, v), train=False, view=v)
                  for v in range(views)]
    out.update({k: tf.stack([p[k] for p in per_view]) for k in reader.keys})
  return out



"""Global training batches (tf.data): the stream behind make_train_iterator.

Training order depends only on (config.seed, step): each host reads its even share of the split,
shuffles it with a seed fixed per epoch, and derives every random choice (frames, crop, caption,
MLM mask) from stateless ops seeded by (seed, example counter or step). Resuming at step k starts
at the right epoch and skips the encoded records before anything is decoded, so it yields exactly
the batches k, k+1, ... of an uninterrupted run. A dataset mixture (config.data.train.mixture,
vlx.data.mixture) draws one dataset per step from (seed, step) and restarts each dataset's reader
at the batches it served before k, which keeps the same guarantee.
"""
from __future__ import annotations

import collections
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from vlx.data import mixture, qa, tasks, text_ops, video_ops
from vlx.data.pipeline import (PEM_KEYS, _check_num_labels, _tokenizer_name, _video_kwargs,
                               batch_axes, get_builder, is_image_dataset)

_SEED_SALT = dict(example=1, mlm=2, shuffle=3, erase=4, false_video=5, false_text=6)
_ENTRY_SEED_STRIDE = 100_003  # mixture entry i > 0 reads with seed + i * stride (own streams)
_DRAW_CHUNK = 256             # mixture draws computed per chunk of steps
FALSE_FIELDS = ("false_videos", "false_texts")  # config.data.train: the reference's draw_false_*
FALSE_KEYS = ("false_video", "false_text_ids", "false_text_mask")
_MAX_INT64 = np.iinfo(np.int64).max


def _example_seeds(seed: int, counter: tf.Tensor, salt: str = "example") -> tf.Tensor:
  return tf.stack([tf.constant(seed, tf.int64) * 16 + _SEED_SALT[salt],
                   tf.cast(counter, tf.int64)])


def false_counts(t, task: str) -> tuple[int, int]:
  """(false_videos, false_texts) of config.data.train, checked: >= 0, and > 0 only for task
  'retrieval' (the reference draws them for ITM and irtr; absent fields = 0)."""
  out = []
  for field in FALSE_FIELDS:
    n = int(t.get(field, 0) or 0)
    if n < 0:
      raise ValueError(f"config.data.train.{field}={n} must be >= 0")
    if n and task != "retrieval":
      raise ValueError(f"config.data.train.{field}={n} needs task 'retrieval' (got {task!r}): "
                       "false videos / texts are the negatives of ITM and irtr; set it to 0")
    out.append(n)
  return out[0], out[1]


def _shuffled_epochs(base: tf.data.Dataset, n: int, *, seed: int, salt: str, buffer: int,
                     first: int) -> tf.data.Dataset:
  """`base` (n records) epoch after epoch, each shuffled by (seed, salt, epoch) only, from the
  record `first` on: whole epochs and then records are skipped still encoded."""
  def epoch(e):
    return base.shuffle(buffer, seed=seed * 1_000_003 + _SEED_SALT[salt] + e * 7919,
                        reshuffle_each_iteration=False)

  return tf.data.Dataset.range(first // n, _MAX_INT64).flat_map(epoch).skip(first % n)


def _false_text_stream(builder, split: str, field: str) -> tf.data.Dataset:
  """The caption feature of `split` alone: video is neither read into the example nor decoded."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=tfds.decode.PartialDecoding({field: True}))
  return ds.map(lambda ex: {field: ex[field]})


def _false_draws(builder, split: str, *, counts: tuple[int, int], n_host: int, seed: int,
                 buffer: int, first_example: int, counter_of, vkw: dict,
                 field: str) -> tf.data.Dataset:
  """Per training row j (from `first_example` on) the reference's negatives, drawn from
  independent shuffled streams over the same host share: `false_video` [F_v, T, S, S, C]
  (preprocessed as `video`) and `false_caption` [F_t] (one random caption per drawn example).
  Draw f of row j is record j * F + f of its stream, its frames / caption seeded by
  (seed, global example counter, f): a pure function of (seed, step), resumable by skipping."""
  f_v, f_t = counts
  parts = {}
  if f_v:
    base = builder.as_dataset(split=split, shuffle_files=False,
                              decoders=tfds.decode.PartialDecoding(
                                  {"video": True}, decoders={"video": tfds.decode.SkipDecoding()}))
    ds = _shuffled_epochs(base.map(lambda ex: ex["video"]), n_host, seed=seed,
                          salt="false_video", buffer=buffer, first=first_example * f_v)

    def video(k, encoded):
      s = tf.random.experimental.stateless_fold_in(
          _example_seeds(seed, counter_of(k // f_v), "false_video"), k % f_v)
      return video_ops.preprocess_clip(encoded, seed=s, **vkw)

    ds = ds.enumerate(start=first_example * f_v).map(video, num_parallel_calls=tf.data.AUTOTUNE,
                                                     deterministic=True)
    parts["false_video"] = ds.batch(f_v, drop_remainder=True)
  if f_t:
    ds = _shuffled_epochs(_false_text_stream(builder, split, field), n_host, seed=seed,
                          salt="false_text", buffer=buffer, first=first_example * f_t)

    def caption(k, ex):
      s = tf.random.experimental.stateless_fold_in(
          _example_seeds(seed, counter_of(k // f_t), "false_text"), k % f_t)
      return tasks.train_row("retrieval", ex, s, field)["caption"]

    ds = ds.enumerate(start=first_example * f_t).map(caption, num_parallel_calls=tf.data.AUTOTUNE,
                                                     deterministic=True)
    parts["false_caption"] = ds.batch(f_t, drop_remainder=True)
  return tf.data.Dataset.zip(parts)


def _pem_patch_size(config, task: str) -> int:
  """The PEM box grid (config.model.video.patch_size) when config.model.pem, else 0."""
  model = config.get("model", None)
  if model is None or not model.get("pem", False) or task != "retrieval":
    return 0
  video = model.get("video", None)
  patch = int(video.get("patch_size", 0)) if video is not None else 0
  if patch <= 0:
    raise ValueError("config.model.pem is True but config.model.video.patch_size is not set: "
                     "the PEM crop boxes are snapped to the patch grid")
  return patch


def _label_table(vocab: dict[str, int]) -> tf.lookup.StaticHashTable:
  init = tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocab), tf.string),
                                             tf.constant(list(vocab.values()), tf.int32))
  return tf.lookup.StaticHashTable(init, default_value=-1)


def _qa_train_rows(config, builder, split: str, extra_keys: tuple[str, ...]):
  """One record per in-vocabulary QA pair of the host's clips (video still encoded), and their
  number: the reference trains on (clip, question) pairs whose answer is in ans2label."""
  vocab = qa.resolve_answer_vocab(config)
  _check_num_labels(config, len(vocab), "answer vocabulary")
  clips = qa.read_split_texts(builder, split, "qa")
  count = sum(int((qa.answer_labels(c["answer"], vocab) >= 0).sum()) for c in clips)
  table = _label_table(vocab)
  base = builder.as_dataset(split=split, shuffle_files=False,
                            decoders={"video": tfds.decode.SkipDecoding()})

  def rows(ex):
    pairs = dict(question=ex["qa"]["question"], label=table.lookup(ex["qa"]["answer"]))
    shared = dict(video=ex["video"], **{k: ex[k] for k in extra_keys})
    return tf.data.Dataset.from_tensor_slices(pairs).map(lambda r: dict(**shared, **r))

  return base.flat_map(rows).filter(lambda r: r["label"] >= 0), count


def _train_dataset(config, *, process_index: int, process_count: int, start_step: int = 0,
                   extra_keys: tuple[str, ...] = ()) -> tf.data.Dataset:
  """This host's training batches from step `start_step` on: dicts of
  tasks.TRAIN_KEYS[config.data.train.task] tensors ('qa': one row per QA pair, the others one
  per clip). With config.model.pem (retrieval task) also PEM_KEYS: `crop_video` float32
  [B, T, S, S, C] (the clip with the pixels outside one random patch-aligned box per clip at
  raw 0) and `mpm_mask` float32 [B, S/p, S/p] (1 = patch outside the box), S = crop or resolution.
  When any training dataset is an image dataset (is_image_dataset), also `is_image` bool [B]
  (True on the rows of image datasets; PEM then uses the image prompts).
  config.data.train.false_videos F_v / false_texts F_t > 0 (task 'retrieval'; the reference's
  draw_false_image / draw_false_text) add `false_video` float32 [B, F_v, T, S, S, C] and
  `false_text_ids` / `false_text_mask` int32 [B, F_t, L]: random other examples of the split
  (_false_draws; may by chance be the row's own clip, as in the reference).

  config.data.train.mixture (vlx.data.mixture): each step draws one entry from (seed, step);
  entry i reads its own batches (its rows augmented with `image_augment` if it is an image
  dataset, else `augment`) and restarts at the number of batches it served before start_step.
  `extra_keys` (e.g. 'video_id') are passed through from the TFDS examples, for tests.
  """
  d, t = config.data, config.data.train
  task = tasks.train_task(t)
  entries = mixture.parse(t)
  for field in ("augment", "image_augment"):
    mixture.check_augment(t.get(field, "") or "", f"config.data.train.{field}")
  if len(entries) > 1 and task != "retrieval":
    raise ValueError(f"config.data.train.mixture={tuple(t.mixture)!r} needs task 'retrieval' "
                     f"(got {task!r}): a mixture's datasets must give batches of one structure")
  builders = [get_builder(e.builder, e.builder_config, d.data_dir, d.get("manual_dir", ""))
              for e in entries]
  images = [is_image_dataset(b) for b in builders]
  kw = dict(process_index=process_index, process_count=process_count,
            extra_keys=tuple(extra_keys))
  if len(entries) == 1:
    return _entry_dataset(config, builders[0], seed=int(config.seed), start_step=start_step,
                          is_image=images[0] if images[0] else None, **kw)
  seed, weights = int(config.seed), [e.weight for e in entries]
  served = mixture.served_before(seed, weights, start_step)
  subs = [_entry_dataset(config, b, seed=seed + i * _ENTRY_SEED_STRIDE, start_step=int(n),
                         is_image=img if any(images) else None, **kw)
          for i, (b, n, img) in enumerate(zip(builders, served, images))]

  def chunk(lo):
    out = tf.numpy_function(lambda x: mixture.draws(seed, weights, int(x), int(x) + _DRAW_CHUNK),
                            [lo], tf.int64, stateful=False)
    return tf.ensure_shape(out, [_DRAW_CHUNK])

  choice = tf.data.Dataset.range(start_step, _MAX_INT64, _DRAW_CHUNK).map(chunk)
  ds = tf.data.Dataset.choose_from_datasets(subs, choice.unbatch())
  return ds.prefetch(max(int(d.get("prefetch", 2)), 1))



def _mlm_corruption(config, tokenizer, specials: tuple[int, ...]):
  """(ids, mask, seed) -> (mlm ids, labels) by config.data.mlm_masking: 'token' (ALPRO,
  text_ops.mask_tokens) or 'whole_word' (All-in-one, text_ops.whole_word_mask)."""
  d = config.data
  kw = dict(special_ids=specials, vocab_size=len(tokenizer), mask_id=tokenizer.mask_token_id,
            probability=d.mlm_probability)
  masking = d.get("mlm_masking", "token") or "token"
  if masking == "token":
    return lambda ids, mask, seed: text_ops.mask_tokens(ids, seed=seed, mask=mask, **kw)
  if masking != "whole_word":
    raise ValueError(f"config.data.mlm_masking={masking!r}: expected 'token' or 'whole_word'")
  name = _tokenizer_name(config)
  if name in text_ops.SHIPPED:  # demo vocabularies hold whole words only: each token is a word
    subword = np.zeros(len(tokenizer), bool)
  else:
    subword = text_ops.subword_table(tokenizer)
  bounds = (tokenizer.cls_token_id, tokenizer.sep_token_id)
  return lambda ids, mask, seed: text_ops.whole_word_mask(ids, seed=seed, subword=subword,
                                                          boundary_ids=bounds, **kw)

def _entry_dataset(config, builder, *, seed: int, process_index: int, process_count: int,
                   start_step: int, extra_keys: tuple[str, ...],
                   is_image: bool | None) -> tf.data.Dataset:
  """One dataset's training batches (its own step count from `start_step`); `is_image` not None
  adds the `is_image` key with that value on every row."""
  d, t = config.data, config.data.train
  task = tasks.train_task(t)
  if d.global_batch_size % process_count:
    raise ValueError(f"config.data.global_batch_size={d.global_batch_size} is not divisible by "
                     f"the {process_count} processes")
  local_batch = d.global_batch_size // process_count
  vkw = _video_kwargs(t, "config.data.train", "rand")
  vkw["augment"] = (t.get("image_augment", "") if is_image else t.get("augment", "")) or ""
  split = tfds.split_for_jax_process(t.split, process_index=process_index,
                                     process_count=process_count)
  field, k_choices = "", 0
  if task == "qa":
    base, n_host = _qa_train_rows(config, builder, split, tuple(extra_keys))
  else:
    n_host = builder.info.splits[split].num_examples
    feats = tasks.train_features(task, t, builder)
    field = feats[0] if task == "retrieval" else ""
    if task == "multiple_choice":
      k_choices = tasks.num_choices(builder, t.split, "config.data.train")
    if task == "classification":
      _check_num_labels(config, tasks.num_classes(builder, "config.data.train"),
                        f"label ClassLabel of {builder.name}")
    base = builder.as_dataset(split=split, shuffle_files=False,
                              decoders={"video": tfds.decode.SkipDecoding()})
    keep = ("video",) + feats + tuple(extra_keys)
    base = base.map(lambda ex: {k: ex[k] for k in keep})
  if n_host == 0:
    what = "QA pairs with in-vocabulary answers" if task == "qa" else "examples"
    raise ValueError(f"split {t.split!r} of {builder.name} has no {what} for process "
                     f"{process_index}/{process_count}")
  buffer = max(int(d.shuffle_buffer), 1)
  patch, size = _pem_patch_size(config, task), vkw["crop"] or vkw["resolution"]
  counts = false_counts(t, task)

  def counter_of(j):  # the global example counter of this host's j-th training row
    step, row = j // local_batch, j % local_batch
    return step * d.global_batch_size + process_index * local_batch + row

  first_example = start_step * local_batch
  ds = _shuffled_epochs(base, n_host, seed=seed, salt="shuffle", buffer=buffer,
                        first=first_example)  # the epoch's order depends on (seed, epoch) only
  ds = ds.enumerate(start=first_example)
  if any(counts):
    draws = _false_draws(builder, split, counts=counts, n_host=n_host, seed=seed, buffer=buffer,
                         first_example=first_example, counter_of=counter_of, vkw=vkw, field=field)
    ds = tf.data.Dataset.zip((ds, draws)).map(lambda je, f: (je[0], dict(je[1], **f)))

  def process(j, ex):
    step, counter = j // local_batch, counter_of(j)
    frame_seed, caption_seed = tf.unstack(tf.random.experimental.stateless_split(
        _example_seeds(seed, counter), 2))
    video = video_ops.preprocess_clip(ex["video"], seed=frame_seed, **vkw)
    extra = {k: ex[k] for k in tuple(extra_keys) + ("false_video", "false_caption") if k in ex}
    if patch:  # own seed stream: the frames and captions do not change with model.pem
      erase_seed = tf.stack([tf.constant(seed, tf.int64) * 16 + _SEED_SALT["erase"],
                             tf.cast(counter, tf.int64)])
      box = video_ops.erase_box(size, size, patch, erase_seed)
      extra["crop_video"], extra["mpm_mask"] = video_ops.pem_crop(video, box, patch)
    return dict(video=video, step=step, **tasks.train_row(task, ex, caption_seed, field), **extra)

  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  tokenizer = text_ops.load_tokenizer(_tokenizer_name(config))
  specials = text_ops.special_ids(tokenizer)
  corrupt = _mlm_corruption(config, tokenizer, specials)
  length = int(t.max_text_len)
  template = tasks.MC_TEMPLATE
  if task == "multiple_choice":
    template = tasks.check_template(t.get("mc_template", "") or tasks.MC_TEMPLATE,
                                    "config.data.train")
  prompt = text_ops.tokenize(tokenizer, [t.get("class_prompt", "") or ""], length)

  def encode(texts):
    return text_ops.tokenize(tokenizer, texts.numpy(), length)

  def encode_choices(questions, choices):
    texts = [c for q, cs in zip(questions.numpy(), choices.numpy())
             for c in tasks.mc_texts(q, cs, template)]
    ids, mask = text_ops.tokenize(tokenizer, texts, length)
    return ids.reshape(local_batch, k_choices, length), mask.reshape(local_batch, k_choices, length)

  def text(batch):
    extra = {k: batch[k] for k in tuple(extra_keys) + (PEM_KEYS if patch else ())}
    if task == "multiple_choice":
      ids, mask = tf.py_function(encode_choices, [batch["question"], batch["choices"]],
                                 [tf.int32, tf.int32])
      ids.set_shape([local_batch, k_choices, length])
      mask.set_shape([local_batch, k_choices, length])
      return dict(video=batch["video"], choice_ids=ids, choice_mask=mask, label=batch["label"],
                  **extra)
    if task == "classification":  # the same class_prompt text for every clip
      ids, mask = (tf.tile(tf.constant(x), [local_batch, 1]) for x in prompt)
      return dict(video=batch["video"], text_ids=ids, text_mask=mask, label=batch["label"],
                  **extra)
    ids, mask = tf.py_function(encode, [batch["caption"]], [tf.int32, tf.int32])
    ids.set_shape([local_batch, length])
    mask.set_shape([local_batch, length])
    if task == "qa":  # the question only; no MLM in QA fine-tuning
      return dict(video=batch["video"], text_ids=ids, text_mask=mask, label=batch["label"],
                  **extra)
    mlm_seed = tf.stack([tf.constant(seed, tf.int64) * 16 + _SEED_SALT["mlm"],
                         batch["step"][0] * process_count + process_index])
    mlm_ids, labels = corrupt(ids, mask, mlm_seed)
    if counts[0]:
      extra["false_video"] = batch["false_video"]
    if counts[1]:
      f_ids, f_mask = tf.py_function(encode, [tf.reshape(batch["false_caption"], [-1])],
                                     [tf.int32, tf.int32])
      extra["false_text_ids"] = tf.ensure_shape(
          tf.reshape(f_ids, [local_batch, counts[1], length]), [local_batch, counts[1], length])
      extra["false_text_mask"] = tf.ensure_shape(
          tf.reshape(f_mask, [local_batch, counts[1], length]), [local_batch, counts[1], length])
    return dict(video=batch["video"], text_ids=ids, text_mask=mask, mlm_text_ids=mlm_ids,
                mlm_labels=labels, **extra)

  ds = ds.map(text, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if is_image is not None:
    ds = ds.map(lambda b: dict(b, is_image=tf.fill([local_batch], bool(is_image))))
  return ds.prefetch(max(int(d.get("prefetch", 2)), 1))


def _device_prefetch(it: Iterator, size: int) -> Iterator:
  """Keeps `size` batches in flight on the devices while the step runs."""
  queue = collections.deque()
  for item in it:
    queue.append(item)
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def make_train_iterator(config, mesh: jax.sharding.Mesh, *,
                        start_step: int = 0) -> Iterator[dict[str, jax.Array]]:
  """Global batches (jax.Arrays sharded over the mesh's batch axes) for steps start_step, ..."""
  ds = _train_dataset(config, process_index=jax.process_index(),
                      process_count=jax.process_count(), start_step=start_step)
  sharding = NamedSharding(mesh, PartitionSpec(batch_axes(mesh, config.mesh.get("rules"))))

  def global_batches():
    for local in ds.as_numpy_iterator():
      yield {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}

  return _device_prefetch(global_batches(), 2)

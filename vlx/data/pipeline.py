"""tf.data input pipelines: global training batches and per-host evaluation batches.

Training order depends only on (config.seed, step): each host reads its even share of the split,
shuffles it with a seed fixed per epoch, and derives every random choice (frames, crop, caption,
MLM mask) from stateless ops seeded by (seed, example counter or step). Resuming at step k starts
at the right epoch and skips the encoded records before anything is decoded, so it yields exactly
the batches k, k+1, ... of an uninterrupted run.
"""
from __future__ import annotations

import collections
import functools
import importlib
import logging
import os
from typing import Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from vlx.data import qa, text_ops, video_ops

tf.config.set_visible_devices([], "GPU")  # TF must never take the accelerators from JAX

AUTO_BUILD = ("moving_shapes",)  # generated locally: built on first use
TRAIN_KEYS = ("video", "text_ids", "text_mask", "mlm_text_ids", "mlm_labels")
QA_TRAIN_KEYS = ("video", "text_ids", "text_mask", "label")
PEM_KEYS = ("crop_video", "mpm_mask")  # added to TRAIN_KEYS when config.model.pem (ALPRO §5.4)
TASKS = ("retrieval", "qa")  # config.data.train.task: what one training example is
_SEED_SALT = dict(example=1, mlm=2, shuffle=3, erase=4)
log = logging.getLogger(__name__)


class DatasetNotBuiltError(RuntimeError):
  """The TFDS dataset is not in data_dir; the message gives the `tfds build` command."""


def _data_dir(data_dir: str) -> str:
  return os.path.expanduser(data_dir) if data_dir else tfds.core.constants.DATA_DIR


class BuilderMissingError(DatasetNotBuiltError, ValueError):
  """No data_builders/<name> yet (a paper dataset planned but not written): the message says so
  and gives the `tfds build` command to run once it exists. Also a ValueError (bad config)."""


def _builder_module(builder: str):
  """Imports data_builders/<builder>/<builder>_dataset_builder.py (registers it with TFDS)."""
  name = f"data_builders.{builder}.{builder}_dataset_builder"
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name is None or not name.startswith(e.name):
      raise  # a dependency of the builder is missing, not the builder
    raise BuilderMissingError(
        f"no dataset builder data_builders/{builder}/{builder}_dataset_builder.py (config "
        f"data.train.builder / evals.*.builder = {builder!r}): the {builder!r} builder is planned "
        f"(issue 4) but not written yet. Once it exists, put your copy of the dataset in "
        f"<data_dir>/downloads/manual and run:\n  tfds build data_builders/{builder} "
        f"--manual_dir=<data_dir>/downloads/manual --data_dir=<data_dir>") from e


def get_builder(builder: str, builder_config: str = "", data_dir: str = "",
                manual_dir: str = "") -> tfds.core.DatasetBuilder:
  """The prepared builder of data_builders/<builder>; builds moving_shapes if it is missing."""
  data_dir = _data_dir(data_dir)
  b = _builder_module(builder).Builder(config=builder_config or None, data_dir=data_dir)
  if b.is_prepared():
    return b
  if builder in AUTO_BUILD:
    log.warning("dataset %s/%s not found in %s: generating it now (local, no download)",
                builder, builder_config or "default", data_dir)
    b.download_and_prepare()
    return b
  manual = manual_dir or os.path.join(data_dir, "downloads", "manual")
  config_flag = f" --config={builder_config}" if builder_config else ""
  raise DatasetNotBuiltError(
      f"dataset {builder!r}{' config ' + repr(builder_config) if builder_config else ''} is not "
      f"built in {data_dir}. Put your copy of the dataset in {manual} and run:\n"
      f"  tfds build data_builders/{builder}{config_flag} --manual_dir={manual} "
      f"--data_dir={data_dir}\n"
      f"(or, where the tfds command lacks apache_beam: python -m vlx.data.pipeline "
      f"--builder={builder}{config_flag} --manual_dir={manual} --data_dir={data_dir})")


def build(builder: str, builder_config: str = "", data_dir: str = "",
          manual_dir: str = "") -> tfds.core.DatasetBuilder:
  """Prepares data_builders/<builder> (what `tfds build` does, without its CLI's imports)."""
  b = _builder_module(builder).Builder(config=builder_config or None, data_dir=_data_dir(data_dir))
  config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  b.download_and_prepare(download_config=config)
  return b


def num_examples(builder: str, builder_config: str, split: str, data_dir: str) -> int:
  """Examples in `split` (a TFDS split string such as 'test' or 'train[:10%]')."""
  return get_builder(builder, builder_config, data_dir).info.splits[split].num_examples


def batch_axes(mesh: jax.sharding.Mesh, rules) -> tuple[str, ...]:
  """Mesh axes the 'batch' logical axis maps to in config.mesh.rules (default data, fsdp)."""
  axes = dict(rules).get("batch", ("data", "fsdp")) if rules else ("data", "fsdp")
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return tuple(a for a in axes if a in mesh.axis_names)


def _tokenizer_name(config) -> str:
  return text_ops.tokenizer_name(config)


def _example_seeds(seed: int, counter: tf.Tensor) -> tf.Tensor:
  return tf.stack([tf.constant(seed, tf.int64) * 16 + _SEED_SALT["example"],
                   tf.cast(counter, tf.int64)])


def _task(cfg, where: str) -> str:
  task = cfg.get("task", "retrieval") or "retrieval"
  if task not in TASKS:
    raise ValueError(f"{where}.task={task!r}: expected one of {TASKS}")
  return task


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


def _check_num_labels(config, vocab: dict[str, int]) -> None:
  n = int(config.model.get("num_labels", 0) or 0)
  if n and len(vocab) > n:
    raise ValueError(f"the answer vocabulary has {len(vocab)} answers but config.model."
                     f"num_labels={n}; set num_labels >= {len(vocab)} (the reference uses "
                     f"max(len(ans2label), {qa.MIN_NUM_LABELS}))")


def _label_table(vocab: dict[str, int]) -> tf.lookup.StaticHashTable:
  init = tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocab), tf.string),
                                             tf.constant(list(vocab.values()), tf.int32))
  return tf.lookup.StaticHashTable(init, default_value=-1)


def _qa_train_rows(config, builder, split: str, extra_keys: tuple[str, ...]):
  """One record per in-vocabulary QA pair of the host's clips (video still encoded), and their
  number: the reference trains on (clip, question) pairs whose answer is in ans2label."""
  vocab = qa.resolve_answer_vocab(config)
  _check_num_labels(config, vocab)
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
  """This host's training batches from step `start_step` on: dicts of TRAIN_KEYS tensors, or of
  QA_TRAIN_KEYS when config.data.train.task == 'qa' (one example per QA pair). With
  config.model.pem (retrieval task) also PEM_KEYS: `crop_video` float32 [B, T, S, S, C] (the
  clip with the pixels outside one random patch-aligned box per clip at raw 0) and `mpm_mask`
  float32 [B, S/p, S/p] (1 = patch outside the box), S = crop or resolution.

  `extra_keys` (e.g. 'video_id') are passed through from the TFDS examples, for tests.
  """
  d, t = config.data, config.data.train
  task = _task(t, "config.data.train")
  if d.global_batch_size % process_count:
    raise ValueError(f"config.data.global_batch_size={d.global_batch_size} is not divisible by "
                     f"the {process_count} processes")
  local_batch = d.global_batch_size // process_count
  builder = get_builder(t.builder, t.get("builder_config", ""), d.data_dir,
                        d.get("manual_dir", ""))
  split = tfds.split_for_jax_process(t.split, process_index=process_index,
                                     process_count=process_count)
  if task == "qa":
    base, n_host = _qa_train_rows(config, builder, split, tuple(extra_keys))
  else:
    n_host = builder.info.splits[split].num_examples
    base = builder.as_dataset(split=split, shuffle_files=False,
                              decoders={"video": tfds.decode.SkipDecoding()})
    keep = ("video", "captions") + tuple(extra_keys)
    base = base.map(lambda ex: {k: ex[k] for k in keep})
  if n_host == 0:
    what = "QA pairs with in-vocabulary answers" if task == "qa" else "examples"
    raise ValueError(f"split {t.split!r} of {t.builder} has no {what} for process "
                     f"{process_index}/{process_count}")
  seed, buffer = int(config.seed), max(int(d.shuffle_buffer), 1)
  patch, size = _pem_patch_size(config, task), t.crop or t.resolution

  def epoch(e):  # the epoch's order depends on (seed, epoch) only
    return base.shuffle(buffer, seed=seed * 1_000_003 + _SEED_SALT["shuffle"] + e * 7919,
                        reshuffle_each_iteration=False)

  first_example = start_step * local_batch
  ds = tf.data.Dataset.range(first_example // n_host, np.iinfo(np.int64).max).flat_map(epoch)
  ds = ds.skip(first_example % n_host)  # skips encoded records: nothing decoded yet
  ds = ds.enumerate(start=first_example)

  def process(j, ex):
    step, row = j // local_batch, j % local_batch
    counter = step * d.global_batch_size + process_index * local_batch + row
    frame_seed, caption_seed = tf.unstack(tf.random.experimental.stateless_split(
        _example_seeds(seed, counter), 2))
    video = video_ops.preprocess_clip(ex["video"], num_frames=t.num_frames, sampling=t.sampling,
                                      resolution=t.resolution, crop=t.crop, seed=frame_seed)
    extra = {k: ex[k] for k in extra_keys}
    if task == "qa":
      return dict(video=video, caption=ex["question"], label=ex["label"], step=step, **extra)
    pick = tf.random.stateless_uniform([], caption_seed, 0, tf.shape(ex["captions"])[0],
                                       dtype=tf.int32)
    if patch:  # own seed stream: the frames and captions do not change with model.pem
      erase_seed = tf.stack([tf.constant(seed, tf.int64) * 16 + _SEED_SALT["erase"],
                             tf.cast(counter, tf.int64)])
      box = video_ops.erase_box(size, size, patch, erase_seed)
      extra["crop_video"], extra["mpm_mask"] = video_ops.pem_crop(video, box, patch)
    return dict(video=video, caption=ex["captions"][pick], step=step, **extra)

  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  tokenizer = text_ops.load_tokenizer(_tokenizer_name(config))
  specials = text_ops.special_ids(tokenizer)

  def encode(texts):
    return text_ops.tokenize(tokenizer, texts.numpy(), t.max_text_len)

  def text(batch):
    ids, mask = tf.py_function(encode, [batch["caption"]], [tf.int32, tf.int32])
    ids.set_shape([local_batch, t.max_text_len])
    mask.set_shape([local_batch, t.max_text_len])
    extra = {k: batch[k] for k in tuple(extra_keys) + (PEM_KEYS if patch else ())}
    if task == "qa":  # the question only; no MLM in QA fine-tuning
      return dict(video=batch["video"], text_ids=ids, text_mask=mask, label=batch["label"],
                  **extra)
    mlm_seed = tf.stack([tf.constant(seed, tf.int64) * 16 + _SEED_SALT["mlm"],
                         batch["step"][0] * process_count + process_index])
    mlm_ids, labels = text_ops.mask_tokens(
        ids, seed=mlm_seed, mask=mask, special_ids=specials, vocab_size=len(tokenizer),
        mask_id=tokenizer.mask_token_id, probability=d.mlm_probability)
    return dict(video=batch["video"], text_ids=ids, text_mask=mask, mlm_text_ids=mlm_ids,
                mlm_labels=labels, **extra)

  ds = ds.map(text, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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


def _eval_rows(eval_cfg) -> str:
  """What one evaluation row is: 'qa' (a QA pair), 'captions' (every caption of a clip, with
  eval_cfg.all_captions) or 'clip' (a clip with its first, canonical caption)."""
  if _task(eval_cfg, "evals.<name>") == "qa" or eval_cfg.get("type", "") == "qa":
    return "qa"
  return "captions" if eval_cfg.get("all_captions", False) else "clip"


def _row_counts(builder, splits: list[str], rows: str) -> list[int]:
  """Rows in each host's share of the split (reads only the text features when needed)."""
  if rows == "clip":
    return [builder.info.splits[s].num_examples for s in splits]
  field = "question" if rows == "qa" else "captions"
  feature = "qa" if rows == "qa" else "captions"
  return [sum(len(c[field]) for c in qa.read_split_texts(builder, s, feature)) for s in splits]


def make_eval_batches(eval_cfg, config, *, batch_size: int,
                      process_index: int | None = None,
                      process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This host's numpy batches over a whole split, in a fixed order.

  Retrieval (default): one row per clip with its first, canonical caption; with
  eval_cfg.all_captions one row per caption (video_index maps each text to its clip; the clip's
  video is repeated). Keys: video, text_ids, text_mask, video_index (clip position in the split),
  valid. QA (eval_cfg.task or type 'qa'): one row per QA pair, text = the question, plus
  label (answer index in the vocabulary, -1 if not in it), qtype (index in eval_cfg.qtypes, -1
  otherwise) and example_index (position of the QA pair in the split).
  Every host yields the same number of batches (`batch_size` rows each); rows past the end
  repeat the batch's first row with valid=False and video_index = example_index = -1.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  builder = get_builder(eval_cfg.builder, eval_cfg.get("builder_config", ""), config.data.data_dir,
                        config.data.get("manual_dir", ""))
  rows = _eval_rows(eval_cfg)
  splits = [tfds.split_for_jax_process(eval_cfg.split, process_index=i, process_count=process_count)
            for i in range(process_count)]
  clip_sizes = [builder.info.splits[s].num_examples for s in splits]
  if process_count > 1 or rows == "clip":
    sizes = _row_counts(builder, splits, rows)
    num_batches = -(-max(sizes) // batch_size)
    row_offset = sum(sizes[:process_index])
  else:
    num_batches, row_offset = None, 0  # one host: as many batches as its rows need
  clip_offset = sum(clip_sizes[:process_index])
  vocab, qtypes, source = None, (), "first_word"
  if rows == "qa":
    vocab = qa.resolve_answer_vocab(config)
    qtypes = tuple(eval_cfg.get("qtypes", qa.MSRVTT_QTYPES))
    source = eval_cfg.get("qtype_source", "first_word")
    if source not in qa.QTYPE_SOURCES:
      raise ValueError(f"evals.<name>.qtype_source={source!r}: expected one of "
                       f"{qa.QTYPE_SOURCES}")
  ds = builder.as_dataset(split=splits[process_index], shuffle_files=False,
                          decoders={"video": tfds.decode.SkipDecoding()})
  sampling = eval_cfg.get("sampling", "uniform")
  prep = functools.partial(video_ops.preprocess_clip, num_frames=eval_cfg.num_frames,
                           sampling=sampling, resolution=eval_cfg.resolution)
  text_key = "qa" if rows == "qa" else "captions"

  def process(i, ex):  # random samplings (if asked for) are fixed per clip
    video = prep(ex["video"], seed=tf.stack([tf.constant(int(config.seed), tf.int64), i]))
    return dict(video=video, text=ex[text_key], video_index=tf.cast(i, tf.int32))

  ds = ds.enumerate(start=clip_offset).map(process, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True).prefetch(2 * batch_size)
  tokenizer = text_ops.load_tokenizer(_tokenizer_name(config))
  length = eval_cfg.max_text_len

  def finish(buf: list[dict], start: int) -> dict[str, np.ndarray]:
    n = len(buf)
    ids, mask = text_ops.tokenize(tokenizer, [r["text"] for r in buf], length)
    out = dict(video=np.stack([r["video"] for r in buf]), text_ids=ids, text_mask=mask,
               video_index=np.asarray([r["video_index"] for r in buf], np.int32),
               valid=np.ones(n, bool))
    if rows == "qa":
      out["label"] = qa.answer_labels([r["answer"] for r in buf], vocab)
      out["qtype"] = qa.qtype_ids([r["text"] for r in buf], qtypes, source=source,
                                  features=[r["qtype"] for r in buf] if source == "feature"
                                  else None)
      out["example_index"] = np.arange(start, start + n, dtype=np.int32)
    return _pad_rows(out, batch_size)

  def row_iter():
    for ex in ds.as_numpy_iterator():
      t = ex["text"]
      if rows == "clip":
        yield dict(video=ex["video"], text=t[0], video_index=ex["video_index"])
      elif rows == "captions":
        for c in t:
          yield dict(video=ex["video"], text=c, video_index=ex["video_index"])
      else:
        if source == "feature" and "qtype" not in t:
          raise ValueError(f"evals.<name>.qtype_source='feature' but {eval_cfg.builder} has no "
                           "qa/qtype feature")
        for j, q in enumerate(t["question"]):
          yield dict(video=ex["video"], text=q, answer=t["answer"][j],
                     video_index=ex["video_index"], qtype=t["qtype"][j] if "qtype" in t else b"")

  r, t_frames = eval_cfg.resolution, eval_cfg.num_frames
  empty = dict(video=np.zeros((0, t_frames, r, r, 3), np.float32),
               text_ids=np.zeros((0, length), np.int32), text_mask=np.zeros((0, length), np.int32),
               video_index=np.zeros(0, np.int32), valid=np.zeros(0, bool))
  if rows == "qa":
    empty.update(label=np.zeros(0, np.int32), qtype=np.zeros(0, np.int32),
                 example_index=np.zeros(0, np.int32))
  emitted, start, buf = 0, row_offset, []
  for row in row_iter():
    buf.append(row)
    if len(buf) == batch_size:
      yield finish(buf, start)
      emitted, start, buf = emitted + 1, start + batch_size, []
  if buf:
    yield finish(buf, start)
    emitted += 1
  while num_batches is not None and emitted < num_batches:  # this host's share ended first
    yield _pad_rows(empty, batch_size)
    emitted += 1


_INDEX_KEYS = ("video_index", "example_index")  # padding rows get -1 there


def _pad_rows(batch: dict, size: int) -> dict:
  """Fills a short batch to `size` rows by repeating its first row, marked invalid."""
  n = len(batch["valid"])
  if n == size:
    return batch
  out = {}
  for k, v in batch.items():
    if k == "valid":
      pad = np.zeros(size - n, bool)
    elif k in _INDEX_KEYS:
      pad = np.full(size - n, -1, np.int32)
    elif n:
      pad = np.repeat(v[:1], size - n, axis=0)
    else:
      pad = np.zeros((size,) + v.shape[1:], v.dtype)
    out[k] = np.concatenate([v, pad])
  return out


def main(argv: list[str] | None = None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description="Build a dataset of data_builders/ with TFDS.")
  p.add_argument("--builder", required=True)
  p.add_argument("--config", default="")
  p.add_argument("--data_dir", default="")
  p.add_argument("--manual_dir", default="")
  args = p.parse_args(argv)
  b = build(args.builder, args.config, args.data_dir, args.manual_dir)
  print(f"built {b.name}/{b.builder_config.name if b.builder_config else ''} in {b.data_dir}: "
        f"{ {k: v.num_examples for k, v in b.info.splits.items()} }")


if __name__ == "__main__":
  main()

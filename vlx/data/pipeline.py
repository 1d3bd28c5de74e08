"""tf.data input pipelines: global training batches and per-host evaluation batches.

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

from vlx.data import mixture, qa, tasks, text_ops, video_ops

tf.config.set_visible_devices([], "GPU")  # TF must never take the accelerators from JAX

AUTO_BUILD = ("moving_shapes",)  # generated locally: built on first use
TRAIN_KEYS = tasks.TRAIN_KEYS["retrieval"]
QA_TRAIN_KEYS = tasks.TRAIN_KEYS["qa"]
PEM_KEYS = ("crop_video", "mpm_mask")  # added to TRAIN_KEYS when config.model.pem (ALPRO §5.4)
TASKS = tasks.TASKS  # config.data.train.task: what one training example is
_SEED_SALT = dict(example=1, mlm=2, shuffle=3, erase=4)
_ENTRY_SEED_STRIDE = 100_003  # mixture entry i > 0 reads with seed + i * stride (own streams)
_DRAW_CHUNK = 256             # mixture draws computed per chunk of steps
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


def _video_kwargs(cfg, where: str, sampling: str) -> dict:
  """preprocess_clip arguments from the generic fields of config.data.train / an eval block."""
  kw = dict(num_frames=int(cfg.num_frames), sampling=cfg.get("sampling", sampling) or sampling,
            resolution=int(cfg.resolution), crop=int(cfg.get("crop", 0) or 0),
            resize_mode=cfg.get("resize", "square") or "square",
            norm=cfg.get("norm", "clip") or "clip")
  for field, value, allowed in (("sampling", kw["sampling"], video_ops.SAMPLINGS),
                                ("resize", kw["resize_mode"], video_ops.RESIZES),
                                ("norm", kw["norm"], tuple(video_ops.NORMS))):
    if value not in allowed:
      raise ValueError(f"{where}.{field}={value!r}: expected one of {allowed}")
  if kw["num_frames"] < 1 or kw["resolution"] < 1:
    raise ValueError(f"{where}: num_frames={kw['num_frames']} and resolution="
                     f"{kw['resolution']} must be >= 1")
  if kw["crop"] > kw["resolution"]:
    raise ValueError(f"{where}.crop={kw['crop']} is larger than {where}.resolution="
                     f"{kw['resolution']}")
  return kw


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


def _check_num_labels(config, n: int, what: str) -> None:
  limit = int(config.model.get("num_labels", 0) or 0)
  if limit and n > limit:
    raise ValueError(f"the {what} has {n} entries but config.model.num_labels={limit}; set "
                     f"num_labels >= {n}" + (f" (the reference uses max(len(ans2label), "
                                             f"{qa.MIN_NUM_LABELS}))" if "answer" in what
                                             else ""))


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


def is_image_dataset(builder) -> bool:
  """Rows of this builder are images (ALPRO's type='img'): its Builder sets IS_IMAGE = True."""
  return bool(getattr(builder, "IS_IMAGE", False))


def _train_dataset(config, *, process_index: int, process_count: int, start_step: int = 0,
                   extra_keys: tuple[str, ...] = ()) -> tf.data.Dataset:
  """This host's training batches from step `start_step` on: dicts of
  tasks.TRAIN_KEYS[config.data.train.task] tensors ('qa': one row per QA pair, the others one
  per clip). With config.model.pem (retrieval task) also PEM_KEYS: `crop_video` float32
  [B, T, S, S, C] (the clip with the pixels outside one random patch-aligned box per clip at
  raw 0) and `mpm_mask` float32 [B, S/p, S/p] (1 = patch outside the box), S = crop or resolution.
  When any training dataset is an image dataset (is_image_dataset), also `is_image` bool [B]
  (True on the rows of image datasets; PEM then uses the image prompts).

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

  choice = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max, _DRAW_CHUNK).map(chunk)
  ds = tf.data.Dataset.choose_from_datasets(subs, choice.unbatch())
  return ds.prefetch(max(int(d.get("prefetch", 2)), 1))


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
    video = video_ops.preprocess_clip(ex["video"], seed=frame_seed, **vkw)
    extra = {k: ex[k] for k in extra_keys}
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
    mlm_ids, labels = text_ops.mask_tokens(
        ids, seed=mlm_seed, mask=mask, special_ids=specials, vocab_size=len(tokenizer),
        mask_id=tokenizer.mask_token_id, probability=d.mlm_probability)
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


def _row_counts(builder, splits: list[str], ctx: tasks.EvalText, rows: str,
                num_views: int) -> list[int]:
  """Evaluation rows in each host's share of the split (reads only text features if needed)."""
  if rows in ("clip", "multiple_choice", "classification"):
    return [builder.info.splits[s].num_examples * num_views for s in splits]
  if rows == "qa":
    return [sum(len(c["question"]) for c in qa.read_split_texts(builder, s, "qa"))
            for s in splits]
  return [sum(int(np.size(ex[ctx.field])) for ex in tasks.read_features(builder, s, (ctx.field,)))
          for s in splits]


def _eval_context(eval_cfg, config, builder, task: str) -> tasks.EvalText:
  """The tokenizer, labels and per-task text settings of one eval block."""
  where = "evals.<name>"
  ctx = tasks.EvalText(task=task, tokenizer=text_ops.load_tokenizer(_tokenizer_name(config)),
                       max_len=int(eval_cfg.max_text_len))
  if task == "retrieval":
    ctx.field = tasks.text_field(eval_cfg, builder, where)
  elif task == "qa":
    tasks.require_features(builder, ("qa",), f"{where}.task='qa'")
    ctx.vocab = qa.resolve_answer_vocab(config)
    ctx.qtypes = tuple(eval_cfg.get("qtypes", qa.MSRVTT_QTYPES))
    ctx.qtype_source = eval_cfg.get("qtype_source", "first_word")
    if ctx.qtype_source not in qa.QTYPE_SOURCES:
      raise ValueError(f"{where}.qtype_source={ctx.qtype_source!r}: expected one of "
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
  """This host's numpy batches over a whole split, in a fixed order; keys tasks.EVAL_KEYS[task].

  Retrieval (default): one row per clip with its first, canonical caption (of
  eval_cfg.text_field, default 'captions'); with eval_cfg.all_captions one row per caption
  (video_index maps each text to its clip; the clip's video is repeated). QA (task or type 'qa'):
  one row per QA pair, text = the question, plus label (answer index in the vocabulary, -1 if not
  in it), qtype (index in eval_cfg.qtypes, -1 otherwise) and example_index (position of the QA
  pair in the split). Multiple choice: one row per example, choice_ids/choice_mask [B, K, L]
  (eval_cfg.mc_template), label = mc_answer. Classification: eval_cfg.num_views rows per clip
  (view_index v = the v-th of evenly spread temporal windows; example_index = the clip), text =
  eval_cfg.class_prompt, label = the ClassLabel index: average the logits over the rows of an
  example_index (tasks.average_over_views).
  Every host yields the same number of batches (`batch_size` rows each); rows past the end
  repeat the batch's first row with valid=False and video_index = example_index = view_index = -1.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  task = tasks.eval_task(eval_cfg)
  vkw = _video_kwargs(eval_cfg, "evals.<name>", "uniform")
  builder = get_builder(eval_cfg.builder, eval_cfg.get("builder_config", ""), config.data.data_dir,
                        config.data.get("manual_dir", ""))
  ctx = _eval_context(eval_cfg, config, builder, task)
  rows = task if task != "retrieval" else (
      "captions" if eval_cfg.get("all_captions", False) else "clip")
  views = int(eval_cfg.get("num_views", 1) or 1) if task == "classification" else 1
  if views < 1:
    raise ValueError(f"evals.<name>.num_views={views} must be >= 1")
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
  ds = builder.as_dataset(split=splits[process_index], shuffle_files=False,
                          decoders={"video": tfds.decode.SkipDecoding()})
  prep = functools.partial(video_ops.preprocess_clip, center=True, **vkw)
  has_question = "question" in builder.info.features

  view = int(eval_cfg.get("view", 0) or 0)  # retrieval views: an independent random sampling

  def process(i, ex):  # random samplings (if asked for) are fixed per clip (and view)
    seed = tf.stack([tf.constant(int(config.seed), tf.int64), i])
    if view:
      seed = tf.random.experimental.stateless_fold_in(seed, 7919 + view)
    if views > 1:
      video = tf.stack([prep(video_ops.temporal_window(ex["video"], v, views),
                             seed=tf.random.experimental.stateless_fold_in(seed, v))
                        for v in range(views)])
    else:
      video = prep(ex["video"], seed=seed)
    out = dict(video=video, video_index=tf.cast(i, tf.int32))
    if task == "retrieval":
      out["text"] = ex[ctx.field]
    elif task == "qa":
      out["text"] = ex["qa"]
    elif task == "multiple_choice":
      out.update(choices=ex["mc_choices"], label=tf.cast(ex["mc_answer"], tf.int32))
      if has_question:
        out["question"] = ex["question"]
    else:
      out["label"] = tf.cast(ex["label"], tf.int32)
    return out

  ds = ds.enumerate(start=clip_offset).map(process, num_parallel_calls=tf.data.AUTOTUNE,
                                           deterministic=True).prefetch(2 * batch_size)
  empty = ctx.empty(vkw["num_frames"], vkw["crop"] or vkw["resolution"])
  emitted, start, buf = 0, row_offset, []
  for ex in ds.as_numpy_iterator():
    for row in ctx.rows(rows, ex):
      buf.append(row)
      if len(buf) == batch_size:
        yield _pad_rows(ctx.finish(buf, start), batch_size)
        emitted, start, buf = emitted + 1, start + batch_size, []
  if buf:
    yield _pad_rows(ctx.finish(buf, start), batch_size)
    emitted += 1
  while num_batches is not None and emitted < num_batches:  # this host's share ended first
    yield _pad_rows(empty, batch_size)
    emitted += 1


def _pad_rows(batch: dict, size: int) -> dict:
  """Fills a short batch to `size` rows by repeating its first row, marked invalid."""
  n = len(batch["valid"])
  if n == size:
    return batch
  out = {}
  for k, v in batch.items():
    if k == "valid":
      pad = np.zeros(size - n, bool)
    elif k in tasks.INDEX_KEYS:
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

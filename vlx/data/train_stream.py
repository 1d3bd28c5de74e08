"""Global training batches (tf.data): the stream behind make_train_iterator.

Training order depends only on (config.seed, step): each host reads its even share of the split,
shuffles it with a seed fixed per epoch, and derives every random choice (frames, crop, caption,
MLM mask, a hook's draws) from stateless ops seeded by (seed, example counter or step)
(vlx.data.seeds). Resuming at step k starts at the right epoch and skips the encoded records
before anything is decoded, so it yields exactly the batches k, k+1, ... of an uninterrupted run.
A dataset mixture (config.data.train.mixture, vlx.data.mixture) draws one dataset per step from
(seed, step) and restarts each dataset's reader at the batches it served before k, which keeps
the same guarantee.

One dataset's stream: task records (vlx.data.tasks) -> shuffled epochs -> per row the modality
readers (vlx.data.modalities), the task's row fields and the family's row hooks
(vlx.data.hooks) -> host batches -> the task's text keys and the hooks' batch keys.
"""
from __future__ import annotations

import collections
from typing import Iterator, Sequence

import jax
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from vlx.data import hooks as hooks_lib
from vlx.data import mixture, modalities, seeds, tasks, text_ops
from vlx.data.errors import DataConfigError
from vlx.data.pipeline import get_builder, is_image_dataset

_ENTRY_SEED_STRIDE = 100_003  # mixture entry i > 0 reads with seed + i * stride (own streams)
_DRAW_CHUNK = 256             # mixture draws computed per chunk of steps


def batch_axes(mesh: jax.sharding.Mesh, rules) -> tuple[str, ...]:
  """Mesh axes the 'batch' logical axis maps to in config.mesh.rules (default data, fsdp)."""
  axes = dict(rules).get("batch", ("data", "fsdp")) if rules else ("data", "fsdp")
  axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
  return tuple(a for a in axes if a in mesh.axis_names)


def _train_dataset(config, *, process_index: int, process_count: int, start_step: int = 0,
                   extra_keys: tuple[str, ...] = (),
                   hooks: Sequence[hooks_lib.RowHook] | None = None) -> tf.data.Dataset:
  """This host's training batches from step `start_step` on: dicts of the inputs' keys
  (vlx.data.modalities; default `video` float32 [B, T, S, S, C]), the task's train_keys
  (tasks.TASK[config.data.train.task]; 'qa': one row per QA pair, the others one per clip) and
  the keys of the family's row hooks (`hooks`, default Family.data_hooks(config)).
  When any training dataset is an image dataset (is_image_dataset), also `is_image` bool [B]
  (True on the rows of image datasets).

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
    raise DataConfigError(f"config.data.train.mixture={tuple(t.mixture)!r} needs task 'retrieval' "
                     f"(got {task!r}): a mixture's datasets must give batches of one structure")
  hooks = hooks_lib.family_hooks(config) if hooks is None else tuple(hooks)
  builders = [get_builder(e.builder, e.builder_config, d.data_dir, d.get("manual_dir", ""))
              for e in entries]
  images = [is_image_dataset(b) for b in builders]
  kw = dict(process_index=process_index, process_count=process_count,
            extra_keys=tuple(extra_keys), hooks=hooks)
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

  choice = tf.data.Dataset.range(start_step, seeds.MAX_INT64, _DRAW_CHUNK).map(chunk)
  ds = tf.data.Dataset.choose_from_datasets(subs, choice.unbatch())
  return ds.prefetch(max(int(d.get("prefetch", 2)), 1))


def _readers(t, is_image: bool | None) -> dict[str, modalities.Reader]:
  """The inputs of config.data.train; an image dataset's rows use `image_augment`."""
  if is_image:
    t = t.copy_and_resolve_references()
    with t.unlocked():
      t.augment = t.get("image_augment", "") or ""
  return modalities.make_readers(t, "config.data.train")


def _read_inputs(readers, ex: dict, seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Every input of one training row, each with its seed (modalities.input_seed)."""
  out = {}
  for prefix, reader in readers.items():
    out.update(reader.read(modalities.encoded_input(reader, ex),
                           modalities.input_seed(seed, prefix, reader),
                           train=True))
  return out


def _text_settings(config, task: str, builder, local_batch: int) -> tasks.TrainText:
  t = config.data.train
  tokenizer = text_ops.load_tokenizer(text_ops.tokenizer_name(config))
  length = int(t.max_text_len)
  text = tasks.TrainText(tokenizer=tokenizer, length=length, local_batch=local_batch,
                         corrupt=text_ops.mlm_corruption(config, tokenizer),
                         prompt=text_ops.tokenize(tokenizer, [t.get("class_prompt", "") or ""],
                                                  length))
  if task == "multiple_choice":
    text.template = tasks.check_template(t.get("mc_template", "") or tasks.MC_TEMPLATE,
                                         "config.data.train")
    text.num_choices = tasks.num_choices(builder, t.split, "config.data.train")
  return text


def _entry_dataset(config, builder, *, seed: int, process_index: int, process_count: int,
                   start_step: int, extra_keys: tuple[str, ...],
                   hooks: Sequence[hooks_lib.RowHook], is_image: bool | None) -> tf.data.Dataset:
  """One dataset's training batches (its own step count from `start_step`); `is_image` not None
  adds the `is_image` key with that value on every row."""
  d, t = config.data, config.data.train
  name = tasks.train_task(t)
  task = tasks.TASK[name]
  if d.global_batch_size % process_count:
    raise DataConfigError(f"config.data.global_batch_size={d.global_batch_size} is not divisible by "
                     f"the {process_count} processes")
  local_batch = d.global_batch_size // process_count
  readers = _readers(t, is_image)
  input_keys = modalities.input_keys(readers)
  hooks_lib.check_keys(hooks, input_keys + task.train_keys + tuple(extra_keys))
  split = tfds.split_for_jax_process(t.split, process_index=process_index,
                                     process_count=process_count)
  feats = task.features(config, builder)
  decoders = {r.feature: r.decoder() for r in readers.values() if r.decoder() is not None}
  keep = tuple(dict.fromkeys(tuple(f for r in readers.values()
                                   for f in modalities.stored_features(r)) + feats
                             + tuple(extra_keys)))
  base, n_host = task.records(config, builder, split, decoders, keep)
  if n_host == 0:
    raise DataConfigError(f"split {t.split!r} of {builder.name} has no {task.unit} for process "
                     f"{process_index}/{process_count}")
  text = _text_settings(config, name, builder, local_batch)

  def counter_of(j):  # the global example counter of this host's j-th training row
    step, row = j // local_batch, j % local_batch
    return step * d.global_batch_size + process_index * local_batch + row

  first_example = start_step * local_batch
  ctx = hooks_lib.StreamContext(
      config=config, task=name, builder=builder, split=split, n_host=n_host, seed=seed,
      buffer=max(int(d.shuffle_buffer), 1), local_batch=local_batch, first_example=first_example,
      process_index=process_index, process_count=process_count, readers=readers,
      text_field=feats[0] if name == "retrieval" else "", max_text_len=text.length,
      counter_of=counter_of, tokenize=text.tokenize)
  ds = task.rows(base, ctx)  # shuffled epochs: the order depends on (seed, epoch) only
  ds = ds.enumerate(start=first_example)
  extras = [x for x in (h.extra_dataset(ctx) for h in hooks) if x is not None]
  if extras:  # per-row draws of the hooks join the encoded example
    ds = tf.data.Dataset.zip((ds, *extras)).map(
        lambda je, *fs: (je[0], dict(je[1], **{k: v for f in fs for k, v in f.items()})))
  drawn = tuple(k for x in extras for k in x.element_spec)

  def process(j, ex):
    counter = counter_of(j)
    input_seed, task_seed = tf.unstack(tf.random.experimental.stateless_split(
        seeds.example_seed(seed, counter), 2))
    row = _read_inputs(readers, ex, input_seed)
    row.update(step=j // local_batch, **task.row(ex, task_seed, ctx))
    row.update({k: ex[k] for k in tuple(extra_keys) + drawn})
    for hook in hooks:
      row.update(hook.apply(row, ctx, counter))
    return row

  ds = ds.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)

  def finish(batch):
    out = {k: batch[k] for k in input_keys}
    out.update(task.text(batch, ctx, text))
    out.update({k: batch[k] for k in extra_keys})
    for hook in hooks:
      added = hook.finish(batch, ctx)
      out.update({k: added[k] if k in added else batch[k] for k in hook.keys})
    return out

  ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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

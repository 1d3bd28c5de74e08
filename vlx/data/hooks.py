"""Row hooks: batch keys only one model family needs, added to the training stream.

A family returns hooks from `Family.data_hooks(config)` (vlx.registry); the stream
(vlx.data.train_stream) runs every hook on every dataset it reads and knows nothing of what they
add. A hook may
  - zip its own per-row stream beside the rows (`extra_dataset`, e.g. random other examples of
    the split drawn as negatives): element i belongs to training row ctx.first_example + i, and
    its keys join that row;
  - add per-row keys (`apply`, TF ops after the modality readers, e.g. a masked copy of `video`);
  - add per-batch keys (`finish`, e.g. tokenized drawn captions).
The batch then holds the task's keys, the inputs' keys and each hook's `keys` (taken from
`finish`'s result, else from the rows). Randomness must come from `ctx.example_seed(salt, ...)` /
`ctx.shuffled(...)` with the hook's own salts (ints < 16 not in seeds.STREAM_SALTS), so the
batches depend only on (config.seed, step), resume included.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Protocol, Sequence

import tensorflow as tf

from vlx.data import seeds
from vlx.data.errors import DataConfigError
from vlx.data.modalities.base import Reader


@dataclasses.dataclass(frozen=True)
class StreamContext:
  """What the task rows and the hooks may know of the training stream of one dataset."""
  config: Any                 # the whole experiment config
  task: str                   # config.data.train.task
  builder: Any                # the dataset's tfds builder
  split: str                  # this host's share of the split (a TFDS split string)
  n_host: int                 # training records in that share (one epoch)
  seed: int                   # the dataset's seed (config.seed, offset per mixture entry)
  buffer: int                 # shuffle buffer
  local_batch: int            # rows per host batch
  first_example: int          # the host row the stream starts at (start_step * local_batch)
  process_index: int
  process_count: int
  readers: Mapping[str, Reader]   # the inputs, {batch-key prefix: reader}
  text_field: str             # retrieval: the caption feature ('' for other tasks)
  max_text_len: int
  counter_of: Callable[[tf.Tensor], tf.Tensor]   # host row j -> its global example counter
  tokenize: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # strings [N] -> ids, mask [N, L]

  def example_seed(self, salt: str | int, counter: tf.Tensor) -> tf.Tensor:
    """The stateless seed of (this dataset's seed, salt, global example counter)."""
    return seeds.example_seed(self.seed, counter, salt)

  def shuffled(self, base: tf.data.Dataset, salt: str | int, per_row: int) -> tf.data.Dataset:
    """`base` (the host's n_host records) shuffled epoch after epoch by (seed, salt, epoch),
    from record first_example * per_row on (per_row records per training row)."""
    return seeds.shuffled_epochs(base, self.n_host, seed=self.seed, salt=salt,
                                 buffer=self.buffer, first=self.first_example * per_row)

  def reader_of(self, key: str, who: str) -> Reader:
    """The reader yielding batch key `key`, or a ValueError saying `who` needs it."""
    for reader in self.readers.values():
      if key in reader.keys:
        return reader
    raise DataConfigError(f"{who} needs the input {key!r}; the training inputs yield "
                     f"{[k for r in self.readers.values() for k in r.keys]}")


class RowHook(Protocol):
  """Extra batch keys of one family (see the module docstring)."""
  keys: tuple[str, ...]   # the batch keys it adds

  def extra_dataset(self, ctx: StreamContext) -> tf.data.Dataset | None:
    """Per training row (from ctx.first_example on) a dict of tensors joining the row, or None."""

  def apply(self, row: dict[str, tf.Tensor], ctx: StreamContext,
            counter: tf.Tensor) -> dict[str, tf.Tensor]:
    """Keys to add to one row (TF ops); `counter` = the row's global example counter."""

  def finish(self, batch: dict[str, tf.Tensor], ctx: StreamContext) -> dict[str, tf.Tensor]:
    """Keys to add to one host batch (TF ops; ctx.tokenize for texts)."""


def family_hooks(config) -> tuple[RowHook, ...]:
  """The hooks of config.model.family (Family.data_hooks); none without a family."""
  model = config.get("model", None)
  name = model.get("family", "") if model is not None else ""
  if not name:
    return ()
  from vlx import registry  # pylint: disable=import-outside-toplevel (models import lazily)
  family = registry.get(name)
  return tuple(family.data_hooks(config)) if family.data_hooks is not None else ()


def check_keys(hooks: Sequence[RowHook], taken: Sequence[str]) -> None:
  """No hook adds a key the task, the inputs or another hook already yields."""
  seen = set(taken)
  for hook in hooks:
    clash = seen & set(hook.keys)
    if clash:
      raise DataConfigError(f"data hook {type(hook).__name__} adds batch keys {sorted(clash)} that "
                       "the task, the inputs or another hook already yield")
    seen |= set(hook.keys)

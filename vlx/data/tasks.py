"""What one example of each task is: the TFDS features it reads and the batch keys it yields.

`config.data.train.task` / `evals.<name>.task` (or the eval `type`) picks one of TASKS; TASK[name]
is its `Task`: the features a training example needs, its records (one per clip, or per QA pair),
its row fields and its batch keys (`train_keys` / `eval_keys`, besides the inputs' keys, which the
modality readers yield: vlx.data.modalities). Training rows are built with TF ops inside tf.data
(texts tokenized per batch in a py_function, `TrainText`); evaluation rows with numpy
(`EvalText`). The data_contract feature names are read: `captions` (or any `text_field`), `qa`
(or `fib`, qa.QA_FEATURES), `question` / `mc_choices` / `mc_answer`, `label` (ClassLabel).
"""
from __future__ import annotations

import dataclasses
import string
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import asr_clips, qa, seeds, text_ops
from vlx.data.errors import DataConfigError
from vlx.padding import INDEX_KEYS  # noqa: F401  (batch keys, -1 on padding rows)

TASKS = ("retrieval", "qa", "multiple_choice", "classification")
TRAIN_TASKS = TASKS + ("asr_clips",)   # asr_clips: training only (vlx.data.asr_clips)
MC_TEMPLATE = "{question} {choice}"
MC_FIELDS = ("question", "choice", "options")
_num_choices_cache: dict[tuple, int] = {}


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def train_task(t) -> str:
  """config.data.train.task, checked."""
  task = t.get("task", "retrieval") or "retrieval"
  if task not in TRAIN_TASKS:
    raise DataConfigError(f"config.data.train.task={task!r}: expected one of {TRAIN_TASKS}")
  return task


def eval_task(e) -> str:
  """An eval block's task: its `task`, else its `type` when that names a task, else retrieval."""
  kind = e.get("type", "")
  task = e.get("task", "") or (kind if kind in TASKS else "retrieval")
  if task not in TASKS:
    raise DataConfigError(f"evals.<name>.task={task!r}: expected one of {TASKS}")
  return task


def check_template(template: str, where: str) -> str:
  """`mc_template` may use {question}, {choice} (required) and {options} (all options)."""
  try:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
  except ValueError as e:
    raise DataConfigError(f"{where}.mc_template={template!r}: not a format string ({e})") from None
  if "choice" not in names or names - set(MC_FIELDS):
    raise DataConfigError(f"{where}.mc_template={template!r}: expected fields among "
                     f"{{{', '.join(MC_FIELDS)}}} including {{choice}}")
  return template


def mc_texts(question, choices: Sequence, template: str = MC_TEMPLATE) -> list[str]:
  """The K option texts: template(question, choice, options) stripped; the options alone when
  the question is '' (e.g. caption multiple choice)."""
  q = _text(question).strip()
  cs = [_text(c).strip() for c in choices]
  if not q:
    return cs
  options = " ".join(cs)
  return [template.format(question=q, choice=c, options=options).strip() for c in cs]


def require_features(builder, names: Sequence[str], where: str) -> None:
  missing = [n for n in names if n not in builder.info.features]
  if missing:
    raise DataConfigError(f"dataset {builder.name} has no {missing} feature(s), needed by {where}; "
                     f"it has {sorted(builder.info.features.keys())}")


def read_features(builder, split: str, names: Sequence[str]) -> Iterator[dict[str, Any]]:
  """Numpy examples of `split` with only `names` decoded (no video)."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=tfds.decode.PartialDecoding({n: True for n in names}))
  return iter(tfds.as_numpy(ds))


def num_choices(builder, split: str, where: str) -> int:
  """K, the options per example, the same in every example of `split` (else a ValueError naming
  the builder, split and example); also checks 0 <= mc_answer < K."""
  key = (builder.name, builder.builder_config.name if builder.builder_config else "",
         str(builder.data_dir), split)
  if key in _num_choices_cache:
    return _num_choices_cache[key]
  require_features(builder, ("mc_choices", "mc_answer"), f"{where}.task='multiple_choice'")
  names = ("mc_choices", "mc_answer") + (("video_id",) if "video_id" in builder.info.features
                                         else ())
  k = None
  for i, ex in enumerate(read_features(builder, split, names)):
    n, ans = len(ex["mc_choices"]), int(ex["mc_answer"])
    name = f"example {i}" + (f" (video_id {_text(ex['video_id'])!r})" if "video_id" in ex
                             else "")
    if k is None:
      k = n
    if n != k or n == 0:
      raise DataConfigError(f"{builder.name}/{split}: {name} has {n} options but the first example "
                       f"has {k}: task 'multiple_choice' needs the same number of options (K) "
                       "in every example of a split")
    if not 0 <= ans < n:
      raise DataConfigError(f"{builder.name}/{split}: {name} has mc_answer={ans}, expected 0..{n - 1}")
  if k is None:
    raise DataConfigError(f"{builder.name}/{split}: no examples for task 'multiple_choice'")
  _num_choices_cache[key] = k
  return k


def num_classes(builder, where: str) -> int:
  """Classes of the ClassLabel `label` feature (task 'classification')."""
  require_features(builder, ("label",), f"{where}.task='classification'")
  feature = builder.info.features["label"]
  if not isinstance(feature, tfds.features.ClassLabel):
    raise DataConfigError(f"dataset {builder.name}: feature 'label' is {type(feature).__name__}, "
                     "expected a ClassLabel (task 'classification')")
  return int(feature.num_classes)


def text_field(cfg, builder, where: str) -> str:
  """The caption feature of retrieval (`text_field`, default 'captions'): Sequence(Text) or Text."""
  field = cfg.get("text_field", "captions") or "captions"
  require_features(builder, (field,), f"{where}.text_field={field!r}")
  return field


def check_num_labels(config, n: int, what: str) -> None:
  """`n` labels fit config.model.num_labels (when the model sets it)."""
  limit = int(config.model.get("num_labels", 0) or 0)
  if limit and n > limit:
    raise DataConfigError(f"the {what} has {n} entries but config.model.num_labels={limit}; set "
                     f"num_labels >= {n}" + (f" (the reference uses max(len(ans2label), "
                                             f"{qa.MIN_NUM_LABELS}))" if "answer" in what
                                             else ""))


def pick_caption(captions: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One caption of a clip's captions (any shape), uniform from `seed`; '' when there is none."""
  caps = tf.reshape(captions, [-1])
  n = tf.shape(caps)[0]
  caps = tf.concat([caps, [""]], 0)  # a clip without captions trains on '' (no crash)
  pick = tf.random.stateless_uniform([], seed, 0, tf.maximum(n, 1), dtype=tf.int32)
  return caps[pick]


@dataclasses.dataclass
class TrainText:
  """The tokenizer and text settings of one training stream (built once per dataset)."""
  tokenizer: Any
  length: int                 # config.data.train.max_text_len
  local_batch: int
  corrupt: Callable | None = None   # (ids, mask, seed) -> (mlm ids, labels), text_ops
  template: str = MC_TEMPLATE
  prompt: tuple = ()          # class_prompt's (ids, mask), each [1, L]
  num_choices: int = 0

  def encode(self, texts) -> tuple[np.ndarray, np.ndarray]:
    """Eager tokenization of a string tensor [N] (inside tf.py_function)."""
    return text_ops.tokenize(self.tokenizer, texts.numpy(), self.length)

  def tokenize(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Graph tokenization of strings [N]: int32 ids, mask [N, L]."""
    ids, mask = tf.py_function(self.encode, [texts], [tf.int32, tf.int32])
    ids.set_shape([None, self.length])
    mask.set_shape([None, self.length])
    return ids, mask

  def batch_tokens(self, texts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    ids, mask = self.tokenize(texts)
    ids.set_shape([self.local_batch, self.length])
    mask.set_shape([self.local_batch, self.length])
    return ids, mask


@dataclasses.dataclass(frozen=True)
class Task:
  """One kind of training / evaluation example. `train_keys` / `eval_keys`: its batch keys
  besides the inputs' (the modality readers'); `unit`: what one training record is."""
  name: str
  train_keys: tuple[str, ...]
  eval_keys: tuple[str, ...]
  unit: str = "examples"

  def features(self, config, builder) -> tuple[str, ...]:
    """TFDS features (besides the inputs) a training example needs; checks them."""
    return ()

  def records(self, config, builder, split: str, decoders: dict,
              keep: tuple[str, ...]) -> tuple[tf.data.Dataset, int]:
    """The host's training records (inputs still encoded) with only `keep`, and their number."""
    base = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    return base.map(lambda ex: {k: ex[k] for k in keep}), builder.info.splits[split].num_examples

  def rows(self, base: tf.data.Dataset, ctx) -> tf.data.Dataset:
    """The training rows from ctx.first_example on, from the host's records `base`: shuffled
    epochs, one row per record (a task may unroll a record into several rows)."""
    return ctx.shuffled(base, "shuffle", 1)

  def row(self, ex: dict, seed: tf.Tensor, ctx) -> dict:
    """The task fields of one training row (TF ops), besides the inputs."""
    raise NotImplementedError

  def text(self, batch: dict, ctx, text: TrainText) -> dict:
    """The task's keys of one host batch (train_keys)."""
    raise NotImplementedError

  def eval_fields(self, ex: dict, ctx: "EvalText") -> dict:
    """The task fields of one decoded evaluation example (TF ops), besides the inputs."""
    raise NotImplementedError


class Retrieval(Task):
  """Clip + one random caption of `text_field`; MLM on the caption."""

  def features(self, config, builder):
    return (text_field(config.data.train, builder, "config.data.train"),)

  def row(self, ex, seed, ctx):
    return dict(caption=pick_caption(ex[ctx.text_field], seed))

  def text(self, batch, ctx, text):
    ids, mask = text.batch_tokens(batch["caption"])
    mlm_seed = tf.stack([tf.constant(ctx.seed, tf.int64) * 16 + seeds.STREAM_SALTS["mlm"],
                         batch["step"][0] * ctx.process_count + ctx.process_index])
    mlm_ids, labels = text.corrupt(ids, mask, mlm_seed)
    return dict(text_ids=ids, text_mask=mask, mlm_text_ids=mlm_ids, mlm_labels=labels)

  def eval_fields(self, ex, ctx):
    return dict(text=ex[ctx.field])


class QA(Task):
  """Clip + one question (one record per in-vocabulary QA pair); label = the answer index."""

  def records(self, config, builder, split, decoders, keep):
    """The reference trains on the (clip, question) pairs whose answer is in ans2label."""
    vocab = qa.resolve_answer_vocab(config)
    check_num_labels(config, len(vocab), "answer vocabulary")
    clips = qa.read_qa_pairs(builder, split)
    feature = qa.qa_feature(builder)
    count = sum(int((qa.answer_labels(c["answer"], vocab) >= 0).sum()) for c in clips)
    init = tf.lookup.KeyValueTensorInitializer(tf.constant(list(vocab), tf.string),
                                               tf.constant(list(vocab.values()), tf.int32))
    table = tf.lookup.StaticHashTable(init, default_value=-1)
    base = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)

    def rows(ex):
      pair = qa.as_qa(ex[feature], feature)
      pairs = dict(question=pair["question"], label=table.lookup(pair["answer"]))
      shared = {k: ex[k] for k in keep}
      return tf.data.Dataset.from_tensor_slices(pairs).map(lambda r: dict(**shared, **r))

    return base.flat_map(rows).filter(lambda r: r["label"] >= 0), count

  def row(self, ex, seed, ctx):
    return dict(caption=ex["question"], label=ex["label"])

  def text(self, batch, ctx, text):  # the question only; no MLM in QA fine-tuning
    ids, mask = text.batch_tokens(batch["caption"])
    return dict(text_ids=ids, text_mask=mask, label=batch["label"])

  def eval_fields(self, ex, ctx):
    return dict(text=qa.as_qa(ex[ctx.qa_feature], ctx.qa_feature))


class MultipleChoice(Task):
  """Clip + K option texts (mc_template); label = mc_answer."""

  def features(self, config, builder):
    num_choices(builder, config.data.train.split, "config.data.train")
    return ("mc_choices", "mc_answer") + (("question",) if "question" in builder.info.features
                                          else ())

  def row(self, ex, seed, ctx):
    question = ex["question"] if "question" in ex else tf.constant("")
    return dict(question=question, choices=ex["mc_choices"],
                label=tf.cast(ex["mc_answer"], tf.int32))

  def text(self, batch, ctx, text):
    b, k, length = text.local_batch, text.num_choices, text.length

    def encode_choices(questions, choices):
      texts = [c for q, cs in zip(questions.numpy(), choices.numpy())
               for c in mc_texts(q, cs, text.template)]
      ids, mask = text_ops.tokenize(text.tokenizer, texts, length)
      return ids.reshape(b, k, length), mask.reshape(b, k, length)

    ids, mask = tf.py_function(encode_choices, [batch["question"], batch["choices"]],
                               [tf.int32, tf.int32])
    ids.set_shape([b, k, length])
    mask.set_shape([b, k, length])
    return dict(choice_ids=ids, choice_mask=mask, label=batch["label"])

  def eval_fields(self, ex, ctx):
    out = dict(choices=ex["mc_choices"], label=tf.cast(ex["mc_answer"], tf.int32))
    if "question" in ex:
      out["question"] = ex["question"]
    return out


class Classification(Task):
  """Clip + class_prompt; label = the ClassLabel index."""

  def features(self, config, builder):
    check_num_labels(config, num_classes(builder, "config.data.train"),
                     f"label ClassLabel of {builder.name}")
    return ("label",)

  def row(self, ex, seed, ctx):
    return dict(label=tf.cast(ex["label"], tf.int32))

  def text(self, batch, ctx, text):  # the same class_prompt text for every clip
    ids, mask = (tf.tile(tf.constant(x), [text.local_batch, 1]) for x in text.prompt)
    return dict(text_ids=ids, text_mask=mask, label=batch["label"])

  def eval_fields(self, ex, ctx):
    return dict(label=tf.cast(ex["label"], tf.int32))


class AsrClips(Task):
  """A whole narrated video per record, unrolled into clips.n_clips rows: clip windows of its
  stored features and the clip's ASR text ('' when none) (vlx.data.asr_clips); no MLM."""

  def features(self, config, builder):
    s = asr_clips.settings(config.data.train)
    asr_clips.check_features(s, builder)
    return s.features

  def rows(self, base, ctx):
    return asr_clips.unroll(base, ctx, asr_clips.settings(ctx.config.data.train))

  def row(self, ex, seed, ctx):
    return dict(caption=ex[asr_clips.TEXT_KEY])

  def text(self, batch, ctx, text):
    ids, mask = text.batch_tokens(batch["caption"])
    return dict(text_ids=ids, text_mask=mask)

  def eval_fields(self, ex, ctx):
    raise DataConfigError("task 'asr_clips' is a training task; evaluate with 'retrieval'")


TASK = {t.name: t for t in (
    Retrieval("retrieval", ("text_ids", "text_mask", "mlm_text_ids", "mlm_labels"),
              ("text_ids", "text_mask", "video_index", "valid")),
    QA("qa", ("text_ids", "text_mask", "label"),
       ("text_ids", "text_mask", "video_index", "valid", "label", "qtype", "example_index"),
       unit="QA pairs with in-vocabulary answers"),
    MultipleChoice("multiple_choice", ("choice_ids", "choice_mask", "label"),
                   ("choice_ids", "choice_mask", "label", "video_index", "example_index",
                    "valid")),
    Classification("classification", ("text_ids", "text_mask", "label"),
                   ("text_ids", "text_mask", "label", "video_index", "example_index",
                    "view_index", "valid")),
    AsrClips("asr_clips", ("text_ids", "text_mask"), (), unit="videos"),
)}
# the keys of a batch of the default single `video` input (vlx.data.modalities)
TRAIN_KEYS = {n: ("video",) + t.train_keys for n, t in TASK.items()}
EVAL_KEYS = {n: ("video",) + t.eval_keys for n, t in TASK.items()}


@dataclasses.dataclass
class EvalText:
  """Everything an evaluation batch's text and labels need (built once per make_eval_batches)."""
  task: str
  tokenizer: Any
  max_len: int
  field: str = "captions"
  template: str = MC_TEMPLATE
  prompt: str = ""
  vocab: dict | None = None
  qtypes: tuple = ()
  qtype_source: str = "first_word"
  qa_feature: str = "qa"      # the builder's QA-pair feature (qa.qa_feature)
  num_choices: int = 0
  inputs: dict = dataclasses.field(default_factory=dict)  # {key: (row shape, dtype)} (readers)

  def rows(self, rows_kind: str, ex: dict) -> Iterator[dict]:
    """The evaluation rows of one decoded clip `ex` (input / text / index fields);
    classification inputs carry a leading view axis (one row per view)."""
    base = dict(video_index=ex["video_index"])
    base.update({k: ex[k] for k in self.inputs if self.task != "classification"})
    if self.task == "retrieval":
      caps = list(np.reshape(ex["text"], [-1]))
      for c in (caps if rows_kind == "captions" else caps[:1] or [b""]):
        yield dict(base, text=c)
    elif self.task == "qa":
      t = ex["text"]
      if self.qtype_source == "feature" and "qtype" not in t:
        raise DataConfigError("evals.<name>.qtype_source='feature' but the dataset has no qa/qtype "
                         "feature")
      for j, q in enumerate(t["question"]):
        yield dict(base, text=q, answer=t["answer"][j],
                   qtype=t["qtype"][j] if "qtype" in t else b"")
    elif self.task == "multiple_choice":
      yield dict(base, example_index=ex["video_index"], label=ex["label"],
                 text=mc_texts(ex.get("question", b""), ex["choices"], self.template))
    else:
      for v in range(len(ex[next(iter(self.inputs))])):
        yield dict(base, example_index=ex["video_index"], label=ex["label"], view_index=v,
                   text=self.prompt, **{k: ex[k][v] for k in self.inputs})

  def finish(self, buf: list[dict], start: int) -> dict[str, np.ndarray]:
    """Stacks rows into a batch (tokenizes); `start` = split position of the first QA row."""
    n = len(buf)
    out = {k: np.stack([r[k] for r in buf]) for k in self.inputs}
    out.update(video_index=np.asarray([r["video_index"] for r in buf], np.int32),
               valid=np.ones(n, bool))
    if self.task == "multiple_choice":
      k = self.num_choices
      ids, mask = text_ops.tokenize(self.tokenizer, [t for r in buf for t in r["text"]],
                                    self.max_len)
      out["choice_ids"] = ids.reshape(n, k, self.max_len)
      out["choice_mask"] = mask.reshape(n, k, self.max_len)
    else:
      out["text_ids"], out["text_mask"] = text_ops.tokenize(
          self.tokenizer, [r["text"] for r in buf], self.max_len)
    if self.task == "qa":
      out["label"] = qa.answer_labels([r["answer"] for r in buf], self.vocab)
      out["qtype"] = qa.qtype_ids([r["text"] for r in buf], self.qtypes,
                                  source=self.qtype_source,
                                  features=[r["qtype"] for r in buf]
                                  if self.qtype_source == "feature" else None)
      out["example_index"] = np.arange(start, start + n, dtype=np.int32)
    elif self.task in ("multiple_choice", "classification"):
      out["label"] = np.asarray([r["label"] for r in buf], np.int32)
      out["example_index"] = np.asarray([r["example_index"] for r in buf], np.int32)
      if self.task == "classification":
        out["view_index"] = np.asarray([r["view_index"] for r in buf], np.int32)
    return out

  def empty(self) -> dict[str, np.ndarray]:
    """A zero-row batch with this task's keys, shapes and dtypes (padding of a short host)."""
    shapes = dict(self.inputs, text_ids=((self.max_len,), np.int32),
                  text_mask=((self.max_len,), np.int32),
                  choice_ids=((self.num_choices, self.max_len), np.int32),
                  choice_mask=((self.num_choices, self.max_len), np.int32),
                  valid=((), bool))
    keys = tuple(self.inputs) + TASK[self.task].eval_keys
    return {k: np.zeros((0,) + shapes.get(k, ((), np.int32))[0], shapes.get(k, ((), np.int32))[1])
            for k in keys}


def average_over_views(values: np.ndarray, example_index: np.ndarray,
                       valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean of `values` [N, ...] over the rows sharing an example_index (classification views);
  returns (sorted unique example indices, means). Rows with valid=False are left out."""
  values, example_index = np.asarray(values), np.asarray(example_index)
  if valid is not None:
    keep = np.asarray(valid, bool)
    values, example_index = values[keep], example_index[keep]
  ids, inverse, counts = np.unique(example_index, return_inverse=True, return_counts=True)
  sums = np.zeros((len(ids),) + values.shape[1:], np.float64)
  np.add.at(sums, inverse, values)
  return ids, (sums / counts.reshape((-1,) + (1,) * (values.ndim - 1))).astype(values.dtype)

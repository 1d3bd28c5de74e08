"""What one example of each task is: the TFDS features it reads and the batch keys it yields.

`config.data.train.task` / `evals.<name>.task` (or the eval `type`) picks one of TASKS. Training
rows are built with TF ops inside tf.data (texts tokenized per batch in a py_function); evaluation
rows with numpy (`EvalText`). The data_contract feature names are read: `captions` (or any
`text_field`), `qa`, `question` / `mc_choices` / `mc_answer`, `label` (ClassLabel).
"""
from __future__ import annotations

import dataclasses
import string
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vlx.data import qa, text_ops

TASKS = ("retrieval", "qa", "multiple_choice", "classification")
TRAIN_KEYS = {
    "retrieval": ("video", "text_ids", "text_mask", "mlm_text_ids", "mlm_labels"),
    "qa": ("video", "text_ids", "text_mask", "label"),
    "multiple_choice": ("video", "choice_ids", "choice_mask", "label"),
    "classification": ("video", "text_ids", "text_mask", "label"),
}
EVAL_KEYS = {
    "retrieval": ("video", "text_ids", "text_mask", "video_index", "valid"),
    "qa": ("video", "text_ids", "text_mask", "video_index", "valid", "label", "qtype",
           "example_index"),
    "multiple_choice": ("video", "choice_ids", "choice_mask", "label", "video_index",
                        "example_index", "valid"),
    "classification": ("video", "text_ids", "text_mask", "label", "video_index", "example_index",
                       "view_index", "valid"),
}
INDEX_KEYS = ("video_index", "example_index", "view_index")  # -1 on padding rows
MC_TEMPLATE = "{question} {choice}"
MC_FIELDS = ("question", "choice", "options")
_num_choices_cache: dict[tuple, int] = {}


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def train_task(t) -> str:
  """config.data.train.task, checked."""
  task = t.get("task", "retrieval") or "retrieval"
  if task not in TASKS:
    raise ValueError(f"config.data.train.task={task!r}: expected one of {TASKS}")
  return task


def eval_task(e) -> str:
  """An eval block's task: its `task`, else its `type` when that names a task, else retrieval."""
  kind = e.get("type", "")
  task = e.get("task", "") or (kind if kind in TASKS else "retrieval")
  if task not in TASKS:
    raise ValueError(f"evals.<name>.task={task!r}: expected one of {TASKS}")
  return task


def check_template(template: str, where: str) -> str:
  """`mc_template` may use {question}, {choice} (required) and {options} (all options)."""
  try:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
  except ValueError as e:
    raise ValueError(f"{where}.mc_template={template!r}: not a format string ({e})") from None
  if "choice" not in names or names - set(MC_FIELDS):
    raise ValueError(f"{where}.mc_template={template!r}: expected fields among "
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
    raise ValueError(f"dataset {builder.name} has no {missing} feature(s), needed by {where}; "
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
      raise ValueError(f"{builder.name}/{split}: {name} has {n} options but the first example "
                       f"has {k}: task 'multiple_choice' needs the same number of options (K) "
                       "in every example of a split")
    if not 0 <= ans < n:
      raise ValueError(f"{builder.name}/{split}: {name} has mc_answer={ans}, expected 0..{n - 1}")
  if k is None:
    raise ValueError(f"{builder.name}/{split}: no examples for task 'multiple_choice'")
  _num_choices_cache[key] = k
  return k


def num_classes(builder, where: str) -> int:
  """Classes of the ClassLabel `label` feature (task 'classification')."""
  require_features(builder, ("label",), f"{where}.task='classification'")
  feature = builder.info.features["label"]
  if not isinstance(feature, tfds.features.ClassLabel):
    raise ValueError(f"dataset {builder.name}: feature 'label' is {type(feature).__name__}, "
                     "expected a ClassLabel (task 'classification')")
  return int(feature.num_classes)


def text_field(cfg, builder, where: str) -> str:
  """The caption feature of retrieval (`text_field`, default 'captions'): Sequence(Text) or Text."""
  field = cfg.get("text_field", "captions") or "captions"
  require_features(builder, (field,), f"{where}.text_field={field!r}")
  return field


def train_features(task: str, cfg, builder) -> tuple[str, ...]:
  """TFDS features (besides video) one training example of `task` needs."""
  where = "config.data.train"
  if task == "retrieval":
    return (text_field(cfg, builder, where),)
  if task == "multiple_choice":
    num_choices(builder, cfg.split, where)
    return ("mc_choices", "mc_answer") + (("question",) if "question" in builder.info.features
                                          else ())
  if task == "classification":
    num_classes(builder, where)
    return ("label",)
  raise ValueError(f"task {task!r} has no per-clip training rows")  # qa: one row per QA pair


def train_row(task: str, ex: dict, caption_seed: tf.Tensor, field: str = "captions") -> dict:
  """The non-video part of one training row (TF ops): `caption` (+ label / choices)."""
  if task == "retrieval":
    caps = tf.reshape(ex[field], [-1])
    n = tf.shape(caps)[0]
    caps = tf.concat([caps, [""]], 0)  # a clip without captions trains on '' (no crash)
    pick = tf.random.stateless_uniform([], caption_seed, 0, tf.maximum(n, 1), dtype=tf.int32)
    return dict(caption=caps[pick])
  if task == "qa":
    return dict(caption=ex["question"], label=ex["label"])
  if task == "multiple_choice":
    question = ex["question"] if "question" in ex else tf.constant("")
    return dict(question=question, choices=ex["mc_choices"],
                label=tf.cast(ex["mc_answer"], tf.int32))
  return dict(label=tf.cast(ex["label"], tf.int32))


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
  num_choices: int = 0

  def rows(self, rows_kind: str, ex: dict) -> Iterator[dict]:
    """The evaluation rows of one decoded clip `ex` (video / text / index fields)."""
    base = dict(video_index=ex["video_index"])
    if self.task == "retrieval":
      caps = list(np.reshape(ex["text"], [-1]))
      for c in (caps if rows_kind == "captions" else caps[:1] or [b""]):
        yield dict(base, video=ex["video"], text=c)
    elif self.task == "qa":
      t = ex["text"]
      if self.qtype_source == "feature" and "qtype" not in t:
        raise ValueError("evals.<name>.qtype_source='feature' but the dataset has no qa/qtype "
                         "feature")
      for j, q in enumerate(t["question"]):
        yield dict(base, video=ex["video"], text=q, answer=t["answer"][j],
                   qtype=t["qtype"][j] if "qtype" in t else b"")
    elif self.task == "multiple_choice":
      yield dict(base, video=ex["video"], example_index=ex["video_index"], label=ex["label"],
                 text=mc_texts(ex.get("question", b""), ex["choices"], self.template))
    else:
      views = ex["video"] if ex["video"].ndim == 5 else ex["video"][None]
      for v, video in enumerate(views):
        yield dict(base, video=video, example_index=ex["video_index"], label=ex["label"],
                   view_index=v, text=self.prompt)

  def finish(self, buf: list[dict], start: int) -> dict[str, np.ndarray]:
    """Stacks rows into a batch (tokenizes); `start` = split position of the first QA row."""
    n = len(buf)
    out = dict(video=np.stack([r["video"] for r in buf]),
               video_index=np.asarray([r["video_index"] for r in buf], np.int32),
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

  def empty(self, num_frames: int, size: int) -> dict[str, np.ndarray]:
    """A zero-row batch with this task's keys, shapes and dtypes (padding of a short host)."""
    shapes = dict(video=((num_frames, size, size, 3), np.float32),
                  text_ids=((self.max_len,), np.int32), text_mask=((self.max_len,), np.int32),
                  choice_ids=((self.num_choices, self.max_len), np.int32),
                  choice_mask=((self.num_choices, self.max_len), np.int32),
                  valid=((), bool))
    return {k: np.zeros((0,) + shapes.get(k, ((), np.int32))[0], shapes.get(k, ((), np.int32))[1])
            for k in EVAL_KEYS[self.task]}


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

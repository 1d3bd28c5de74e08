"""Open-ended video QA: the answer vocabulary, question types and the split's QA metadata.

The ALPRO reference (spec §6.2) classifies over `train_ans2label.json` ({answer: index}) with
`num_labels = max(len(ans2label), 1500)`. The reference ships that file pre-built (MSRVTT-QA: the
1500 most frequent train answers; MSVD-QA: 2423 answers) without the script that made it, so
`build_answer_vocab` fixes the order itself: by descending train frequency, ties by first
appearance in the train split, index = rank. Training only ever sees in-vocabulary answers (the
reference looks each train answer up in ans2label and would fail otherwise); at evaluation an
answer outside the vocabulary gets label -1 and always counts as wrong.

Question types: the reference reads an `answer_type` field written into its annotations (for
MSRVTT-QA / MSVD-QA one of what/who/how/where/when: the question's wh-word). Here the type is the
question's first word (`qtype_source='first_word'`) or a builder's own `qa/qtype` feature
(`qtype_source='feature'`, e.g. moving_shapes: colour/shape/direction/count).

QA pairs come from the builder's `qa` feature (question/answer[/qtype]) or, for a dataset without
one, its fill-in-the-blank `fib` feature (sentence with the blank = the question, answer): every
reader (training rows, answer vocabulary, evaluation rows) resolves it with `qa_feature`.
"""
from __future__ import annotations

import collections
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

from vlx.data.errors import DataConfigError

MSRVTT_QTYPES = ("what", "who", "how", "where", "when")
MIN_NUM_LABELS = 1500           # num_labels = max(len(ans2label), 1500) in the reference
VOCAB_FILENAME = "train_ans2label.json"
QTYPE_SOURCES = ("first_word", "feature")
# QA-pair feature -> (its question field, its answer field); the first one a builder has is read
QA_FEATURES = {"qa": ("question", "answer"), "fib": ("sentence", "answer")}
_cache: dict[tuple, dict[str, int]] = {}


def build_answer_vocab(answers: Iterable[str], top_k: int = 0) -> dict[str, int]:
  """{answer: index} over the `top_k` most frequent answers (0 = all); ties by first appearance."""
  if top_k < 0:
    raise DataConfigError(f"answer vocabulary top_k={top_k} must be >= 0 (0 = every answer)")
  counts = collections.Counter(_text(a) for a in answers)   # insertion order = first appearance
  ranked = sorted(counts.items(), key=lambda kv: -kv[1])     # stable: ties keep first appearance
  if top_k:
    ranked = ranked[:top_k]
  return {a: i for i, (a, _) in enumerate(ranked)}


def save_answer_vocab(vocab: dict[str, int], path: str | os.PathLike) -> str:
  """Writes the reference's train_ans2label.json format ({answer: index}); returns the path."""
  _validate(vocab, str(path))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(vocab, f)
  return str(path)


def load_answer_vocab(path: str | os.PathLike) -> dict[str, int]:
  """Reads a train_ans2label.json ({answer: index}, indices 0..n-1 each once)."""
  try:
    with open(os.path.expanduser(str(path))) as f:
      vocab = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"answer vocabulary {path} (config.data.answer_vocab) not found; "
                            "leave the field empty to build it from the train split") from None
  except json.JSONDecodeError as e:
    raise DataConfigError(f"answer vocabulary {path}: not valid JSON ({e})") from None
  _validate(vocab, str(path))
  return vocab


def _validate(vocab, where: str) -> None:
  if not isinstance(vocab, dict) or not vocab:
    raise DataConfigError(f"answer vocabulary {where}: expected a non-empty JSON object "
                     "{answer: index}")
  bad = [k for k, v in vocab.items() if not isinstance(k, str) or isinstance(v, bool)
         or not isinstance(v, int)]
  if bad:
    raise DataConfigError(f"answer vocabulary {where}: keys must be answers and values int indices; "
                     f"bad entries: {bad[:3]}")
  if sorted(vocab.values()) != list(range(len(vocab))):
    raise DataConfigError(f"answer vocabulary {where}: indices must be 0..{len(vocab) - 1}, each once")


def num_labels(vocab: dict[str, int], minimum: int = MIN_NUM_LABELS) -> int:
  """Classifier width as the reference sets it: max(len(ans2label), minimum)."""
  return max(len(vocab), int(minimum))


def answer_labels(answers: Sequence, vocab: dict[str, int]) -> np.ndarray:
  """int32 index of each answer in the vocabulary, -1 where it is not in it."""
  return np.asarray([vocab.get(_text(a), -1) for a in answers], np.int32).reshape(-1)


def question_type(question: str | bytes) -> str:
  """The question's first word, lower-cased, punctuation stripped ('What is...?' -> 'what')."""
  words = re.findall(r"[a-z0-9']+", _text(question).lower())
  return words[0] if words else ""


def qtype_ids(questions: Sequence, qtypes: Sequence[str], *, source: str = "first_word",
              features: Sequence | None = None) -> np.ndarray:
  """int32 index of each question's type in `qtypes`, -1 for a type not listed."""
  if source == "first_word":
    names = [question_type(q) for q in questions]
  elif source == "feature":
    if features is None:
      raise DataConfigError("qtype_source='feature' needs the builder's qa/qtype feature")
    names = [_text(t) for t in features]
  else:
    raise DataConfigError(f"qtype_source={source!r}: expected one of {QTYPE_SOURCES}")
  index = {t: i for i, t in enumerate(qtypes)}
  return np.asarray([index.get(n, -1) for n in names], np.int32).reshape(-1)


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def read_split_texts(builder, split: str, feature: str) -> list[dict[str, list[str]]]:
  """Per clip of `split`, the strings of `feature` ('qa' -> question/answer[/qtype] lists,
  'captions' -> {'captions': [...]}) without decoding the videos."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top (TF stays lazy)
  if feature not in builder.info.features:
    raise DataConfigError(f"dataset {builder.name} has no {feature!r} feature (needed by the "
                     f"{'QA' if feature == 'qa' else 'all-captions'} data path); it has "
                     f"{sorted(builder.info.features.keys())}")
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders=tfds.decode.PartialDecoding({feature: True}))
  out = []
  for ex in tfds.as_numpy(ds):
    value = ex[feature]
    if isinstance(value, dict):
      out.append({k: [_text(s) for s in v] for k, v in value.items()})
    else:
      out.append({feature: [_text(s) for s in value]})
  return out


def qa_feature(builder, where: str = "the QA data path") -> str:
  """The builder's QA-pair feature: the first of QA_FEATURES it has (`qa` before `fib`)."""
  for name in QA_FEATURES:
    if name in builder.info.features:
      return name
  raise DataConfigError(f"dataset {builder.name} has none of the QA features {list(QA_FEATURES)} "
                        f"(needed by {where}); it has {sorted(builder.info.features.keys())}")


def as_qa(value: dict, feature: str) -> dict:
  """A `feature` value (dict of fields) with its question/answer fields named question/answer."""
  q, a = QA_FEATURES[feature]
  if (q, a) == ("question", "answer"):
    return value
  rest = {k: v for k, v in value.items() if k not in (q, a)}
  return dict(rest, question=value[q], answer=value[a])


def read_qa_pairs(builder, split: str) -> list[dict[str, list[str]]]:
  """Per clip of `split`, its QA pairs {'question': [...], 'answer': [...][, 'qtype': [...]]}
  from the builder's QA-pair feature (qa_feature), without decoding the videos."""
  feature = qa_feature(builder, f"split {split!r}")
  return [as_qa(c, feature) for c in read_split_texts(builder, split, feature)]


def resolve_answer_vocab(config, workdir: str = "") -> dict[str, int]:
  """config.data.answer_vocab if set, else built from the train split's QA answers
  (top config.data.answer_top_k, 0 = all); written to <workdir>/train_ans2label.json if given."""
  d = config.data
  path = d.get("answer_vocab", "")
  if path:
    vocab = load_answer_vocab(path)
  else:
    t = d.train
    key = (t.builder, t.get("builder_config", ""), d.data_dir, t.split,
           int(d.get("answer_top_k", 0)))
    if key not in _cache:
      from vlx.data import pipeline  # pylint: disable=g-import-not-at-top (TF stays lazy)
      builder = pipeline.get_builder(t.builder, t.get("builder_config", ""), d.data_dir,
                                     d.get("manual_dir", ""))
      answers = [a for clip in read_qa_pairs(builder, t.split) for a in clip["answer"]]
      if not answers:
        raise DataConfigError(f"no QA answers in {t.builder}/{t.split} to build the answer vocabulary")
      _cache[key] = build_answer_vocab(answers, key[-1])
    vocab = dict(_cache[key])
  if workdir:
    save_answer_vocab(vocab, os.path.join(workdir, VOCAB_FILENAME))
  return vocab

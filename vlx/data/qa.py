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
      answers = [a for clip in read_split_texts(builder, t.split, "qa") for a in clip["answer"]]
      if not answers:
        raise DataConfigError(f"no QA answers in {t.builder}/{t.split} to build the answer vocabulary")
      _cache[key] = build_answer_vocab(answers, key[-1])
    vocab = dict(_cache[key])
  if workdir:
    save_answer_vocab(vocab, os.path.join(workdir, VOCAB_FILENAME))
  return vocab

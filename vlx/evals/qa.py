"""Open-ended video QA accuracy as the references report it, and the eval driver.

Metrics (ALPRO spec §6.2, `evaluate_qa` + the rank gathering of `validate`): accuracy = mean of
(predicted answer == ground-truth answer); per question type `<t>_acc` over that type's questions
(0 when it has none) and `<t>_ratio` = its share of all questions; all in percent rounded to 2
decimals. `evals.<name>.protocol` says what a ground truth outside the answer vocabulary does
(each family's configs choose):
  'oov_wrong' (default; ALPRO spec §6.2): the question counts, always wrong;
  'oov_excluded' (All-in-one spec §5, `Accuracy` ignores label -100): the question is left out of
    every accuracy's denominator (the type ratios still count it).
"""
from __future__ import annotations

import time
from typing import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from vlx.data.qa import MSRVTT_QTYPES
from vlx.evals import common
from vlx.registry import Family

PROTOCOLS = ("oov_wrong", "oov_excluded")   # the first is the default


def qa_metrics(pred_answer_ids: Sequence[int], gt: Sequence, qtypes: Sequence,
               vocab: dict[str, int] | None = None,
               type_names: Sequence[str] = MSRVTT_QTYPES,
               exclude_oov: bool = False) -> dict[str, float]:
  """pred_answer_ids [N] (argmax class), gt [N] answer strings (needs `vocab`) or label ids
  (-1 = answer not in the vocabulary), qtypes [N] type names or indices into `type_names`
  (-1 / unknown names count in 'acc' only). Returns 'acc', '<t>_acc', '<t>_ratio' (percent),
  'num_questions'. exclude_oov: accuracies over in-vocabulary answers only ('oov_excluded')."""
  pred = np.asarray(pred_answer_ids, np.int64).reshape(-1)
  n = len(pred)
  if n == 0:
    raise ValueError("qa_metrics: no questions")
  if len(gt) != n or len(qtypes) != n:
    raise ValueError(f"qa_metrics: {n} predictions but {len(gt)} answers and {len(qtypes)} "
                     "question types")
  gt_arr = np.asarray(gt)
  if gt_arr.dtype.kind in "iu":
    labels = gt_arr.astype(np.int64).reshape(-1)
  else:
    if vocab is None:
      raise ValueError("qa_metrics: answer strings need the answer vocabulary")
    labels = np.asarray([vocab.get(a.decode() if isinstance(a, bytes) else str(a), -1)
                         for a in gt], np.int64)
  # The vocabulary maps answers 1:1 to indices, so equal indices <=> equal answer strings; a
  # predicted index past the vocabulary (num_labels > len(vocab)) names no answer.
  correct = (pred == labels) & (labels >= 0)
  q = np.asarray(qtypes)
  if q.dtype.kind in "iu":
    type_ids = q.astype(np.int64).reshape(-1)
  else:
    index = {t: i for i, t in enumerate(type_names)}
    type_ids = np.asarray([index.get(t.decode() if isinstance(t, bytes) else str(t), -1)
                           for t in qtypes], np.int64)
  scored = labels >= 0 if exclude_oov else np.ones(n, bool)
  out = {"acc": common.percent(correct[scored].mean()) if scored.any() else 0.0, "num_questions": n}
  for i, name in enumerate(type_names):
    sel = type_ids == i
    out[f"{name}_acc"] = common.percent(correct[sel & scored].mean()) if (sel & scored).any() else 0.0
    out[f"{name}_ratio"] = common.percent(sel.sum() / n)
  return out


def run_qa_eval(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                make_eval_batches=None) -> dict[str, float]:
  """Classifies every (clip, question) of the split with `family.qa_logits`; returns qa_metrics
  plus 'num_oov' and 'seconds'."""
  t0 = time.perf_counter()
  protocol = eval_cfg.get("protocol", PROTOCOLS[0]) or PROTOCOLS[0]
  if protocol not in PROTOCOLS:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: protocol={protocol!r}, expected one of "
                     f"{PROTOCOLS}")
  family.require("qa_logits", "eval type 'qa'")
  logits, cols = common.collect(model, family, "qa_logits", eval_cfg, config, mesh,
                                make_eval_batches)
  num_classes = int(logits.shape[-1])
  labels = cols["label"].astype(np.int32)
  if labels.size and int(labels.max()) >= num_classes:
    raise ValueError(f"answer label {int(labels.max())} >= the model's {num_classes} classes "
                     "(config.model.num_labels is smaller than the answer vocabulary)")
  names = tuple(eval_cfg.get("qtypes", MSRVTT_QTYPES))
  metrics = qa_metrics(np.argmax(logits, axis=-1), labels, cols["qtype"].astype(np.int32),
                       type_names=names, exclude_oov=protocol == "oov_excluded")
  common.check_unique(cols.get("example_index"), "QA")
  metrics["num_oov"] = int(np.sum(labels < 0))
  metrics["seconds"] = round(time.perf_counter() - t0, 3)
  return metrics

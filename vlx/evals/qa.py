"""Open-ended video QA accuracy as the ALPRO reference reports it, and the eval driver.

Metrics (ALPRO spec §6.2, `evaluate_qa` + the rank gathering of `validate`): accuracy = mean of
(predicted answer == ground-truth answer) over every question, a ground truth outside the answer
vocabulary always wrong; per question type `<t>_acc` over that type's questions (0 when it has
none) and `<t>_ratio` = its share of all questions; all in percent rounded to 2 decimals.
`evals.<name>.protocol='allinone'` measures as the All-in-one reference does (its spec §5,
`Accuracy` ignores label -100): questions whose answer is outside the vocabulary are left out of
every accuracy's denominator instead of counting as wrong.
"""
from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vlx.registry import Family
from vlx import sharding as shd
from vlx.data.qa import MSRVTT_QTYPES
from vlx.evals.retrieval import _gather, _place, _to_host


PROTOCOLS = ("alpro", "allinone")


def _percent(x: float) -> float:
  return round(float(x) * 100, 2)


def qa_metrics(pred_answer_ids: Sequence[int], gt: Sequence, qtypes: Sequence,
               vocab: dict[str, int] | None = None,
               type_names: Sequence[str] = MSRVTT_QTYPES,
               exclude_oov: bool = False) -> dict[str, float]:
  """pred_answer_ids [N] (argmax class), gt [N] answer strings (needs `vocab`) or label ids
  (-1 = answer not in the vocabulary), qtypes [N] type names or indices into `type_names`
  (-1 / unknown names count in 'acc' only). Returns 'acc', '<t>_acc', '<t>_ratio' (percent),
  'num_questions'. exclude_oov: accuracies over in-vocabulary answers only (All-in-one)."""
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
  out = {"acc": _percent(correct[scored].mean()) if scored.any() else 0.0, "num_questions": n}
  for i, name in enumerate(type_names):
    sel = type_ids == i
    out[f"{name}_acc"] = _percent(correct[sel & scored].mean()) if (sel & scored).any() else 0.0
    out[f"{name}_ratio"] = _percent(sel.sum() / n)
  return out


def run_qa_eval(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                make_eval_batches=None) -> dict[str, float]:
  """Classifies every (clip, question) of the split with `family.qa_logits`; returns qa_metrics."""
  if make_eval_batches is None:
    from vlx.data.pipeline import make_eval_batches  # the real pipeline (lazy: TF import)
  t0 = time.perf_counter()
  rules = tuple(config.mesh.rules)
  graphdef, state = nnx.split(model)

  @jax.jit
  def predict(state, batch):
    logits = family.qa_logits(nnx.merge(graphdef, state), batch)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), jnp.int32(logits.shape[-1])

  preds, labels, qtypes, valid, index = [], [], [], [], []
  num_classes = None
  with jax.set_mesh(mesh), shd.use_rules(rules):
    for batch in make_eval_batches(eval_cfg, config, batch_size=int(eval_cfg.batch_size)):
      labels.append(_gather(np.asarray(batch.pop("label"), np.int32)))
      qtypes.append(_gather(np.asarray(batch.pop("qtype"), np.int32)))
      valid.append(_gather(np.asarray(batch.pop("valid"), bool)))
      # example_index / video_index stay in the batch: a family may key per-row randomness on
      # them (All-in-one's eval patch order).
      index.append(_gather(np.asarray(batch.get("example_index", np.zeros(0, np.int32)))))
      batch = {k: v for k, v in batch.items() if np.asarray(v).dtype != object}
      pred, num_classes = predict(state, _place(batch, mesh, rules))
      preds.append(_to_host(pred))
  if not preds:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}/{eval_cfg.get('split')!r}: no batches")
  keep = np.concatenate(valid)
  labels_all = np.concatenate(labels)[keep]
  num_classes = int(jax.device_get(num_classes))
  if labels_all.size and int(labels_all.max()) >= num_classes:
    raise ValueError(f"answer label {int(labels_all.max())} >= the model's {num_classes} classes "
                     "(config.model.num_labels is smaller than the answer vocabulary)")
  names = tuple(eval_cfg.get("qtypes", MSRVTT_QTYPES))
  protocol = eval_cfg.get("protocol", "alpro") or "alpro"
  if protocol not in PROTOCOLS:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: protocol={protocol!r}, expected one of "
                     f"{PROTOCOLS}")
  metrics = qa_metrics(np.concatenate(preds)[keep], labels_all, np.concatenate(qtypes)[keep],
                       type_names=names, exclude_oov=protocol == "allinone")
  ids = np.concatenate(index)
  if ids.size:
    ids = ids[keep]
    if len(np.unique(ids)) != len(ids):
      raise ValueError("QA eval batches repeat an example_index: the split was read twice")
  metrics["num_oov"] = int(np.sum(labels_all < 0))
  metrics["seconds"] = round(time.perf_counter() - t0, 3)
  return metrics

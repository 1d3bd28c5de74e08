"""Multiple-choice accuracy (All-in-one spec §5: MSRVTT-MC, LSMDC-MC, TGIF-Action/Transition).

Every example has K option texts; the family scores them (`family.mc_scores(model, batch)` ->
[B, K]) and the prediction is the argmax. Accuracy (percent, 2 decimals) over every example of
the split; with `evals.<name>.qtypes` and a `qtype` batch key also per type.
"""
from __future__ import annotations

import time
from typing import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from vlx.evals import common
from vlx.registry import Family


def mc_metrics(pred: Sequence[int], labels: Sequence[int], qtypes: Sequence[int] | None = None,
               type_names: Sequence[str] = ()) -> dict[str, float]:
  """pred, labels [N] option indices; qtypes [N] indices into `type_names` (-1 = other).
  Returns 'acc' (percent), 'num_questions' and '<type>_acc' for each type name."""
  pred = np.asarray(pred, np.int64).reshape(-1)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if len(pred) == 0:
    raise ValueError("mc_metrics: no questions")
  if labels.shape != pred.shape:
    raise ValueError(f"mc_metrics: {len(pred)} predictions but {len(labels)} answers")
  correct = pred == labels
  out = {"acc": common.percent(correct.mean()), "num_questions": int(len(pred))}
  if type_names:
    if qtypes is None or len(qtypes) != len(pred):
      raise ValueError("mc_metrics: type_names given but no question type per question")
    q = np.asarray(qtypes, np.int64).reshape(-1)
    for i, name in enumerate(type_names):
      sel = q == i
      out[f"{name}_acc"] = common.percent(correct[sel].mean()) if sel.any() else 0.0
  return out


def run_mc_eval(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                make_eval_batches=None) -> dict[str, float]:
  """Scores every example's options with `family.mc_scores`; returns mc_metrics + 'seconds'."""
  t0 = time.perf_counter()
  scores, cols = common.labelled_outputs(model, family, "mc_scores", "multiple_choice", eval_cfg,
                                         config, mesh, make_eval_batches)
  labels = cols["label"]
  if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
    raise ValueError(f"multiple-choice label outside 0..{scores.shape[1] - 1}")
  names = tuple(eval_cfg.get("qtypes", ()) or ())
  metrics = mc_metrics(np.argmax(scores, axis=1), labels, cols.get("qtype"),
                       names if "qtype" in cols else ())
  common.check_unique(cols.get("example_index"), "multiple-choice")
  metrics["num_choices"] = int(scores.shape[1])
  metrics["seconds"] = round(time.perf_counter() - t0, 3)
  return metrics

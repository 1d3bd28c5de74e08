"""Video classification accuracy (All-in-one spec §5: K400 / HMDB51 linear evaluation).

`family.class_logits(model, batch)` -> [B, C] per row. The pipeline may give several views
(clips / crops) of one video as rows sharing an `example_index`; they are averaged before the
top-k test: the logits (evals.<name>.average='logits', the default) or the per-view softmax
probabilities ('probs', as VIMPAC's Trainer.evaluate, spec §5; then `loss` = the mean over videos
of the mean over views of the per-view cross entropy). Top-1 / top-5 in percent (2 decimals), per
video, plus num_videos, num_views and num_classes.
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


def average_views(logits: np.ndarray, labels: np.ndarray,
                  example_index: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
  """(mean logits [V, C], labels [V], #rows) over rows grouped by example_index (sorted);
  every view of a video must carry the same label."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if example_index is None:
    return logits, labels, len(labels)
  ids, inverse, counts = np.unique(np.asarray(example_index), return_inverse=True,
                                   return_counts=True)
  sums = np.zeros((len(ids), logits.shape[1]), np.float64)
  np.add.at(sums, inverse, logits)
  first = np.zeros(len(ids), np.int64)
  first[inverse[::-1]] = labels[::-1]           # any row's label; checked equal below
  if np.any(first[inverse] != labels):
    raise ValueError("classification eval: views of one example_index carry different labels")
  return sums / counts[:, None], first, len(labels)


AVERAGES = ("logits", "probs")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def classification_metrics(logits: np.ndarray, labels: Sequence[int],
                           example_index: Sequence[int] | None = None,
                           ks: tuple[int, ...] = (1, 5), average: str = "logits"
                           ) -> dict[str, float]:
  """logits [N, C] per row, labels [N]; rows sharing an example_index are views of one video,
  averaged as `average` says (module docstring). Returns 'top1', 'top5' (percent),
  'num_videos', 'num_views', 'num_classes' (+ 'loss' for 'probs')."""
  logits = np.asarray(logits, np.float64)
  if average not in AVERAGES:
    raise ValueError(f"evals.<name>.average={average!r}: expected one of {AVERAGES}")
  if logits.ndim != 2 or len(logits) == 0:
    raise ValueError(f"classification_metrics: logits must be [N>0, C]; got {logits.shape}")
  if len(labels) != len(logits):
    raise ValueError(f"classification_metrics: {len(logits)} rows but {len(labels)} labels")
  index = None if example_index is None else np.asarray(example_index)
  scores = logits
  if average == "probs":
    logp = _log_softmax(logits)
    scores = np.exp(logp)
  mean, gt, rows = average_views(scores, np.asarray(labels), index)
  if gt.min() < 0 or gt.max() >= mean.shape[1]:
    raise ValueError(f"classification_metrics: label outside 0..{mean.shape[1] - 1}")
  order = np.argsort(-mean, axis=1, kind="stable")
  out: dict[str, float] = {}
  for k in ks:
    out[f"top{k}"] = common.percent(np.mean(np.any(order[:, :k] == gt[:, None], axis=1)))
  out["num_videos"] = int(len(gt))
  out["num_views"] = int(rows)
  out["num_classes"] = int(mean.shape[1])
  if average == "probs":
    row_labels = np.asarray(labels, np.int64).reshape(-1)
    nll = -np.take_along_axis(logp, row_labels[:, None], axis=1)
    out["loss"] = round(float(np.mean(average_views(nll, row_labels, index)[0])), 6)
  return out


def run_classification_eval(model: nnx.Module, family: Family,
                            eval_cfg: ml_collections.ConfigDict,
                            config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                            make_eval_batches=None) -> dict[str, float]:
  """Classifies every view with `family.class_logits`; returns classification_metrics."""
  t0 = time.perf_counter()
  logits, cols = common.labelled_outputs(model, family, "class_logits", "classification",
                                         eval_cfg, config, mesh, make_eval_batches)
  metrics = classification_metrics(logits, cols["label"], cols.get("example_index"),
                                   average=eval_cfg.get("average", "logits") or "logits")
  metrics["seconds"] = round(time.perf_counter() - t0, 3)
  return metrics

"""Video classification accuracy (All-in-one spec §5: K400 / HMDB51 linear evaluation).

`family.class_logits(model, batch)` -> [B, C] per row. The pipeline may give several views
(clips / crops) of one video as rows sharing an `example_index`; their logits are averaged
before the top-k test. Top-1 / top-5 in percent (2 decimals), per video.
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


def classification_metrics(logits: np.ndarray, labels: Sequence[int],
                           example_index: Sequence[int] | None = None,
                           ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
  """logits [N, C] per row, labels [N]; rows sharing an example_index are views of one video
  (logits averaged). Returns 'top1', 'top5' (percent), 'num_videos', 'num_views'."""
  logits = np.asarray(logits)
  if logits.ndim != 2 or len(logits) == 0:
    raise ValueError(f"classification_metrics: logits must be [N>0, C]; got {logits.shape}")
  if len(labels) != len(logits):
    raise ValueError(f"classification_metrics: {len(logits)} rows but {len(labels)} labels")
  mean, gt, rows = average_views(logits, np.asarray(labels),
                                 None if example_index is None else np.asarray(example_index))
  if gt.min() < 0 or gt.max() >= mean.shape[1]:
    raise ValueError(f"classification_metrics: label outside 0..{mean.shape[1] - 1}")
  order = np.argsort(-mean, axis=1, kind="stable")
  out: dict[str, float] = {}
  for k in ks:
    out[f"top{k}"] = common.percent(np.mean(np.any(order[:, :k] == gt[:, None], axis=1)))
  out["num_videos"] = int(len(gt))
  out["num_views"] = int(rows)
  return out


def run_classification_eval(model: nnx.Module, family: Family,
                            eval_cfg: ml_collections.ConfigDict,
                            config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                            make_eval_batches=None) -> dict[str, float]:
  """Classifies every view with `family.class_logits`; returns classification_metrics."""
  t0 = time.perf_counter()
  logits, cols = common.labelled_outputs(model, family, "class_logits", "classification",
                                         eval_cfg, config, mesh, make_eval_batches)
  metrics = classification_metrics(logits, cols["label"], cols.get("example_index"))
  metrics["seconds"] = round(time.perf_counter() - t0, 3)
  return metrics

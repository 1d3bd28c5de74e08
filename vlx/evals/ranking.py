"""Retrieval metrics with tied scores averaged over full-dataset denominators, and averaging of
embedding rows that share an id.

Protocol 'averaged_ties' (the metric of shared/reference/eao/spec.md §6, metric.retrieval_metrics):
queries are the rows of the score matrix, the ground truth of row i is column gt[i]; its rank is
the mean of the positions it shares with tied scores (rank = #above + (#tied - 1) / 2, 0-based).
R@k = 100 * #(rank < k) / num_queries, where num_queries = `complete_size` when the dataset defines
one (queries missing from the data count as failures), else the number of rows; MedR and MeanR
(rank + 1) are over the present queries only; 'geomean' = geometric mean of R1, R5, R10.

`average_by_id` is the reference's average_embeddings (trainer/utils.py): raw rows sharing an id
are averaged, rows with id -1 dropped, the groups in sorted-id order.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

KS = (1, 5, 10, 50)
DROP_ID = -1


def averaged_ranks(sim: np.ndarray, gt: Sequence[int]) -> np.ndarray:
  """0-based rank of each row's ground-truth column, ties averaged -> float64 [Nq]."""
  s = np.asarray(sim, np.float64)
  gt = np.asarray(gt, np.int64)
  if s.ndim != 2 or gt.shape != (s.shape[0],):
    raise ValueError(f"averaged_ranks: sim must be [Nq, Nc] and gt [Nq]; got {s.shape}, "
                     f"{gt.shape}")
  if gt.size and (gt.min() < 0 or gt.max() >= s.shape[1]):
    raise ValueError("averaged_ranks: gt has column indices outside [0, Nc)")
  own = s[np.arange(len(gt)), gt][:, None]
  return np.sum(s > own, axis=1) + (np.sum(s == own, axis=1) - 1) / 2.0


def metric_vector(ranks: np.ndarray, complete_size: int | None = None) -> np.ndarray:
  """[R1, R5, R10, R50, MedR, MeanR, geometric mean of R1/R5/R10] (float64) of 0-based ranks."""
  ranks = np.asarray(ranks, np.float64)
  num = int(complete_size) if complete_size else len(ranks)
  if num < len(ranks):
    raise ValueError(f"complete_size={complete_size} is smaller than the {len(ranks)} queries "
                     "present")
  r = [100.0 * np.sum(ranks < k) / num for k in KS]
  medr, meanr = np.median(ranks) + 1, np.mean(ranks) + 1
  with np.errstate(divide="ignore"):   # R@k = 0 -> log = -inf -> geometric mean 0
    geo = float(np.exp(np.mean(np.log(r[:3]))))   # scipy gmean's order of operations
  return np.asarray(r + [medr, meanr, geo], np.float64)


def diagonal_metrics(sim: np.ndarray, complete_size: int | None = None) -> np.ndarray:
  """`metric_vector` of a square matrix whose diagonal is the ground truth (the reference's
  retrieval_metrics(sims, complete_dataset_size))."""
  s = np.asarray(sim)
  return metric_vector(averaged_ranks(s, np.arange(s.shape[0])), complete_size)


def averaged_ties_metrics(sim: np.ndarray, gt: Sequence[int],
                          complete_size: int | None = None) -> dict[str, float]:
  """Protocol 'averaged_ties' (module docstring): 'r1', 'r5', 'r10', 'r50', 'medr', 'meanr',
  'geomean' of the queries = rows of `sim` [Nq, Nc], ground truth gt [Nq]."""
  v = metric_vector(averaged_ranks(sim, gt), complete_size)
  return dict(zip(("r1", "r5", "r10", "r50", "medr", "meanr", "geomean"), map(float, v)))


def average_by_id(tree: Any, ids: Sequence[int]) -> tuple[Any, np.ndarray]:
  """(every leaf [N, ...] averaged over the rows sharing an id -> [G, ...], the G sorted ids);
  rows with id -1 are dropped. Leaves are averaged in float64 and keep their dtype."""
  ids = np.asarray(ids).reshape(-1)
  uniq, inverse = np.unique(ids, return_inverse=True)
  keep = uniq != DROP_ID
  counts = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)

  def avg(x):
    x = np.asarray(x)
    if x.shape[:1] != ids.shape:
      raise ValueError(f"average_by_id: a leaf has {x.shape[0] if x.ndim else 0} rows, the ids "
                       f"{len(ids)}")
    sums = np.zeros((len(uniq),) + x.shape[1:], np.float64)
    np.add.at(sums, inverse, x.astype(np.float64))
    mean = sums / counts.reshape((-1,) + (1,) * (x.ndim - 1))
    return mean[keep].astype(x.dtype)
  return jax.tree.map(avg, tree), uniq[keep]


__all__ = ["DROP_ID", "KS", "average_by_id", "averaged_ranks", "averaged_ties_metrics",
           "diagonal_metrics", "metric_vector"]

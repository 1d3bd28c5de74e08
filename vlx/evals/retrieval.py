"""Text<->video retrieval: metrics as the ALPRO reference computes them, and the eval driver.

Metrics (ALPRO spec §6.1): scores optionally rounded to 4 decimals, each query row sorted in
descending order (stable: ties keep index order), rank = position of the ground truth;
R@k = 100 * fraction of queries with rank < k, MedR = median(rank + 1), MeanR = mean(rank + 1).
video->text uses the inverted caption->video map (a video's GT caption is its last caption).
"""
from __future__ import annotations

from types import ModuleType
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vlx import sharding as shd


def _ranks(scores: np.ndarray, gt: np.ndarray) -> np.ndarray:
  order = np.argsort(-scores, axis=1, kind="stable")
  return np.argmax(order == gt[:, None], axis=1)


def _summary(ranks: np.ndarray) -> dict[str, float]:
  return {"r1": 100.0 * float(np.mean(ranks < 1)),
          "r5": 100.0 * float(np.mean(ranks < 5)),
          "r10": 100.0 * float(np.mean(ranks < 10)),
          "medr": float(np.median(ranks + 1)),
          "meanr": float(np.mean(ranks + 1))}


def retrieval_metrics(sim: np.ndarray, gt_video_for_text: Sequence[int],
                      decimals: int | None = 4) -> dict[str, float]:
  """sim [Nt, Nv] (higher = better), gt_video_for_text [Nt] column indices.

  Returns text->video 'r1','r5','r10','medr','meanr' and the same under 'v2t/' for video->text."""
  sim = np.asarray(sim, np.float64)
  gt = np.asarray(gt_video_for_text, np.int64)
  if sim.ndim != 2 or gt.shape != (sim.shape[0],):
    raise ValueError(f"retrieval_metrics: sim must be [Nt, Nv] and gt [Nt]; got {sim.shape}, "
                     f"{gt.shape}")
  if gt.min(initial=0) < 0 or gt.max(initial=0) >= sim.shape[1]:
    raise ValueError("retrieval_metrics: gt_video_for_text has indices outside [0, Nv)")
  if decimals is not None:
    sim = np.round(np.asarray(sim, np.float32).astype(np.float64), decimals)
  out = _summary(_ranks(sim, gt))
  gt_text_for_video = {}
  for t, v in enumerate(gt):          # the last caption of a video is its GT (reference dict)
    gt_text_for_video[int(v)] = t
  videos = np.asarray(sorted(gt_text_for_video), np.int64)
  v2t = _summary(_ranks(sim.T[videos], np.asarray([gt_text_for_video[v] for v in videos])))
  out.update({f"v2t/{k}": v for k, v in v2t.items()})
  return out


def _gather(x: np.ndarray) -> np.ndarray:
  """Concatenate host-local rows from every process (no-op on one process)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _place(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh, rules) -> dict[str, jax.Array]:
  """Shard the rows over the batch axes when they divide; replicate otherwise."""
  n = next(iter(batch.values())).shape[0] * jax.process_count()
  ways = shd.batch_parallelism(mesh, rules)
  if n % ways == 0:
    return shd.put_global_batch(batch, shd.batch_sharding(mesh, rules))
  if jax.process_count() > 1:
    raise ValueError(f"eval batch of {n} rows does not divide over {ways} batch shards")
  return jax.device_put(batch, shd.replicated(mesh))


_JITTED: dict = {}


def _jitted(family: ModuleType, graphdef: nnx.GraphDef, mode: str):
  """(encode, score) jitted once per model structure, so periodic evals do not recompile."""
  key = (family.__name__, graphdef, mode)
  if key not in _JITTED:

    @jax.jit
    def encode(state, batch):
      m = nnx.merge(graphdef, state)
      return family.encode_videos(m, batch), family.encode_texts(m, batch)

    @jax.jit
    def score(state, texts, videos):
      return family.retrieval_scores(nnx.merge(graphdef, state), texts, videos, mode=mode)

    if len(_JITTED) >= 8:
      _JITTED.clear()
    _JITTED[key] = (encode, score)
  return _JITTED[key]


def run_retrieval_eval(model: nnx.Module, family: ModuleType, eval_cfg: ml_collections.ConfigDict,
                       config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       make_eval_batches=None) -> dict[str, float]:
  """Encodes the split, scores every (text, video) pair with the family, returns the metrics."""
  if make_eval_batches is None:
    from vlx.data.pipeline import make_eval_batches  # the real pipeline (lazy: TF import)
  rules = tuple(config.mesh.rules)
  graphdef, state = nnx.split(model)
  mode = eval_cfg.get("mode", "vtc") or "vtc"
  encode, score = _jitted(family, graphdef, mode)

  per_host = int(eval_cfg.batch_size)
  vids: list[dict] = []
  txts: list[dict] = []
  index, valid = [], []
  with jax.set_mesh(mesh), shd.use_rules(rules):
    for batch in make_eval_batches(eval_cfg, config, batch_size=per_host):
      index.append(_gather(np.asarray(batch.pop("video_index"))))
      valid.append(_gather(np.asarray(batch.pop("valid"), bool)))
      batch = {k: v for k, v in batch.items() if np.asarray(v).dtype != object}
      v, t = encode(state, _place(batch, mesh, rules))
      vids.append(jax.tree.map(_to_host, v))
      txts.append(jax.tree.map(_to_host, t))
  if not index:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}/{eval_cfg.get('split')!r}: no batches")
  index_all = np.concatenate(index)
  keep = np.concatenate(valid)
  cat = lambda parts: jax.tree.map(lambda *xs: np.concatenate(xs)[keep], *parts)
  texts, videos = cat(txts), cat(vids)
  index_all = index_all[keep]
  # One column per distinct video (several captions of a clip share it), in video_index order.
  uniq, first = np.unique(index_all, return_index=True)
  videos = jax.tree.map(lambda x: x[first], videos)
  gt = np.searchsorted(uniq, index_all)

  with jax.set_mesh(mesh), shd.use_rules(rules):
    sim = np.asarray(jax.device_get(score(state, jax.tree.map(jnp.asarray, texts),
                                          jax.tree.map(jnp.asarray, videos))))
  metrics = retrieval_metrics(sim, gt, decimals=4)
  metrics["num_videos"] = int(len(uniq))
  metrics["num_texts"] = int(len(gt))
  return metrics


def _to_host(x: jax.Array) -> np.ndarray:
  """A global (possibly sharded) jit output -> full numpy copy on every host."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))

"""Text<->video retrieval: metrics as the references compute them, and the eval driver.

`evals.<name>.protocol` picks the metric code: 'alpro' (default, `retrieval_metrics`) or
'allinone' (`tie_aware_metrics`). ALPRO's (spec §6.1): scores optionally rounded to 4 decimals,
each query row sorted in descending order (stable: ties keep index order), rank = position of
the ground truth;
R@k = 100 * fraction of queries with rank < k, MedR = median(rank + 1), MeanR = mean(rank + 1).
video->text uses the inverted caption->video map (a video's GT caption is its last caption).
"""
from __future__ import annotations

import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vlx.registry import Family
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


def _checked(sim, gt_video_for_text, who: str) -> tuple[np.ndarray, np.ndarray]:
  """(sim float64 [Nt, Nv], gt int64 [Nt]) or a ValueError naming `who` and the shapes."""
  sim = np.asarray(sim, np.float64)
  gt = np.asarray(gt_video_for_text, np.int64)
  if sim.ndim != 2 or gt.shape != (sim.shape[0],):
    raise ValueError(f"{who}: sim must be [Nt, Nv] and gt [Nt]; got {sim.shape}, {gt.shape}")
  if gt.min(initial=0) < 0 or gt.max(initial=0) >= sim.shape[1]:
    raise ValueError(f"{who}: gt_video_for_text has indices outside [0, Nv)")
  return sim, gt


def retrieval_metrics(sim: np.ndarray, gt_video_for_text: Sequence[int],
                      decimals: int | None = 4) -> dict[str, float]:
  """sim [Nt, Nv] (higher = better), gt_video_for_text [Nt] column indices.

  Returns text->video 'r1','r5','r10','medr','meanr' and the same under 'v2t/' for video->text."""
  sim, gt = _checked(sim, gt_video_for_text, "retrieval_metrics")
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


def tie_aware_metrics(sim: np.ndarray, gt_video_for_text: Sequence[int]) -> dict[str, float]:
  """The All-in-one protocol (its spec §5, `t2v_metrics` / `v2t_metrics`), same keys as
  `retrieval_metrics`: no rounding; text->video rank = number of videos scored strictly above
  the ground truth (ties count in the query's favour); video->text rank of each caption = above +
  (tied - 1) / 2 (the mean of the tied positions), the best over the video's captions."""
  sim, gt = _checked(sim, gt_video_for_text, "tie_aware_metrics")
  own = sim[np.arange(len(gt)), gt]                               # [Nt] each text's GT score
  out = _summary(np.sum(sim > own[:, None], axis=1).astype(np.float64))
  col = sim.T                                                     # [Nv, Nt]
  per_text = (np.sum(col[gt] > own[:, None], axis=1)
              + (np.sum(col[gt] == own[:, None], axis=1) - 1) / 2.0)
  videos = np.unique(gt)
  best = np.asarray([per_text[gt == v].min() for v in videos])
  out.update({f"v2t/{k}": v for k, v in _summary(best).items()})
  return out


METRIC_PROTOCOLS = {"alpro": lambda sim, gt: retrieval_metrics(sim, gt, decimals=4),
                    "allinone": tie_aware_metrics}


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


MODES = ("vtc", "vtm", "rerank")
_JITTED: dict = {}


def _jitted(family: Family, graphdef: nnx.GraphDef, mode: str):
  """(encode, score, pairs) jitted once per model structure, so periodic evals do not recompile.

  score: family.retrieval_scores ('vtc' for rerank's first stage); pairs: family.pair_scores."""
  key = (family.name, graphdef, mode)
  if key not in _JITTED:

    @jax.jit
    def encode(state, batch):
      m = nnx.merge(graphdef, state)
      return family.encode_videos(m, batch), family.encode_texts(m, batch)

    score_mode = "vtc" if mode == "rerank" else mode

    @jax.jit
    def score(state, texts, videos):
      return family.retrieval_scores(nnx.merge(graphdef, state), texts, videos, mode=score_mode)

    @jax.jit
    def pairs(state, texts, videos):
      return family.pair_scores(nnx.merge(graphdef, state), texts, videos)

    if len(_JITTED) >= 8:
      _JITTED.clear()
    _JITTED[key] = (encode, score, pairs)
  return _JITTED[key]


def _rows(tree: dict, idx: np.ndarray) -> dict:
  return jax.tree.map(lambda x: jnp.asarray(x[idx]), tree)


def _chunks(n: int, size: int):
  """Index arrays of `size` (the last padded with its first index: one compiled shape)."""
  for start in range(0, n, size):
    idx = np.arange(start, min(start + size, n))
    yield idx, np.concatenate([idx, np.full(size - len(idx), idx[0])])


def score_matrix(family: Family, model: nnx.Module, texts: dict, videos: dict,
                 eval_cfg: ml_collections.ConfigDict) -> np.ndarray:
  """[Nt, Nv] ranking scores of host-side text / video features (call under the eval mesh).

  'vtc': feature similarity / temp, one call. 'vtm' (exact, the reference): every pair through
  the fusion encoder + itm head, P(match); memory-bounded by looping over chunks of
  `video_chunk` videos x `text_chunk` texts. 'rerank' (fast): vtc, then each text's top `k`
  videos (default 16) re-scored by P(match), `pair_chunk` pairs per call; the other videos keep
  their vtc order below every re-scored one (vtc - row max - 2 < 0 <= P)."""
  mode = eval_cfg.get("mode", "vtc") or "vtc"
  if mode not in MODES:
    raise ValueError(f"eval mode {mode!r}: expected one of {MODES}")
  if mode == "rerank" and not family.supports("pair_scores"):
    raise ValueError(f"eval mode 'rerank' needs pair_scores, which family {family.name!r} does not provide")
  graphdef, state = nnx.split(model)
  _, score, pairs = _jitted(family, graphdef, mode)
  nt = len(next(iter(texts.values())))
  nv = len(next(iter(videos.values())))
  if mode in ("vtc", "rerank"):
    sim = np.asarray(jax.device_get(score(state, jax.tree.map(jnp.asarray, texts),
                                          jax.tree.map(jnp.asarray, videos))), np.float32)
    if mode == "vtc":
      return sim
    k = min(int(eval_cfg.get("k", 16) or 16), nv)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]                  # [Nt, k]
    t_idx, v_idx = np.repeat(np.arange(nt), k), top.reshape(-1)
    probs = np.zeros(len(t_idx), np.float32)
    for real, idx in _chunks(len(t_idx), int(eval_cfg.get("pair_chunk", 64) or 64)):
      p = pairs(state, _rows(texts, t_idx[idx]), _rows(videos, v_idx[idx]))
      probs[real] = np.asarray(jax.device_get(p))[:len(real)]
    out = sim - sim.max(axis=1, keepdims=True) - 2.0
    out[t_idx, v_idx] = probs
    return out
  out = np.zeros((nt, nv), np.float32)
  cv = min(int(eval_cfg.get("video_chunk", 16) or 16), nv)
  ct = min(int(eval_cfg.get("text_chunk", 64) or 64), nt)
  for v_real, v_idx in _chunks(nv, cv):
    v = _rows(videos, v_idx)
    for t_real, t_idx in _chunks(nt, ct):
      block = np.asarray(jax.device_get(score(state, _rows(texts, t_idx), v)))
      out[t_real[0]:t_real[-1] + 1, v_real[0]:v_real[-1] + 1] = block[:len(t_real), :len(v_real)]
  return out


def encode_split(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                 config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 make_eval_batches=None) -> tuple[dict, dict, np.ndarray, np.ndarray]:
  """Encodes every clip and caption of the eval block's split (family.encode_videos / encode_texts,
  jitted once per model structure): (texts, videos, video_index, gt) as host numpy features, one
  `videos` row per distinct clip in video_index order (its position in the split), `texts` one row
  per caption, gt[i] = the `videos` row of text i. Shared by the eval and `vlx.search`."""
  if make_eval_batches is None:
    from vlx.data.pipeline import make_eval_batches  # the real pipeline (lazy: TF import)
  rules = tuple(config.mesh.rules)
  graphdef, state = nnx.split(model)
  mode = eval_cfg.get("mode", "vtc") or "vtc"
  if mode not in MODES:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: mode {mode!r}, expected one of {MODES}")
  encode = _jitted(family, graphdef, mode)[0]

  per_host = int(eval_cfg.batch_size)
  view = int(eval_cfg.get("view", 0) or 0)
  vids: list[dict] = []
  txts: list[dict] = []
  index, valid = [], []
  with jax.set_mesh(mesh), shd.use_rules(rules):
    for batch in make_eval_batches(eval_cfg, config, batch_size=per_host):
      # video_index stays in the batch and view_index (eval_cfg.view, one per row) is added
      # unless present: a family may key per-clip randomness on them (All-in-one's eval patch
      # order, tasks.batch_patch_perm).
      index.append(_gather(np.asarray(batch["video_index"])))
      valid.append(_gather(np.asarray(batch.pop("valid"), bool)))
      batch = {k: v for k, v in batch.items() if np.asarray(v).dtype != object}
      if "view_index" not in batch:
        batch["view_index"] = np.full(np.asarray(batch["video_index"]).shape, view, np.int32)
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
  return texts, videos, uniq, gt


RANDOM_SAMPLINGS = ("rand", "segment_rand")


def view_configs(eval_cfg: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """eval_cfg.num_views independent random samplings of every clip (field `view` = 0, 1, ...;
  the pipeline folds it into the frame seed). All-in-one averages the similarity matrix over 3
  such views of the val set (spec §5, `retrieval_views`); 1 view = eval_cfg itself."""
  views = int(eval_cfg.get("num_views", 1) or 1)
  if views < 1:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: num_views={views} must be >= 1")
  if views == 1:
    return [eval_cfg]
  if eval_cfg.get("sampling") not in RANDOM_SAMPLINGS:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: num_views={views} averages random "
                     f"samplings, but sampling={eval_cfg.get('sampling')!r} gives the same frames "
                     f"every view; use one of {RANDOM_SAMPLINGS} or num_views=1")
  out = []
  for v in range(views):
    c = ml_collections.ConfigDict(eval_cfg.to_dict())
    c.view = v
    out.append(c)
  return out


def run_retrieval_eval(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                       config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       make_eval_batches=None) -> dict[str, float]:
  """Encodes the split (`encode_split`), scores (text, video) pairs (`score_matrix`), averaged
  over eval_cfg.num_views random views (`view_configs`); returns the metrics plus 'seconds' (the
  whole eval) and 'score_seconds' (the scoring alone)."""
  t0 = time.perf_counter()
  rules = tuple(config.mesh.rules)
  sims, score_seconds = [], 0.0
  for view_cfg in view_configs(eval_cfg):
    texts, videos, uniq, gt = encode_split(model, family, view_cfg, config, mesh,
                                           make_eval_batches)
    t1 = time.perf_counter()
    with jax.set_mesh(mesh), shd.use_rules(rules):
      sims.append(score_matrix(family, model, texts, videos, eval_cfg))
    score_seconds += time.perf_counter() - t1
  sim = sims[0] if len(sims) == 1 else np.mean(sims, axis=0)
  t2 = time.perf_counter()
  protocol = eval_cfg.get("protocol", "alpro") or "alpro"
  if protocol not in METRIC_PROTOCOLS:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: protocol={protocol!r}, expected one of "
                     f"{sorted(METRIC_PROTOCOLS)}")
  metrics = METRIC_PROTOCOLS[protocol](sim, gt)
  metrics["num_videos"] = int(len(uniq))
  metrics["num_texts"] = int(len(gt))
  metrics["seconds"] = round(t2 - t0, 3)
  metrics["score_seconds"] = round(score_seconds, 3)
  return metrics


def _to_host(x: jax.Array) -> np.ndarray:
  """A global (possibly sharded) jit output -> full numpy copy on every host."""
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))

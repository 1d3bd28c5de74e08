"""Text<->video retrieval: metrics as the references compute them, and the eval driver.

`evals.<name>.mode` is one of the family's `retrieval_modes` (`check_mode`); the scores come from
`family.retrieval_scores` (`score_matrix`). `evals.<name>.protocol` picks the metric code; each
family's configs choose theirs:
  'rounded_stable' (default, `retrieval_metrics`; ALPRO spec §6.1): scores rounded to 4 decimals,
    each query row sorted in descending order with a stable sort (ties keep index order), rank =
    position of the ground truth; video->text: a video's ground truth is its last caption.
  'tie_aware' (`tie_aware_metrics`; All-in-one spec §5): no rounding; text->video ties count in
    the query's favour, video->text tied positions are averaged, best over the video's captions.
  'stable': as 'rounded_stable' without the rounding (VIOLET spec §6).
  'averaged_ties' (`vlx.evals.ranking`; EAO spec §6): queries = the rows of the mode's score
    matrix, ties averaged, R@k over `complete_size` queries (`complete_size`), plus 'r50' and
    'geomean'; no v2t/ keys (a family's modes name each direction).
R@k = 100 * fraction of queries with rank < k, MedR = median(rank + 1), MeanR = mean(rank + 1).

Eval-block options read here (besides mode / protocol / num_views):
  encode_options: {name: value} passed as static keyword arguments to the family's encode_videos
    and encode_texts (what they accept is the family's; e.g. a long-video strategy).
  average_ids: a per-row id whose rows are averaged (`ranking.average_by_id`, -1 dropped) on both
    sides before scoring: an index column of the batches (e.g. 'video_index') or an int output
    of the family's encoders of that name; texts and videos must then cover the same ids.
  complete_size (protocol 'averaged_ties'): the number of queries R@k divides by; absent: the
    dataset's metadata 'complete_size' (an int, or {split: int}) when the split is read whole,
    else the queries present; 0: the queries present.
"""
from __future__ import annotations

import inspect
import time
from typing import Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from vlx import sharding as shd
from vlx.evals import common, ranking
from vlx.registry import Family


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
  """Protocol 'tie_aware' (All-in-one spec §5, `t2v_metrics` / `v2t_metrics`), same keys as
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


METRIC_PROTOCOLS = {"rounded_stable": lambda sim, gt: retrieval_metrics(sim, gt, decimals=4),
                    "tie_aware": tie_aware_metrics,
                    # as rounded_stable without the rounding (VIOLET spec §6 eval_retrieval.py)
                    "stable": lambda sim, gt: retrieval_metrics(sim, gt, decimals=None),
                    "averaged_ties": ranking.averaged_ties_metrics}
DEFAULT_PROTOCOL = "rounded_stable"
COMPLETE_SIZE_PROTOCOLS = ("averaged_ties",)   # protocols that take complete_size
# Modes scored pair by pair through a fusion encoder: [Nt, Nv] computed in memory-bounded blocks.
# Any other mode of the family gives the whole matrix in one call. 'rerank' is two-stage
# (`score_matrix`): a first-stage mode of the family, then `pair_scores` on each text's top k.
BLOCKWISE_MODES = ("vtm",)
RERANK = "rerank"


def check_mode(family: Family, eval_cfg: ml_collections.ConfigDict) -> str:
  """eval_cfg.mode (default 'vtc'), checked against the family's retrieval_modes; 'rerank' also
  needs `pair_scores` and a one-stage `first_stage` mode (default 'vtc')."""
  mode = eval_cfg.get("mode", "vtc") or "vtc"
  modes = tuple(family.retrieval_modes)
  if mode not in modes:
    raise ValueError(f"evals.<name>.mode={mode!r}: family {family.name!r} scores {modes}")
  if mode == RERANK and not family.supports("pair_scores"):
    raise ValueError(f"evals.<name>.mode='rerank' re-scores pairs with pair_scores, which family "
                     f"{family.name!r} does not provide")
  if mode == RERANK:
    first = first_stage(eval_cfg)
    if first not in modes or first == RERANK:
      raise ValueError(f"evals.<name>.first_stage={first!r} (of mode 'rerank'): expected one of "
                       f"{tuple(m for m in modes if m != RERANK)}")
  return mode


def check_options(family: Family, eval_cfg: ml_collections.ConfigDict) -> None:
  """The options of this module's docstring (ValueError naming evals.<name>.<field>):
  complete_size only with a protocol of COMPLETE_SIZE_PROTOCOLS, encode_options names the
  family's encoders take."""
  protocol = eval_cfg.get("protocol", DEFAULT_PROTOCOL) or DEFAULT_PROTOCOL
  if eval_cfg.get("complete_size", None) is not None and protocol not in COMPLETE_SIZE_PROTOCOLS:
    raise ValueError(f"evals.<name>.complete_size needs protocol {COMPLETE_SIZE_PROTOCOLS}, not "
                     f"{protocol!r}")
  encode_options(eval_cfg, family)


def first_stage(eval_cfg: ml_collections.ConfigDict) -> str:
  return eval_cfg.get("first_stage", "vtc") or "vtc"


def _rows(tree: dict, idx: np.ndarray, mesh: jax.sharding.Mesh) -> dict:
  return common.replicate(jax.tree.map(lambda x: x[idx], tree), mesh)


def _chunks(n: int, size: int):
  """Index arrays of `size` (the last padded with its first index: one compiled shape)."""
  for start in range(0, n, size):
    idx = np.arange(start, min(start + size, n))
    yield idx, np.concatenate([idx, np.full(size - len(idx), idx[0])])


def score_matrix(family: Family, model: nnx.Module, texts: dict, videos: dict,
                 eval_cfg: ml_collections.ConfigDict) -> np.ndarray:
  """[Nt, Nv] ranking scores of host-side text / video features (equal on every host; call under
  the eval mesh when there are several processes), by `family.retrieval_scores(...,
  mode=eval_cfg.mode)`.

  A mode of BLOCKWISE_MODES (e.g. 'vtm': every pair through the fusion encoder, the exact
  reference protocol) is computed in blocks of `video_chunk` videos x `text_chunk` texts; any
  other mode in one call. 'rerank' (fast, two-stage): the `first_stage` mode (default 'vtc'), then
  each text's top `k` videos (default 16) re-scored by `family.pair_scores`, `pair_chunk` pairs
  per call; the other videos keep their first-stage order below every re-scored one
  (score - row max - 2 < 0 <= P, pair_scores being probabilities)."""
  mode = check_mode(family, eval_cfg)
  mesh = jax.sharding.get_mesh()       # the eval mesh (`with jax.set_mesh(mesh)`), if any
  graphdef, state = nnx.split(model)
  jit = lambda name, **kw: common.jitted(family, graphdef, name, **kw)
  nt = len(next(iter(texts.values())))
  nv = len(next(iter(videos.values())))
  if mode not in BLOCKWISE_MODES:
    score = jit("retrieval_scores", mode=first_stage(eval_cfg) if mode == RERANK else mode)
    sim = np.asarray(common.to_host(score(state, common.replicate(texts, mesh),
                                          common.replicate(videos, mesh))), np.float32)
    if mode != RERANK:
      return sim
    pairs = jit("pair_scores")
    k = min(int(eval_cfg.get("k", 16) or 16), nv)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]                  # [Nt, k]
    t_idx, v_idx = np.repeat(np.arange(nt), k), top.reshape(-1)
    probs = np.zeros(len(t_idx), np.float32)
    for real, idx in _chunks(len(t_idx), int(eval_cfg.get("pair_chunk", 64) or 64)):
      p = pairs(state, _rows(texts, t_idx[idx], mesh), _rows(videos, v_idx[idx], mesh))
      probs[real] = common.to_host(p)[:len(real)]
    out = sim - sim.max(axis=1, keepdims=True) - 2.0
    out[t_idx, v_idx] = probs
    return out
  score = jit("retrieval_scores", mode=mode)
  out = np.zeros((nt, nv), np.float32)
  cv = min(int(eval_cfg.get("video_chunk", 16) or 16), nv)
  ct = min(int(eval_cfg.get("text_chunk", 64) or 64), nt)
  for v_real, v_idx in _chunks(nv, cv):
    v = _rows(videos, v_idx, mesh)
    for t_real, t_idx in _chunks(nt, ct):
      block = common.to_host(score(state, _rows(texts, t_idx, mesh), v))
      out[t_real[0]:t_real[-1] + 1, v_real[0]:v_real[-1] + 1] = block[:len(t_real), :len(v_real)]
  return out


def encode_split(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                 config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 make_eval_batches=None) -> tuple[dict, dict, np.ndarray, np.ndarray]:
  """Encodes every clip and caption of the eval block's split (family.encode_videos / encode_texts
  through `common.collect`, any number of hosts): (texts, videos, video_index, gt) as host numpy
  features, one `videos` row per distinct clip in video_index order (its position in the split),
  `texts` one row per caption, gt[i] = the `videos` row of text i. Shared by the eval and
  `vlx.search`."""
  check_mode(family, eval_cfg)
  view = int(eval_cfg.get("view", 0) or 0)

  def with_view(batch: dict) -> dict:
    # video_index stays in the batch and view_index (eval_cfg.view, one per row) is added unless
    # present: a family may key per-clip randomness on them (e.g. an eval patch order).
    if "view_index" not in batch:
      batch = dict(batch, view_index=np.full(np.shape(batch["video_index"]), view, np.int32))
    return batch

  (videos, texts), cols = common.collect(model, family, ("encode_videos", "encode_texts"),
                                         eval_cfg, config, mesh, make_eval_batches, with_view,
                                         static=encode_options(eval_cfg, family))
  index_all = cols["video_index"]
  # One column per distinct video (several captions of a clip share it), in video_index order.
  uniq, first = np.unique(index_all, return_index=True)
  videos = jax.tree.map(lambda x: x[first], videos)
  gt = np.searchsorted(uniq, index_all)
  key = eval_cfg.get("average_ids", "") or ""
  if key:
    return _averaged(key, texts, videos, cols, first, eval_cfg)
  return texts, videos, uniq, gt


def _hashable(v):
  if isinstance(v, (list, tuple)):
    return tuple(_hashable(x) for x in v)
  if isinstance(v, dict):
    return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
  return v


def _takes(fn, name: str) -> bool:
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return True
  return any(p.kind == p.VAR_KEYWORD or (p.name == name and p.kind != p.POSITIONAL_ONLY)
             for p in params)


def encode_options(eval_cfg: ml_collections.ConfigDict, family: Family | None = None) -> dict:
  """evals.<name>.encode_options as static (hashable) keyword arguments of the encoders; with
  `family`, each name is checked against its encode_videos / encode_texts signatures."""
  opts = eval_cfg.get("encode_options", None) or {}
  if hasattr(opts, "to_dict"):
    opts = opts.to_dict()
  if not isinstance(opts, dict):
    raise ValueError(f"evals.<name>.encode_options={opts!r}: expected a dict of keyword "
                     "arguments")
  for fn_name in ("encode_videos", "encode_texts"):
    fn = getattr(family, fn_name, None) if family is not None else None
    for k in opts if fn is not None else ():
      if not _takes(fn, str(k)):
        raise ValueError(f"evals.<name>.encode_options.{k}: family {family.name!r}'s {fn_name} "
                         "takes no such option")
  return {str(k): _hashable(v) for k, v in opts.items()}


def _averaged(key: str, texts: dict, videos: dict, cols: dict, first: np.ndarray,
              eval_cfg: ml_collections.ConfigDict) -> tuple[dict, dict, np.ndarray, np.ndarray]:
  """encode_split's result with rows averaged over `key` ids (option average_ids): one text and
  one video row per id (sorted), gt = the diagonal; the returned index = the ids."""
  where = f"eval {eval_cfg.get('builder')!r}: average_ids={key!r}"
  if key in cols:
    t_ids, v_ids = cols[key], cols[key][first]
  elif key in texts and key in videos:
    t_ids, v_ids = texts.pop(key), videos.pop(key)
  else:
    raise ValueError(f"{where} is neither a batch index column ({sorted(cols)}) nor an output of "
                     "both encoders")
  texts, t_uniq = ranking.average_by_id(texts, np.asarray(t_ids).astype(np.int64))
  videos, v_uniq = ranking.average_by_id(videos, np.asarray(v_ids).astype(np.int64))
  if not np.array_equal(t_uniq, v_uniq):
    raise ValueError(f"{where}: texts and videos cover different ids ({len(t_uniq)} vs "
                     f"{len(v_uniq)})")
  return texts, videos, v_uniq, np.arange(len(v_uniq))


def complete_size(eval_cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                  from_dataset: bool = True) -> int | None:
  """evals.<name>.complete_size (see the module docstring); None = the queries present.
  `from_dataset`: look at the dataset's metadata when the field is absent."""
  value = eval_cfg.get("complete_size", None)
  if value is not None:
    if int(value) < 0:
      raise ValueError(f"evals.<name>.complete_size={value}: expected >= 0")
    return int(value) or None
  split = str(eval_cfg.get("split", ""))
  if not from_dataset or not split or any(c in split for c in "[]+"):
    return None
  from vlx.data.pipeline import get_builder   # lazy: TF import
  builder = get_builder(eval_cfg.builder, eval_cfg.get("builder_config", ""),
                        config.data.data_dir, config.data.get("manual_dir", ""))
  meta = getattr(builder.info, "metadata", None) or {}
  size = meta.get("complete_size") if hasattr(meta, "get") else None
  if isinstance(size, dict):
    size = size.get(split)
  return int(size) if size else None


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
  check_options(family, eval_cfg)
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
  protocol = eval_cfg.get("protocol", DEFAULT_PROTOCOL) or DEFAULT_PROTOCOL
  if protocol not in METRIC_PROTOCOLS:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}: protocol={protocol!r}, expected one of "
                     f"{sorted(METRIC_PROTOCOLS)}")
  if protocol in COMPLETE_SIZE_PROTOCOLS:
    metrics = METRIC_PROTOCOLS[protocol](
        sim, gt, complete_size(eval_cfg, config, from_dataset=make_eval_batches is None))
  else:
    metrics = METRIC_PROTOCOLS[protocol](sim, gt)
  metrics["num_videos"] = int(len(uniq))
  metrics["num_texts"] = int(len(gt))
  metrics["seconds"] = round(t2 - t0, 3)
  metrics["score_seconds"] = round(score_seconds, 3)
  return metrics

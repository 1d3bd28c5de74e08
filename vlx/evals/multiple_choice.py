"""Multiple-choice accuracy (All-in-one spec §5: MSRVTT-MC, LSMDC-MC, TGIF-Action/Transition).

Every example has K option texts; the family scores them (`family.mc_scores(model, batch)` ->
[B, K]) and the prediction is the argmax. Accuracy (percent, 2 decimals) over every example of
the split; with `evals.<name>.qtypes` and a `qtype` batch key also per type. `collect_outputs`
is the split loop shared with the classification eval.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from vlx.registry import Family
from vlx import sharding as shd
from vlx.evals.retrieval import _gather, _place, _to_host

# Batch keys collected on the host (labels, indices); labels / qtype / valid are never passed to
# the model, the row indices are (a family may key per-row randomness on them, e.g.
# All-in-one's eval patch order; -1 on padding rows).
HOST_KEYS = ("label", "qtype", "valid", "video_index", "example_index", "view_index")
MODEL_INDEX_KEYS = ("video_index", "example_index", "view_index")


def _percent(x: float) -> float:
  return round(float(x) * 100, 2)


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
  out = {"acc": _percent(correct.mean()), "num_questions": int(len(pred))}
  if type_names:
    if qtypes is None or len(qtypes) != len(pred):
      raise ValueError("mc_metrics: type_names given but no question type per question")
    q = np.asarray(qtypes, np.int64).reshape(-1)
    for i, name in enumerate(type_names):
      sel = q == i
      out[f"{name}_acc"] = _percent(correct[sel].mean()) if sel.any() else 0.0
  return out


def collect_outputs(model: nnx.Module, fn: Callable, eval_cfg: ml_collections.ConfigDict,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                    make_eval_batches=None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Runs jitted `fn(model, batch)` over the split; returns (outputs of the valid rows, their
  HOST_KEYS columns). Padding rows (valid=False) are dropped."""
  if make_eval_batches is None:
    from vlx.data.pipeline import make_eval_batches  # the real pipeline (lazy: TF import)
  rules = tuple(config.mesh.rules)
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda state, batch: fn(nnx.merge(graphdef, state), batch))
  outs: list[np.ndarray] = []
  host: dict[str, list[np.ndarray]] = {}
  with jax.set_mesh(mesh), shd.use_rules(rules):
    for batch in make_eval_batches(eval_cfg, config, batch_size=int(eval_cfg.batch_size)):
      for k in HOST_KEYS:
        if k in batch:
          value = batch[k] if k in MODEL_INDEX_KEYS else batch.pop(k)
          host.setdefault(k, []).append(_gather(np.asarray(value)))
      batch = {k: v for k, v in batch.items() if np.asarray(v).dtype != object}
      outs.append(_to_host(run(state, _place(batch, mesh, rules))))
  if not outs:
    raise ValueError(f"eval {eval_cfg.get('builder')!r}/{eval_cfg.get('split')!r}: no batches")
  cols = {k: np.concatenate(v) for k, v in host.items()}
  keep = cols.pop("valid", None)
  keep = np.ones(sum(len(o) for o in outs), bool) if keep is None else keep.astype(bool)
  return np.concatenate(outs)[keep], {k: v[keep] for k, v in cols.items()}


def labelled_outputs(model: nnx.Module, family: Family, fn_name: str, eval_type: str,
                     eval_cfg: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     mesh: jax.sharding.Mesh, make_eval_batches=None
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """`collect_outputs` of `family.<fn_name>` for an eval type whose batches must carry 'label'
  (multiple choice, classification); clear errors when the family or the labels are missing."""
  if not family.supports(fn_name):
    raise ValueError(f"eval type {eval_type!r} needs the family to provide {fn_name}; {family.name!r} does not")
  out, cols = collect_outputs(model, getattr(family, fn_name), eval_cfg, config, mesh,
                              make_eval_batches)
  if "label" not in cols:
    raise ValueError(f"{eval_type} eval batches have no 'label'")
  return out, cols


def run_mc_eval(model: nnx.Module, family: Family, eval_cfg: ml_collections.ConfigDict,
                config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                make_eval_batches=None) -> dict[str, float]:
  """Scores every example's options with `family.mc_scores`; returns mc_metrics + 'seconds'."""
  t0 = time.perf_counter()
  scores, cols = labelled_outputs(model, family, "mc_scores", "multiple_choice", eval_cfg, config,
                                  mesh, make_eval_batches)
  labels = cols["label"]
  if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
    raise ValueError(f"multiple-choice label outside 0..{scores.shape[1] - 1}")
  names = tuple(eval_cfg.get("qtypes", ()) or ())
  metrics = mc_metrics(np.argmax(scores, axis=1), labels, cols.get("qtype"),
                       names if "qtype" in cols else ())
  ids = cols.get("example_index")
  if ids is not None and len(np.unique(ids)) != len(ids):
    raise ValueError("multiple-choice eval batches repeat an example_index: the split was read "
                     "twice")
  metrics["num_choices"] = int(scores.shape[1])
  metrics["seconds"] = round(time.perf_counter() - t0, 3)
  return metrics

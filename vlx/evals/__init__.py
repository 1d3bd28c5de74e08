"""Evaluations by `config.evals.<name>.type`: each is fn(model, family, eval_cfg, config, mesh)."""
from __future__ import annotations

from typing import Callable

import ml_collections

from vlx.evals import retrieval
from vlx.evals.classification import classification_metrics, run_classification_eval
from vlx.evals.multiple_choice import mc_metrics, run_mc_eval
from vlx.evals.qa import PROTOCOLS as QA_PROTOCOLS
from vlx.evals.qa import qa_metrics, run_qa_eval
from vlx.evals.retrieval import retrieval_metrics, run_retrieval_eval
from vlx.registry import Family

EVALUATORS: dict[str, Callable[..., dict[str, float]]] = {
    "retrieval": run_retrieval_eval, "qa": run_qa_eval, "multiple_choice": run_mc_eval,
    "classification": run_classification_eval}
# eval type -> the `protocol` values it accepts, the default first.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "retrieval": (retrieval.DEFAULT_PROTOCOL,) + tuple(
        p for p in retrieval.METRIC_PROTOCOLS if p != retrieval.DEFAULT_PROTOCOL),
    "qa": QA_PROTOCOLS}


def check_block(name: str, ev: ml_collections.ConfigDict, family: Family) -> None:
  """The eval-protocol fields of `config.evals.<name>` (ValueError, one line naming the field):
  `protocol` is one of its type's PROTOCOLS; a retrieval `mode` is one the family scores."""
  kind = ev.get("type")
  protocols = PROTOCOLS.get(kind)
  if protocols is not None and (ev.get("protocol") or protocols[0]) not in protocols:
    raise ValueError(f"config.evals.{name}.protocol={ev.get('protocol')!r}: expected one of "
                     f"{protocols} for type {kind!r}")
  if kind == "retrieval":
    try:
      retrieval.check_mode(family, ev)
      retrieval.check_options(family, ev)
    except ValueError as e:
      raise ValueError(str(e).replace("evals.<name>.", f"config.evals.{name}.")) from None


__all__ = ["EVALUATORS", "PROTOCOLS", "check_block", "classification_metrics", "mc_metrics",
           "qa_metrics", "retrieval_metrics", "run_classification_eval", "run_mc_eval",
           "run_qa_eval", "run_retrieval_eval"]

"""Evaluations by `config.evals.<name>.type`: each is fn(model, family, eval_cfg, config, mesh)."""
from __future__ import annotations

from typing import Callable

from vlx.evals.classification import classification_metrics, run_classification_eval
from vlx.evals.multiple_choice import mc_metrics, run_mc_eval
from vlx.evals.qa import qa_metrics, run_qa_eval
from vlx.evals.retrieval import retrieval_metrics, run_retrieval_eval

EVALUATORS: dict[str, Callable[..., dict[str, float]]] = {
    "retrieval": run_retrieval_eval, "qa": run_qa_eval, "multiple_choice": run_mc_eval,
    "classification": run_classification_eval}

__all__ = ["EVALUATORS", "classification_metrics", "mc_metrics", "qa_metrics",
           "retrieval_metrics", "run_classification_eval", "run_mc_eval", "run_qa_eval",
           "run_retrieval_eval"]

"""ALPRO family: build, loss_fn, retrieval and QA functions (README "family contract")."""
from vlx.models.alpro.model import AlproModel, PromptFeatures, build
from vlx.models.alpro.objectives import (OBJECTIVES, encode_texts, encode_videos, loss_fn,
                                         pair_scores, qa_logits, retrieval_scores)
from vlx.models.alpro.pem_setup import prepare_fresh_state, validate_config

__all__ = ["AlproModel", "PromptFeatures", "build", "loss_fn", "encode_videos", "encode_texts",
           "retrieval_scores", "pair_scores", "qa_logits", "OBJECTIVES",
           "prepare_fresh_state", "validate_config"]

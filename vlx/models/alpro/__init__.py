"""ALPRO family: build, loss_fn, retrieval and QA functions (README "family contract")."""
from vlx.models.alpro.model import AlproModel, PromptFeatures, build
from vlx.models.alpro.objectives import (OBJECTIVES, encode_texts, encode_videos, loss_fn,
                                         qa_logits, retrieval_scores)

__all__ = ["AlproModel", "PromptFeatures", "build", "loss_fn", "encode_videos", "encode_texts",
           "retrieval_scores", "qa_logits", "OBJECTIVES"]

"""ALPRO family: build, loss_fn and retrieval functions (README "family contract")."""
from vlx.models.alpro.model import AlproModel, PromptFeatures, build
from vlx.models.alpro.objectives import (OBJECTIVES, encode_texts, encode_videos, loss_fn,
                                         retrieval_scores)

__all__ = ["AlproModel", "PromptFeatures", "build", "loss_fn", "encode_videos", "encode_texts",
           "retrieval_scores", "OBJECTIVES"]

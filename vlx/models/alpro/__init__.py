"""ALPRO family (README "Design": the family contract): model, objectives, retrieval and QA
scorers, converter, parity runner and the PEM hooks."""
from vlx import registry
from vlx.models.alpro.layout import BACKBONE_LAYOUT
from vlx.models.alpro.model import AlproModel, PromptFeatures, build
from vlx.models.alpro import objectives as _objectives
from vlx.models.alpro.objectives import (OBJECTIVES, encode_texts, encode_videos, pair_scores,
                                         qa_logits, retrieval_scores)
from vlx.models.alpro.validate import validate_config


# Parity tolerances beyond the generic ones (tiny/README.md): labels, masks and metrics exact.
PARITY_TOLERANCES = ((r"vtm_labels|pem_ignore_masks.*|ret_metric/.*", 0.0, 0.0),)


def fixture_outputs(fixture_dir):
  """The reference fixture's outputs computed by vlx (imported on use)."""
  from vlx.models.alpro.load_fixture import compute_fixture_outputs
  return compute_fixture_outputs(fixture_dir)


def prepare_fresh_state(*args, **kwargs):
  """vlx.models.alpro.pem_setup.prepare_fresh_state, imported on first use (its prompt
  tokenization brings TensorFlow)."""
  from vlx.models.alpro import pem_setup  # pylint: disable=import-outside-toplevel
  return pem_setup.prepare_fresh_state(*args, **kwargs)


def _data_hooks(config):
  """vlx.models.alpro.data.data_hooks, imported on first use: the data module brings TensorFlow
  (~0.5 GB of resident memory), which a process that only builds or steps the model never needs."""
  from vlx.models.alpro import data  # pylint: disable=import-outside-toplevel
  return data.data_hooks(config)


FAMILY = registry.Family(
    name="alpro", build=build, objectives=_objectives.objectives, objective_names=OBJECTIVES,
    frozen_params=(r"^prompter/",),
    validate_config=validate_config, prepare_fresh_state=prepare_fresh_state,
    encode_videos=encode_videos, encode_texts=encode_texts, retrieval_scores=retrieval_scores,
    retrieval_modes=("vtc", "vtm", "rerank"), pair_scores=pair_scores, qa_logits=qa_logits,
    converter="vlx.models.alpro.convert", fixture_outputs=fixture_outputs,
    parity_tolerances=PARITY_TOLERANCES, backbone_layout=BACKBONE_LAYOUT,
    resizable_params={r"(^|/)video/time_embed$": 1}, data_hooks=_data_hooks)

__all__ = ["FAMILY", "AlproModel", "PromptFeatures", "build", "encode_videos",
           "encode_texts", "retrieval_scores", "pair_scores", "qa_logits", "OBJECTIVES",
           "prepare_fresh_state", "validate_config"]

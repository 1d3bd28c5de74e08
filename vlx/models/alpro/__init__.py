"""ALPRO family (README "Design": the family contract): model, objectives, retrieval and QA
scorers, converter, parity runner and the PEM hooks."""
import functools

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


# Imported on first call: the data module and PEM's prompt tokenization bring TensorFlow
# (~0.5 GB resident), which a process that only builds or steps the model never needs.
_late = functools.partial(registry.on_first_call, __name__)  # (module, attr)
prepare_fresh_state = _late("pem_setup", "prepare_fresh_state")


FAMILY = registry.Family(
    name="alpro", build=build, objectives=_objectives.objectives, objective_names=OBJECTIVES,
    frozen_params=(r"^prompter/",),
    validate_config=validate_config, prepare_fresh_state=prepare_fresh_state,
    encode_videos=encode_videos, encode_texts=encode_texts, retrieval_scores=retrieval_scores,
    retrieval_modes=("vtc", "vtm", "rerank"), pair_scores=pair_scores, qa_logits=qa_logits,
    converter="vlx.models.alpro.convert", fixture_outputs=fixture_outputs,
    parity_tolerances=PARITY_TOLERANCES, backbone_layout=BACKBONE_LAYOUT,
    resizable_params={r"(^|/)video/time_embed$": 1}, data_hooks=_late("data", "data_hooks"))

__all__ = ["FAMILY", "AlproModel", "PromptFeatures", "build", "encode_videos",
           "encode_texts", "retrieval_scores", "pair_scores", "qa_logits", "OBJECTIVES",
           "prepare_fresh_state", "validate_config"]

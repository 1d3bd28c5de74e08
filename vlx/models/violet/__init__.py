"""VIOLET family (README "Design": the family contract): Video Swin + cross-modal BERT with VTM,
MLM and MVM on DALL-E dVAE tokens (shared/reference/violet/spec.md), downstream retrieval, QA and
multiple choice, converters for the released state dicts, OpenAI's dVAE encoder and the Kinetics
Video Swin, and the parity runner of both fixture formats.

Functions are looked up in their modules on first call, so importing the family stays cheap.
"""
from __future__ import annotations

import functools

from vlx import registry
from vlx.models.violet.layout import BACKBONE_LAYOUT

# Pre-training (spec §5) then downstream (spec §6) objectives.
OBJECTIVES = ("vtm", "mlm", "mvm", "ret", "vtc", "qa", "mc")


_late = functools.partial(registry.on_first_call, __name__)  # (module, attr)


# Parity tolerances beyond the generic ones (tiny/README.md, tiny_dalle/README.md): integer
# outputs exact; scores scaled by 1/0.05 (values up to ~60), the loss computed from them and the
# gradients at atol 1e-3.
PARITY_TOLERANCES = (
    (r"mask_img_pt|vtm_labels|.*_pred|ret_eval_rank_of_gt|ret_eval_median|tokens", 0.0, 0.0),
    (r"ret_scores|ret_loss|vtm_logits|grad__.*|gradnorm__.*", 1e-3, 1e-4),
)

build = _late("model", "build")

FAMILY = registry.Family(
    name="violet", build=build, objectives=_late("objectives", "objectives"),
    objective_names=OBJECTIVES, frozen_params=(r"^dvae/",),
    validate_config=_late("validate", "validate_config"),
    prepare_fresh_state=_late("dvae_targets", "prepare_fresh_state"),
    encode_videos=_late("tasks", "encode_videos"), encode_texts=_late("tasks", "encode_texts"),
    retrieval_scores=_late("tasks", "retrieval_scores"), retrieval_modes=("vtm", "vtc", "rerank"),
    pair_scores=_late("tasks", "pair_scores"), qa_logits=_late("tasks", "qa_logits"),
    mc_scores=_late("tasks", "mc_scores"),
    converter="vlx.models.violet.convert",
    fixture_outputs=_late("load_fixture", "compute_fixture_outputs"),
    parity_tolerances=PARITY_TOLERANCES, backbone_layout=BACKBONE_LAYOUT,
    data_hooks=_late("data", "data_hooks"))

__all__ = ["FAMILY", "OBJECTIVES", "build"]

"""VIMPAC family (README "Design": the family contract): the token-video transformer over
DALL-E dVAE codes with every attention layout of the reference (shared/reference/vimpac/spec.md),
3D block mask-then-predict and the long-range NCE loss for pre-training, action classification
with multi-view evaluation, the converter of the released `classifier.pt` + `args.pickle`
folders and the parity runner of the fixture (`tiny/` and `layouts/`).

Functions are looked up in their modules on first call, so importing the family stays cheap.
"""
from __future__ import annotations

import functools
import importlib

from vlx import registry

# pre-training (spec §3), then fine-tuning (spec §5)
OBJECTIVES = ("mlm", "nce", "classification")
# fine-tuning at another clip length / frame size interpolates the positional tables linearly
# (the reference's --different-shape, spec §4); the CLS position never changes shape
RESIZABLE = {r"^backbone/positional_embedding/(?!cls_pos)": (0, "linear")}


_late = functools.partial(registry.on_first_call, __name__)  # (module, attr)


def _parity_tolerances() -> tuple[tuple[str, float, float], ...]:
  return tuple(importlib.import_module("vlx.models.vimpac.load_fixture").PARITY_TOLERANCES)


build = _late("model", "build")

FAMILY = registry.Family(
    name="vimpac", build=build, objectives=_late("objectives", "objectives"),
    objective_names=OBJECTIVES, validate_config=_late("validate", "validate_config"),
    class_logits=_late("tasks", "class_logits"),
    converter="vlx.models.vimpac.convert",
    fixture_outputs=_late("load_fixture", "compute_fixture_outputs"),
    parity_tolerances=_parity_tolerances(), resizable_params=RESIZABLE)

__all__ = ["FAMILY", "OBJECTIVES", "build"]

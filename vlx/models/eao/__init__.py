"""Everything-at-Once family (README "Design": the family contract): the tri-modal fusion
transformer over text / video / audio features (shared/reference/eao/spec.md), the combinatorial
NormSoftmax objectives (one per pair: tv, ta, va, t_va, v_ta, a_tv), retrieval (t2v, t2va, ...),
the converter of the released `latest_model.pth` files and the parity runner of the fixture.

Every objective and eval function calls the model through `inputs.model_inputs` (pipeline batch
keys -> model inputs: token ids through the frozen word-vector table or CLIP text tower, audio
time-first -> mel-first). Functions are looked up in their modules on first call, so importing
the family stays cheap.
"""
from __future__ import annotations

import functools
import importlib

from vlx import registry

# vlx.models.eao.losses.OBJECTIVES (repeated here so the import stays cheap; a test checks)
OBJECTIVES = ("tv", "ta", "va", "t_va", "v_ta", "a_tv")
FROZEN_PARAMS = (r"^(word_vectors|clip_text)/",)     # inputs.FROZEN_PARAMS


def _retrieval_modes() -> tuple[str, ...]:
  """tasks.RETRIEVAL_MODES (helper E's module; ('t2v', 't2va') until it exists)."""
  try:
    return tuple(importlib.import_module("vlx.models.eao.tasks").RETRIEVAL_MODES)
  except (ImportError, AttributeError):
    return ("t2v", "t2va")


_late = functools.partial(registry.on_first_call, __name__)  # (module, attr)


def _parity_tolerances() -> tuple[tuple[str, float, float], ...]:
  return tuple(importlib.import_module("vlx.models.eao.load_fixture").PARITY_TOLERANCES)


build = _late("model", "build")


FAMILY = registry.Family(
    name="eao", build=build, objectives=_late("losses", "objectives"),
    objective_names=OBJECTIVES, frozen_params=FROZEN_PARAMS,
    validate_config=_late("validate", "validate_config"),
    prepare_fresh_state=_late("inputs", "prepare_fresh_state"),
    encode_videos=_late("tasks", "encode_videos"), encode_texts=_late("tasks", "encode_texts"),
    retrieval_scores=_late("tasks", "retrieval_scores"), retrieval_modes=_retrieval_modes(),
    converter="vlx.models.eao.convert",
    fixture_outputs=_late("load_fixture", "compute_fixture_outputs"),
    parity_tolerances=_parity_tolerances())

__all__ = ["FAMILY", "OBJECTIVES", "build"]

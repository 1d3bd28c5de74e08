"""All-in-one family (README "Design": the family contract): model, objectives, retrieval, QA,
multiple choice and classification scorers, converter, parity runner, config checks."""
from __future__ import annotations

import functools

import ml_collections
from flax import nnx

from vlx import registry
from vlx.models.allinone import model as _model
from vlx.models.allinone.layout import BACKBONE_LAYOUT
from vlx.models.allinone.model import AllInOne, model_config
from vlx.models.allinone import objectives as _objectives
from vlx.models.allinone.objectives import OBJECTIVES, fixture_outputs
from vlx.models.allinone.tasks import (class_logits, encode_texts, encode_videos, mc_scores,
                                       pair_scores, qa_logits, retrieval_scores)

# objective -> the config.model field that must create its head
_NEEDS = {"mlm": "heads.mlm", "itm": "heads.itm", "wpa": "heads.itm", "irtr": "heads.itm",
          "multiple_choice": "heads.itm", "ind_itc": "heads.itc", "mc_vqa": "heads.mc_vqa",
          "openend_vqa": "heads.num_qa_labels", "vcop": "heads.vcop"}


def build(model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> AllInOne:
  """The model of vlx.models.allinone.model plus the task options the losses read
  (`irtr_false_texts`: false captions per video for the irtr loss, default 15)."""
  m = _model.build(model_config, rngs=rngs)
  m.irtr_false_texts = int(model_config.get("irtr_false_texts", 15))
  return m


def _field(model: ml_collections.ConfigDict, dotted: str):
  node = model
  for part in dotted.split("."):
    node = node.get(part) if node is not None else None
  return node


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Family checks: data.train.false_videos / false_texts (data.false_counts); every active
  objective has its head; data frames / size match the model; the text length fits the position
  table; model.eval_patch_order is 'random' or 'raster'."""
  from vlx.models.allinone import data  # pylint: disable=import-outside-toplevel (TensorFlow)
  data.false_counts(config.data.train, config.data.train.get("task", "") or "retrieval")
  m = config.model
  _model.check_eval_patch_order(m)
  for name, w in config.objectives.items():
    if float(w) and not _field(m, _NEEDS.get(name, "heads.itm")):
      raise ValueError(f"config.objectives.{name}={w} needs config.model.{_NEEDS[name]} "
                       "(its head is not built)")
  t = config.data.train
  if int(t.num_frames) != int(m.num_frames):
    raise ValueError(f"config.data.train.num_frames={t.num_frames} != config.model.num_frames="
                     f"{m.num_frames}")
  size = int(t.get("crop", 0) or t.resolution)
  if size % int(m.patch_size):
    raise ValueError(f"config.data.train crop/resolution={size} is not a multiple of "
                     f"config.model.patch_size={m.patch_size}")
  if size != int(m.img_size):
    raise ValueError(f"config.data.train crop/resolution={size} != config.model.img_size="
                     f"{m.img_size} (the position table is not resized)")
  lengths = [("config.data.train.max_text_len", int(t.max_text_len))]
  lengths += [(f"config.evals.{k}.max_text_len", int(e.get("max_text_len", 0) or 0))
              for k, e in config.evals.items()]
  for where, n in lengths:
    if n > int(m.max_text_len):
      raise ValueError(f"{where}={n} > config.model.max_text_len={m.max_text_len} (text "
                       "position table)")
  for k, e in config.evals.items():
    if e.get("type") == "classification" and not int(m.heads.num_qa_labels):
      raise ValueError(f"config.evals.{k} (classification) needs config.model.heads."
                       "num_qa_labels > 0")
    if e.get("type") == "qa" and not int(m.heads.num_qa_labels):
      raise ValueError(f"config.evals.{k} (qa) needs config.model.heads.num_qa_labels > 0")
    if e.get("type") == "multiple_choice" and not (m.heads.itm or m.heads.mc_vqa):
      raise ValueError(f"config.evals.{k} (multiple_choice) needs config.model.heads.itm or "
                       "heads.mc_vqa")
    if e.get("type") == "retrieval" and e.get("mode", "vtc") in ("vtc", "rerank") \
        and not m.heads.itc:
      raise ValueError(f"config.evals.{k}.mode={e.get('mode')!r} needs the ind_itc embeddings "
                       "(config.model.heads.itc=True); use mode 'vtm' otherwise")


# Parity tolerances (tiny/README.md): masks / labels / names exact, losses rtol 1e-5 (gradients
# and the rest: the generic rtol 1e-3 / 1e-4).
PARITY_TOLERANCES = (
    (r"image_masks|image_masks_out|text_masks_out|wpa_(txt|img)_valid|vcop_labels|itm_labels"
     r"|grad_.*_names", 0.0, 0.0),
    (r"grad_.*", 1e-6, 1e-3),
    (r".*_loss", 1e-6, 1e-5),
)


def compute_fixture_outputs(fixture_dir):
  """The reference fixture's outputs computed by vlx (imported on use)."""
  from vlx.models.allinone.load_fixture import compute_fixture_outputs as run
  return run(fixture_dir)


# Imported on first call: the data module brings TensorFlow (~0.5 GB resident), which a
# process that only builds or steps the model never needs.
_late = functools.partial(registry.on_first_call, __name__)  # (module, attr)


FAMILY = registry.Family(
    name="allinone", build=build, objectives=_objectives.objectives, objective_names=OBJECTIVES,
    validate_config=validate_config,
    encode_videos=encode_videos, encode_texts=encode_texts, retrieval_scores=retrieval_scores,
    retrieval_modes=("vtm", "vtc", "itc", "rerank"), pair_scores=pair_scores,
    qa_logits=qa_logits, mc_scores=mc_scores, class_logits=class_logits,
    converter="vlx.models.allinone.convert", fixture_outputs=compute_fixture_outputs,
    parity_tolerances=PARITY_TOLERANCES, backbone_layout=BACKBONE_LAYOUT,
    data_hooks=_late("data", "data_hooks"))

__all__ = ["FAMILY", "AllInOne", "OBJECTIVES", "build", "class_logits", "encode_texts", "encode_videos",
           "fixture_outputs", "mc_scores", "model_config", "pair_scores", "qa_logits",
           "retrieval_scores", "validate_config"]

"""Everything-at-Once converter: every key of the six released manifests maps (abstract shapes,
full size, with and without DataParallel's `module.` prefix), variant detection from the shapes and
from the container's arch / config (read as data), model config from shapes = the release sizes,
wrong-family errors, and the tiny fixture container (optimizer state, config) read safely."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from vlx.convert import engine, torch_io
from vlx.convert.errors import UnsafeCheckpointError, WrongFamilyError
from vlx.models.eao import convert as ec
from vlx.models.eao import model as em

# manifest -> (variant from the shapes, variant from the container)
MANIFESTS = {"tva": ("tva", "tva"), "s3d": ("s3d", "s3d"), "clip": ("clip", "clip"),
             "tv_only": ("tva", "tv_only"),
             "tva_finetuned_msrvtt": ("tva", "tva_finetuned_msrvtt"),
             "tva_finetuned_youcook": ("tva", "tva_finetuned_youcook")}


def _manifest(reference_dir, name):
  return json.loads((reference_dir / "eao" / f"manifest_{name}.json").read_text())


def _shapes(m, strip=False):
  return {(p["key"][len("module."):] if strip else p["key"]):
          jax.ShapeDtypeStruct(tuple(p["shape"]), np.dtype(p["dtype"])) for p in m["params"]}


def _container(m, variant):
  """A stand-in trainer container: the manifest's arch class and a config of the kind the
  trainer writes (fine-tuned: the fine-tuning config's name and dataset)."""
  cfg = {"name": "everything_at_once_tva", "arch": {"type": m["arch_class"],
                                                    "args": m["arch_args"]}}
  if variant.startswith("tva_finetuned_"):
    ds = {"msrvtt": "MSRVTT", "youcook": "YouCook2"}[variant.rsplit("_", 1)[1]]
    cfg.update(name=f"finetune_{ds.lower()}",
               data_loader={"type": "FeatureDataloader", "args": {"dataset_name": ds}})
  return {"arch": "DataParallel", "epoch": 1, "config": cfg}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("strip", [False, True])
def test_full_size_manifest_maps_every_key(reference_dir, name, strip):
  m = _manifest(reference_dir, name)
  source = _shapes(m, strip)
  by_shapes, by_container = MANIFESTS[name]
  assert ec.detect_variant_from_shapes(source) == by_shapes
  variant = ec.variant_from_container(_container(m, by_container), source)
  assert variant == by_container
  overrides = ec.overrides_from_container(_container(m, variant))
  res = engine.convert_with(ec, ec.build, "eao", source, variant=variant,
                            model_config=overrides, dry_run=True)
  rep = res.report
  assert (rep["unmapped"], rep["missing"]) == ([], []), (rep["unmapped"][:5], rep["missing"][:5])
  assert rep["mapped"] + len(rep["unused"]) == len(source) == 188
  p = "" if strip else "module."
  assert f"{p}davenet.batchnorm1.running_var" in rep["unused"]
  assert f"{p}fusion.norm.weight" in rep["unused"]
  c = res.model_config
  release = em.model_config({"tva": "", "tva_finetuned_msrvtt": "",
                             "tva_finetuned_youcook": ""}.get(name, name))
  assert c.to_dict() == release.to_dict()
  # parameter count of the reference (nn.Parameters, the 4 unused ones included)
  params = sum(int(np.prod(s.shape)) for k, s in source.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
  assert params == m["total_params"]


def test_wrong_family_and_unknown_variant():
  with pytest.raises(WrongFamilyError, match="not an Everything-at-Once checkpoint"):
    ec.detect_variant(["visual_encoder.cls_token", "text_encoder.bert.x"])
  with pytest.raises(Exception, match="unknown Everything-at-Once variant"):
    ec.rules("tvx", em.model_config(""))


@pytest.mark.torch
def test_tiny_container_reads_safely_and_converts(reference_dir):
  path = reference_dir / "eao" / "tiny" / "checkpoint.pth"
  raw = torch_io.load_raw(path)          # weights_only: optimizer state and config are plain data
  assert {"optimizer", "config", "epoch"} <= set(raw)
  sd = torch_io.load_state_dict(path)   # state_dict unwrapped, `module.` stripped
  assert all(not k.startswith("module.") for k in sd) and len(sd) == 200
  assert ec.variant_from_container(raw, sd) == "tva"
  overrides = ec.overrides_from_container(raw)
  assert overrides["num_heads"] == 4 and overrides["audio_pooling"] == "none"
  res = engine.convert_with(ec, ec.build, "eao", sd, model_config=overrides, dry_run=True)
  assert (res.report["unmapped"], res.report["missing"]) == ([], [])
  c = res.model_config
  assert (c.text_dim, c.video_dim, c.hidden, c.depth, c.proj_dim) == (32, 48, 64, 2, 96)
  assert c.davenet.to_dict() == em.model_config("tiny").davenet.to_dict()
  assert tuple(c.davenet.widths) == (16, 16, 24, 32, 48, 64, 80)


def test_released_model_size_from_the_abstract_model(reference_dir):
  """vlx's full-size tva model holds the reference's parameters minus the 4 never-used ones
  (fusion.norm, davenet.batchnorm1 weight/bias)."""
  m = _manifest(reference_dir, "tva")
  model = engine.abstract_model(em.build, em.model_config(""))
  params = sum(int(np.prod(v.get_value().shape))
               for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
  assert params == m["total_params"] - 2 * 4096 - 2


class _Payload:   # pylint: disable=too-few-public-methods
  """Stands for code a container would need to unpickle (never instantiated on load)."""


@pytest.mark.torch
def test_container_needing_code_is_refused(tmp_path, reference_dir):
  import torch  # pylint: disable=import-outside-toplevel
  sd = torch_io.load_state_dict(reference_dir / "eao" / "tiny" / "checkpoint.pth")
  path = tmp_path / "latest_model.pth"
  torch.save({"state_dict": {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()},
              "config": _Payload()}, path)
  with pytest.raises(UnsafeCheckpointError, match="refused to load"):
    ec.read_checkpoint(path)
  good = tmp_path / "plain.pth"
  torch.save({"state_dict": {"module." + k: torch.from_numpy(np.asarray(v))
                             for k, v in sd.items()}, "arch": "DataParallel",
              "config": {"arch": {"type": "EverythingAtOnceModel_TV_Only",
                                  "args": {"fusion_params": {"num_heads": 4}}}}}, good)
  source, variant, overrides = ec.read_checkpoint(good)
  assert variant == "tv_only" and overrides == {"num_heads": 4} and len(source) == 200

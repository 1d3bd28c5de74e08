"""VIMPAC converter: the three released manifests map with 0 unmapped / 0 missing at full size
(abstract shapes), the architecture from the shapes equals the manifests' args (frame-256 tables
included), tied duplicates, positional-table interpolation to another input shape, and the release
folder's args.pickle read with a restricted unpickler (a payload is refused, nothing runs)."""
from __future__ import annotations

import argparse
import json
import pathlib
import pickle

import jax
import numpy as np
import pytest

from vlx.convert import engine
from vlx.convert.errors import ConversionError, UnsafeCheckpointError, WrongFamilyError
from vlx.models.vimpac import convert as vc
from vlx.models.vimpac import model as vm

COUNTS = {"small": (215, 212), "large_frame128": (798, 794), "large_frame256": (798, 794)}


def _manifest(reference_dir, name):
  return json.loads((reference_dir / "vimpac" / f"manifest_{name}.json").read_text())


def _shapes(m):
  return {p["key"]: jax.ShapeDtypeStruct(tuple(p["shape"]), np.dtype(p["dtype"]))
          for p in m["params"]}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_full_size_manifest_maps_every_key(reference_dir, name):
  m = _manifest(reference_dir, name)
  source = _shapes(m)
  assert vc.detect_variant_from_shapes(source) == name
  res = engine.convert_with(vc, vc.build, "vimpac", source, dry_run=True)
  rep = res.report
  assert (rep["unmapped"], rep["missing"]) == ([], []), (rep["unmapped"][:5], rep["missing"][:5])
  assert (len(source), rep["mapped"]) == COUNTS[name]
  assert "tied to backbone.embedding.weight" in rep["unused"]["mlm_head.decoder.weight"]
  assert "tied to mlm_head.bias" in rep["unused"]["mlm_head.decoder.bias"]
  assert res.ties == {"mlm_head.decoder.weight": "backbone.embedding.weight",
                      "mlm_head.decoder.bias": "mlm_head.bias"}
  c, a = res.model_config, m["args"]
  assert (c.layout, c.pos_emb, c.layers, c.hidden, c.frame_size, c.clip_len, c.halve_att,
          c.halve_mlp, c.pre_activation, c.nce_proj_layers, c.nce_proj_hid_dim) == (
              a["model"][len("efflayout"):], a["pos_emb"], a["layers"], a["hid_dim"],
              a["frame_size"], a["clip_len"], a["halve_att"], a["halve_mlp"],
              a["pre_activation"], a["nce_proj_layers"], a["nce_proj_hid_dim"])
  # the release presets are the manifests' architectures
  # (training settings such as mask_blocks come from args.pickle, not from shapes)
  preset = vm.model_config({"large_frame128": "large"}.get(name, name))
  training = ("mask_blocks", "nce_temperature", "label_smoothing")
  assert ({k: v for k, v in c.to_dict().items() if k not in training}
          == {k: v for k, v in preset.to_dict().items() if k not in training})
  assert vc.overrides_from_args(a)["mask_blocks"] == a["mask_blocks"] == preset.mask_blocks
  unique = sum(int(np.prod(s.shape)) for k, s in source.items()
               if not k.startswith("mlm_head.decoder.") and "running" not in k
               and "num_batches" not in k)
  assert unique == m["unique_trainable_params"]


def test_frame128_to_256_interpolates_the_tables(reference_dir):
  """Another input shape (the frame-256 continuation / --different-shape): H, W tables resized."""
  source = _shapes(_manifest(reference_dir, "large_frame128"))
  res = engine.convert_with(vc, vc.build, "vimpac", source, dry_run=True,
                            model_config={"frame_size": 256, "clip_len": 10})
  assert (res.report["unmapped"], res.report["missing"]) == ([], [])
  t = np.arange(12, dtype=np.float32).reshape(4, 3)
  # torch F.interpolate(linear, align_corners=False) 4 -> 6 and 4 -> 2
  np.testing.assert_allclose(vm.interpolate_linear(t, 6)[:, 0],
                             [0, 1.5, 3.5, 5.5, 7.5, 9], atol=1e-6)
  np.testing.assert_allclose(vm.interpolate_linear(t, 2)[:, 0], [1.5, 7.5], atol=1e-6)


def test_layout_parsing_and_wrong_family():
  assert vm.parse_layout("efflayoutT,H|W") == (("T",), ("H", "W"))
  assert vm.parse_layout("H|W,T") == (("H", "W"), ("T",))
  with pytest.raises(ValueError, match="model layout 'bert'"):
    vm.parse_layout("bert")
  with pytest.raises(WrongFamilyError, match="not a VIMPAC checkpoint"):
    vc.detect_variant(["visual_encoder.cls_token"])


def _release(folder: pathlib.Path, reference_dir, args_name="args.pickle"):
  tiny = reference_dir / "vimpac" / "tiny"
  folder.mkdir(parents=True)
  (folder / "classifier.pt").symlink_to(tiny / "checkpoint.pt")
  (folder / args_name).symlink_to(tiny / args_name)
  return folder


@pytest.mark.torch
@pytest.mark.parametrize("args_name", ["args.pickle", "args.txt"])
def test_release_folder_and_file_with_args_beside(tmp_path, reference_dir, args_name):
  folder = _release(tmp_path / "last", reference_dir, args_name)
  for path in (folder, folder / "classifier.pt"):
    source, variant, overrides = vc.read_checkpoint(path)
    assert variant == "other" and len(source) == 126
    assert overrides["layout"] == "T,H|W" and overrides["hidden"] == 128
    assert (overrides["layers"], overrides["clip_len"], overrides["frame_size"]) == (3, 3, 32)
    res = engine.convert_with(vc, vc.build, "vimpac", source, model_config=overrides,
                              dry_run=True)
    assert (res.report["unmapped"], res.report["missing"]) == ([], [])


class _Payload:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("where", ["top", "inside"])
def test_payload_args_pickle_is_refused_and_nothing_runs(tmp_path, where):
  marker = tmp_path / "ran"
  payload = _Payload(marker)
  obj = payload if where == "top" else argparse.Namespace(model="efflayoutT", layers=payload)
  folder = tmp_path / "last"
  folder.mkdir()
  (folder / "classifier.pt").write_bytes(b"")
  (folder / "args.pickle").write_bytes(pickle.dumps(obj))
  with pytest.raises(UnsafeCheckpointError, match="args.pickle: refused"):
    vc.read_checkpoint(folder)
  assert not marker.exists()


def test_args_with_non_plain_values_refused(tmp_path):
  p = tmp_path / "args.pickle"
  p.write_bytes(pickle.dumps(argparse.Namespace(layers=6, extra={"a": 1})))
  with pytest.raises(UnsafeCheckpointError, match="not a dict of plain values"):
    vc.read_args(p)
  p.write_bytes(pickle.dumps(argparse.Namespace(layers=6, model="efflayoutT")))
  assert vc.overrides_from_args(vc.read_args(p)) == {"layers": 6, "layout": "T"}
  with pytest.raises(ConversionError, match="no classifier.pt"):
    vc.read_checkpoint(tmp_path)


@pytest.mark.torch
def test_layout_backbones_from_shapes_alone(reference_dir):
  """Flags-free conversion of every layouts/ backbone: the shapes give the layout, halving,
  pre-activation and table kind; the result equals the config built from its args."""
  from vlx.convert import torch_io  # pylint: disable=import-outside-toplevel
  d = reference_dir / "vimpac" / "tiny" / "layouts"
  cfg = json.loads((d / "config.json").read_text())
  assert len(cfg) == 7
  for tag, entry in cfg.items():
    source = torch_io.load_state_dict(d / f"{tag}.pt")
    shapes = {k: jax.ShapeDtypeStruct(tuple(v.shape), np.dtype(v.dtype))
              for k, v in source.items()}
    res = engine.convert_with(vc, vc.build, "vimpac", shapes, dry_run=True)
    assert (res.report["unmapped"], res.report["missing"]) == ([], []), tag
    with_args = engine.convert_with(vc, vc.build, "vimpac", shapes, dry_run=True,
                                    model_config=vc.overrides_from_args(entry["args"]))
    fields = ("vocab_size", "hidden", "layers", "layout", "pos_emb", "pre_activation",
              "halve_att", "halve_mlp", "clip_len", "frame_size", "mlm_head", "nce_head")
    got = {f: res.model_config[f] for f in fields}
    assert got == {f: with_args.model_config[f] for f in fields}, tag
    assert not got["mlm_head"] and not got["nce_head"]

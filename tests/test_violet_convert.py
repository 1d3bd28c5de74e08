"""VIOLET converter: every released manifest maps (abstract shapes, full size), variant detection,
model config from shapes = the release sizes, errors, and a tiny fixture checkpoint through
`python -m vlx.convert` into an output directory and back."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx

from vlx.convert import __main__ as cli
from vlx.convert import convert_state_dict, load_state_dict
from vlx.convert.errors import ConversionError, WrongFamilyError
from vlx.convert.store import load_converted
from vlx.models.violet import convert as vc
from vlx.models.violet import model as vm

# manifest -> (detected variant, converted as, num_answers)
MANIFESTS = {
    "pretrain": ("pretrain", "pretrain", 0),
    "retrieval": ("retrieval", "retrieval", 0),
    "qamc": ("retrieval", "qamc", 0),          # same keys/shapes as retrieval: --variant qamc
    "qaoe_msvd-qa": ("qaoe", "qaoe", 1000),
    "qaoe_msrvtt-qa": ("qaoe", "qaoe", 1500),
    "qaoe_tgif-frame": ("qaoe", "qaoe", 1540),
    "qaoe_lsmdc-fib": ("qaoe", "qaoe", 908),
    "video-swin": ("video_swin", "video_swin", 0),
    "dalle_encoder": ("dalle_encoder", "dalle_encoder", 0),
}


def _shapes(reference_dir, name):
  m = json.loads((reference_dir / "violet" / f"manifest_{name}.json").read_text())
  return {p["key"]: jax.ShapeDtypeStruct(tuple(p["shape"]), np.dtype(p["dtype"]))
          for p in m["params"]}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_full_size_manifest_maps_every_key(reference_dir, name):
  detected, variant, answers = MANIFESTS[name]
  source = _shapes(reference_dir, name)
  assert vc.detect_variant_from_shapes(source) == detected
  res = convert_state_dict("violet", source, variant=variant, dry_run=True)
  rep = res.report
  assert (rep["unmapped"], rep["missing"]) == ([], []), (rep["unmapped"][:5], rep["missing"][:5])
  assert rep["mapped"] + len(rep["unused"]) == len(source)
  c, release = res.model_config, vm.model_config("")
  if variant == "dalle_encoder":
    assert c.kind == "dalle_encoder" and c.dvae.to_dict() == release.dvae.to_dict()
    return
  assert c.video.to_dict() == release.video.to_dict()
  if variant == "video_swin":
    assert c.kind == "video_swin" and c.hidden == 768
    return
  unused = set(rep["unused"])
  assert "enc_txt.emb_txt.position_ids" in unused
  assert "enc_img.swin.layers.2.blocks.17.attn.relative_position_index" in unused
  assert (c.head, c.num_answers) == (variant, answers)
  for field in ("hidden", "num_pos", "num_frames_table", "mvm_vocab"):
    assert c[field] == release[field], field
  assert c.text.to_dict() == release.text.to_dict()
  if variant == "pretrain":
    assert rep["unused"]["fc_mtm.predictions.decoder.bias"].endswith(
        "(tied to fc_mtm.predictions.bias)")


def test_pretrain_file_converts_to_a_downstream_start(reference_dir):
  """The reference's fine-tuning start: fc.* kept, the MLM / MVM heads dropped."""
  rep = convert_state_dict("violet", _shapes(reference_dir, "pretrain"), variant="qamc",
                           dry_run=True).report
  assert (rep["unmapped"], rep["missing"]) == ([], [])
  assert "fc_mvm.3.weight" in rep["unused"] and "fc_mtm.predictions.bias" in rep["unused"]


def test_detection_errors_and_wrong_heads(reference_dir):
  with pytest.raises(WrongFamilyError, match="not a VIOLET checkpoint"):
    vc.detect_variant(["visual_encoder.model.cls_token", "text_encoder.bert.x"])
  with pytest.raises(ConversionError, match="fc.3 has 1000 outputs"):
    convert_state_dict("violet", _shapes(reference_dir, "qaoe_msvd-qa"), variant="retrieval",
                       dry_run=True)
  with pytest.raises(ConversionError, match="variant 'pretrain' needs a VIOLET model file; "
                                            "this file is video_swin"):
    convert_state_dict("violet", _shapes(reference_dir, "video-swin"), variant="pretrain",
                       dry_run=True)


@pytest.mark.torch
def test_fixture_checkpoint_through_the_cli_and_back(reference_dir, tmp_path, capsys):
  ckpt = reference_dir / "violet" / "tiny" / "checkpoint_qaoe.pt"
  out = tmp_path / "out"
  # the head count is not in the shapes: the released 12 does not divide width 64
  base = ["--family", "violet", "--checkpoint", str(ckpt), "--out", str(out)]
  assert cli.main(base) == 2
  err = capsys.readouterr().err
  assert "num_heads=12" in err and "--set" in err and err.count("\n") == 1
  code = cli.main(["--family", "violet", "--checkpoint", str(ckpt), "--out", str(out),
                   "--set", "text.num_heads=2"])
  assert code == 0, capsys.readouterr()
  assert "variant qaoe" in capsys.readouterr().out
  cfg, state = load_converted(out, build=vm.build)
  assert (cfg.head, cfg.num_answers, cfg.hidden, cfg.text.num_layers) == ("qaoe", 50, 64, 2)
  sd = load_state_dict(ckpt)
  np.testing.assert_array_equal(state["fc"]["fc2"]["kernel"][...], sd["fc.3.weight"].T)
  np.testing.assert_array_equal(state["video_tokens"]["pos"][...], sd["enc_img.emb_pos"][0, 0])
  np.testing.assert_array_equal(state["encoder"][1]["attn"]["value"]["kernel"][...],
                                sd["trsfr.layer.1.attention.self.value.weight"].T)


@pytest.mark.torch
def test_video_swin_file_fills_the_paths_of_violet(reference_dir):
  """A raw SwinTransformer3D state dict (here: the fixture's enc_img.swin.*) converts to a
  module whose params sit at video/... exactly as in the Violet model."""
  sd = load_state_dict(reference_dir / "violet" / "tiny" / "checkpoint.pt")
  prefix = "enc_img.swin."
  swin = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
  res = convert_state_dict("violet", swin)
  assert (res.variant, res.report["unmapped"], res.report["missing"]) == ("video_swin", [], [])
  assert res.model_config.hidden == 64 and res.model_config.kind == "video_swin"
  full = convert_state_dict("violet", sd, model_config={"text": {"num_heads": 2}})
  ours = dict(nnx.to_flat_state(nnx.state(res.model, nnx.Param)))
  theirs = dict(nnx.to_flat_state(nnx.state(full.model, nnx.Param)))
  assert ours and set(ours) == {p for p in theirs if p[0] == "video"}
  for path, var in ours.items():
    np.testing.assert_array_equal(var[...], theirs[path][...], err_msg="/".join(map(str, path)))


@pytest.mark.torch
def test_cli_uses_a_converters_container_reader(reference_dir, tmp_path, capsys, monkeypatch):
  """A converter module's optional read_checkpoint(path) -> (state dict, variant, overrides)
  replaces the generic reader: its variant and sizes reach the conversion, --set still wins."""
  from vlx.models.violet import convert as violet_convert
  ckpt = reference_dir / "violet" / "tiny" / "checkpoint_retrieval.pt"
  seen = []

  def reader(path):
    seen.append(str(path))
    return load_state_dict(path), "qamc", {"text": {"num_heads": 4, "ln_eps": 1e-12}}

  monkeypatch.setattr(violet_convert, "read_checkpoint", reader, raising=False)
  out = tmp_path / "out"
  assert cli.main(["--family", "violet", "--checkpoint", str(ckpt), "--out", str(out),
                   "--set", "text.num_heads=2"]) == 0, capsys.readouterr()
  assert seen == [str(ckpt)] and "variant qamc" in capsys.readouterr().out
  cfg, _ = load_converted(out, build=vm.build)
  assert (cfg.head, cfg.text.num_heads) == ("qamc", 2)

"""All-in-one converter: every key of the Ti/S/B manifests (shape-only dry runs), the tiny
Lightning .ckpt (read with weights_only=True, without pytorch_lightning), heads, errors, the CLI."""
from __future__ import annotations

import json
import os
import pickle
import sys
import types

import jax
import numpy as np
import pytest
import torch

from vlx.convert import __main__ as cli
from vlx.convert import convert_state_dict, load_converted, load_state_dict, torch_io
from vlx.convert.errors import ShapeMismatchError, UnsafeCheckpointError, WrongFamilyError

pytestmark = pytest.mark.torch  # reads/writes torch checkpoints

LIGHTNING = "pytorch_lightning.callbacks.model_checkpoint"
TINY = {"num_heads": 2}
# manifest -> (D, heads, distilled, deit, prefix tokens)
SIZES = {"Ti": (192, 3, False, True, 1), "S": (384, 6, True, True, 2),
         "B": (768, 12, False, False, 1)}


def _shapes(reference_dir, name):
  m = json.loads((reference_dir / "allinone" / f"manifest_{name}.json").read_text())
  return {p["key"]: jax.ShapeDtypeStruct(tuple(p["shape"]), np.dtype(p["dtype"]))
          for p in m["params"]}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_full_size_dry_run_maps_every_key(reference_dir, name):
  shapes = _shapes(reference_dir, name)
  res = convert_state_dict("allinone", shapes, dry_run=True)
  rep, c = res.report, res.model_config
  assert (rep["variant"], rep["unmapped"], rep["missing"]) == ("pretrain", [], [])
  assert list(rep["unused"]) == ["text_embeddings.position_ids"]
  assert rep["mapped"] + 1 == len(shapes)
  d, heads, distilled, deit, prefix = SIZES[name]
  assert (c.variant, c.hidden_size, c.num_heads, c.distilled, c.deit) == (
      name, d, heads, distilled, deit)
  assert (c.num_layers, c.img_size, c.patch_size, c.num_frames, c.max_text_len,
          c.vocab_size, c.mlp_ratio) == (12, 224, 16, 3, 40, 30522, 4.0)
  assert (c.heads.mlm, c.heads.itm, c.heads.itc, c.heads.num_qa_labels) == (True, True, False, 0)


def test_downstream_heads_are_detected(reference_dir):
  """A Ti pre-training layout plus every task head of spec §1.1 (shapes only)."""
  s = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
  shapes = dict(_shapes(reference_dir, "Ti"), **{
      "vqa_classifier.1.weight": s(96, 192), "vqa_classifier.1.bias": s(96),
      "vqa_classifier.2.weight": s(96), "vqa_classifier.2.bias": s(96),
      "vqa_classifier.4.weight": s(1501, 96), "vqa_classifier.4.bias": s(1501),
      "rank_output.weight": s(1, 192), "rank_output.bias": s(1),
      "mc_vqa_classifier.1.weight": s(256, 192), "mc_vqa_classifier.1.bias": s(256),
      "mc_vqa_classifier.2.weight": s(256), "mc_vqa_classifier.2.bias": s(256),
      "mc_vqa_classifier.4.weight": s(1, 256), "mc_vqa_classifier.4.bias": s(1),
      "txt_proj.weight": s(512, 192), "txt_proj.bias": s(512),
      "vid_proj.weight": s(512, 192), "vid_proj.bias": s(512),
      "vcop_classifier.fc7.weight": s(512, 384), "vcop_classifier.fc7.bias": s(512),
      "vcop_classifier.fc8.weight": s(6, 1536), "vcop_classifier.fc8.bias": s(6),
      "nlvr2_classifier.0.weight": s(384, 384)})
  res = convert_state_dict("allinone", shapes, dry_run=True)
  rep, h = res.report, res.model_config.heads
  assert (rep["variant"], rep["unmapped"], rep["missing"]) == ("downstream", [], [])
  assert (h.num_qa_labels, h.mc_vqa, h.itc, h.vcop, h.rank_untied) == (1501, True, True, True,
                                                                       False)
  assert sorted(rep["unused"]) == ["nlvr2_classifier.0.weight", "rank_output.bias",
                                   "rank_output.weight", "text_embeddings.position_ids"]
  pre = convert_state_dict("allinone", shapes, variant="pretrain", dry_run=True).report
  assert (pre["unmapped"], pre["missing"], len(pre["unused"])) == ([], [], 24)


@pytest.fixture(scope="module")
def tiny(reference_dir):
  d = reference_dir / "allinone" / "tiny"
  return dict(dir=d, sd=load_state_dict(d / "checkpoint.ckpt"),
              sd_s=load_state_dict(d / "distilled" / "checkpoint.ckpt"))


def test_lightning_ckpt_loads_weights_only_without_pytorch_lightning(tiny, monkeypatch):
  path = tiny["dir"] / "checkpoint.ckpt"
  with pytest.raises(pickle.UnpicklingError, match=LIGHTNING):
    torch.load(path, weights_only=True)          # what the allow-list has to solve
  monkeypatch.setitem(sys.modules, "pytorch_lightning", None)   # any import would now fail
  raw = torch_io.load_raw(path)
  assert list(raw["callbacks"]) == [torch_io.LightningCallbackKey]
  assert raw["hyper_parameters"]["config"]["vit"] == "vit_fixture_p8_32"
  sd = torch_io.load_state_dict(path)
  assert len(sd) == 70 and sd["text_embeddings.position_ids"].dtype == np.int64
  assert not any(k.startswith(("epoch", "optimizer", "callbacks")) for k in sd)


class _Touch:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def _save_lightning(path, callbacks_value, monkeypatch, instance=False):
  """Saves {'state_dict', 'callbacks': {ModelCheckpoint: value}} via a fake Lightning module."""
  cls = type("ModelCheckpoint", (), {"__module__": LIGHTNING})
  with monkeypatch.context() as m:
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", LIGHTNING):
      m.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules[LIGHTNING].ModelCheckpoint = cls
    key = cls() if instance else cls
    torch.save({"state_dict": {"w": torch.zeros(2)}, "callbacks": {key: callbacks_value}}, path)


@pytest.mark.parametrize("instance", [False, True], ids=["payload-in-state", "instantiated"])
def test_malicious_lightning_ckpt_is_still_refused(tmp_path, monkeypatch, instance):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.ckpt"
  value = {"monitor": "x"} if instance else {"monitor": _Touch(str(marker))}
  _save_lightning(path, value, monkeypatch, instance=instance)
  with pytest.raises(UnsafeCheckpointError, match="evil.ckpt.*code execution"):
    torch_io.load_state_dict(path)
  assert not marker.exists()
  _save_lightning(tmp_path / "ok.ckpt", {"monitor": "x"}, monkeypatch)   # the benign container
  assert list(torch_io.load_state_dict(tmp_path / "ok.ckpt")) == ["w"]


def test_tiny_values_heads_and_tied_rank(tiny):
  sd = tiny["sd"]
  res = convert_state_dict("allinone", sd, model_config=TINY)
  m, rep = res.model, res.report
  assert (rep["variant"], rep["unmapped"], rep["missing"]) == ("downstream", [], [])
  assert "rank_output.weight" in rep["unused"] and not hasattr(m, "rank_head")
  b = "transformer.blocks.1."
  np.testing.assert_array_equal(m.transformer.blocks[1].attn.value.kernel[...],
                                sd[b + "attn.qkv.weight"][128:].T)
  np.testing.assert_array_equal(m.transformer.blocks[1].attn.key.bias[...],
                                sd[b + "attn.qkv.bias"][64:128])
  np.testing.assert_array_equal(m.transformer.patch_embed.proj.kernel[...],
                                sd["transformer.patch_embed.proj.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(m.mlm_score.decoder.kernel[...], sd["mlm_score.decoder.weight"].T)
  np.testing.assert_array_equal(m.vqa_classifier.norm.scale[...], sd["vqa_classifier.2.weight"])
  np.testing.assert_array_equal(m.vcop_head.fc8.kernel[...], sd["vcop_classifier.fc8.weight"].T)
  np.testing.assert_array_equal(m.token_type_embeddings.embedding[...],
                                sd["token_type_embeddings.weight"])
  cls = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
  np.testing.assert_allclose(m.rank_output(cls)[:, 0],
                             cls @ sd["rank_output.weight"][0] + sd["rank_output.bias"][0],
                             rtol=1e-5, atol=1e-5)
  # a file whose rank_output is no longer the ITM row (re-created ITM head): own head
  untied = dict(sd, **{"rank_output.weight": sd["rank_output.weight"] + 1})
  res = convert_state_dict("allinone", untied, model_config=TINY)
  assert res.model_config.heads.rank_untied and "rank_output.weight" not in res.report["unused"]
  np.testing.assert_array_equal(res.model.rank_head.kernel[...], untied["rank_output.weight"].T)


def test_tiny_distilled_and_frame_changes(tiny):
  res = convert_state_dict("allinone", tiny["sd_s"], model_config={"num_heads": 3})
  c = res.model_config
  assert (res.variant, c.distilled, c.hidden_size, c.shared_embedding_dim) == (
      "downstream", True, 48, 24)
  assert res.model.transformer.pos_embed.shape == (1, 18, 48)
  te = tiny["sd"]["transformer.temporal_embed"]
  five = convert_state_dict("allinone", tiny["sd"], variant="pretrain",
                            model_config=dict(TINY, num_frames=5)).model
  got = np.asarray(five.transformer.temporal_embed[...])
  np.testing.assert_array_equal(got[:, :3], te)
  np.testing.assert_array_equal(got[:, 3:], 0)
  assert not hasattr(five, "vqa_classifier")
  two = convert_state_dict("allinone", tiny["sd"], variant="pretrain",
                           model_config=dict(TINY, num_frames=2)).model
  np.testing.assert_array_equal(two.transformer.temporal_embed[...], te[:, :2])
  no_te = {k: v for k, v in tiny["sd"].items() if k != "transformer.temporal_embed"}
  res = convert_state_dict("allinone", no_te, model_config=TINY)
  assert (res.report["missing"], res.model_config.temporal_embed) == ([], False)


def test_wrong_family_and_wrong_shape_name_the_keys(tiny):
  alpro = {k: np.zeros((2, 2)) for k in ("visual_encoder.model.cls_token",
                                          "text_encoder.bert.embeddings.word_embeddings.weight")}
  with pytest.raises(WrongFamilyError, match=r"not an All-in-one checkpoint.*visual_encoder\."
                                             r"model\.cls_token.*looks like a 'alpro'"):
    convert_state_dict("allinone", alpro)
  bad = dict(tiny["sd"], **{"transformer.blocks.1.mlp.fc2.weight": np.zeros((64, 255))})
  with pytest.raises(ShapeMismatchError, match=r"transformer\.blocks\.1\.mlp\.fc2\.weight -> "
                                               r"transformer/blocks/1/mlp/fc2/kernel: expected "
                                               r"\(256, 64\), got \(255, 64\)"):
    convert_state_dict("allinone", bad, model_config=TINY)
  extra = dict(tiny["sd"], **{"transformer.head.weight": np.zeros((3, 64))})
  rep = convert_state_dict("allinone", extra, model_config=TINY, dry_run=True).report
  assert rep["unmapped"] == ["transformer.head.weight"]


def test_cli_converts_the_lightning_ckpt(tiny, tmp_path, capsys):
  out = tmp_path / "out"
  args = ["--family", "allinone", "--checkpoint", str(tiny["dir"] / "checkpoint.ckpt"),
          "--out", str(out), "--set", "num_heads=2"]
  assert cli.main(args) == 0
  log = capsys.readouterr().out
  assert "variant downstream: 67 keys mapped, 3 unused, 0 unmapped, 0 missing" in log
  report = json.loads((out / "conversion_report.json").read_text())
  assert (report["unmapped"], report["missing"]) == ([], [])
  cfg, state = load_converted(out)
  assert (cfg.family, cfg.num_heads, cfg.heads.num_qa_labels) == ("allinone", 2, 21)
  np.testing.assert_array_equal(state["itm_score"]["kernel"][...],
                                tiny["sd"]["itm_score.fc.weight"].T)
  assert cli.main(args[:3] + [str(tmp_path / "absent.ckpt")] + args[4:]) == 2
  assert "checkpoint file not found" in capsys.readouterr().err

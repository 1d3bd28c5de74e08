"""All-in-one from a public timm ViT / DeiT file (spec §6.2: `pretrained=True`) into a tiny model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

import vlx  # noqa: F401
from vlx import checkpoint as ckpt
from vlx.convert.backbones import init_from_backbones, summary
from vlx.convert.engine import abstract_model
from vlx.convert.errors import ConversionError, ShapeMismatchError, WrongFamilyError
from vlx.models.allinone import FAMILY
from vlx.models.allinone.model import build, model_config
from timm_state import random_timm_vit


def _init(state, **kw):
  """init_from_backbones with All-in-one's layout (Family.backbone_layout)."""
  return init_from_backbones(state, layout=FAMILY.backbone_layout, **kw)

pytestmark = pytest.mark.torch  # writes/reads .pth files

D, DEPTH, PATCH = 32, 2, 8          # model_config("tiny"): width 32, 2 blocks, 32 px / patch 8


def _params(distilled=False):
  """Param state of a tiny All-in-one, every value 7.0 (so 'kept fresh init' is visible)."""
  c = model_config("tiny")
  c.distilled = distilled
  _, params, _ = nnx.split(abstract_model(build, c), nnx.Param, ...)
  return jax.tree.map(lambda x: jnp.full(x.shape, 7.0, x.dtype), params)


def _flat(state) -> dict[str, np.ndarray]:
  return {"/".join(str(k) for k in p): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
          for p, v in nnx.to_flat_state(state)}


def _vit(rng, *, grid=4, depth=DEPTH, distilled=False) -> dict[str, np.ndarray]:
  return random_timm_vit(rng, dim=D, depth=depth, patch=PATCH, grid=grid, distilled=distilled)


def _save(tmp_path, sd, name="vit.pth") -> str:
  path = tmp_path / name
  if name.endswith(".safetensors"):
    save_file(sd, str(path))
  else:
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  return str(path)


def test_timm_vit_lands_where_expected(tmp_path):
  rng = np.random.default_rng(0)
  vit = _vit(rng)
  params = _params()
  assert FAMILY.backbone_layout.video == "transformer/"
  state, report = _init(params, vit_file=_save(tmp_path, vit, "vit.safetensors"))
  got = _flat(state)
  t = "transformer/"
  np.testing.assert_array_equal(got[t + "cls_token"], vit["cls_token"])
  np.testing.assert_array_equal(got[t + "pos_embed"], vit["pos_embed"])
  np.testing.assert_array_equal(got[t + "patch_embed/proj/kernel"],
                                vit["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(got[t + "patch_embed/proj/bias"], vit["patch_embed.proj.bias"])
  np.testing.assert_array_equal(got[t + "norm/scale"], vit["norm.weight"])
  for k in range(DEPTH):
    b, db = f"blocks.{k}.", f"{t}blocks/{k}/"
    qkv_w, qkv_b = vit[b + "attn.qkv.weight"], vit[b + "attn.qkv.bias"]
    for j, n in enumerate(("query", "key", "value")):           # rows q | k | v
      np.testing.assert_array_equal(got[f"{db}attn/{n}/kernel"], qkv_w[j * D:(j + 1) * D].T)
      np.testing.assert_array_equal(got[f"{db}attn/{n}/bias"], qkv_b[j * D:(j + 1) * D])
    np.testing.assert_array_equal(got[db + "attn/out/kernel"], vit[b + "attn.proj.weight"].T)
    np.testing.assert_array_equal(got[db + "mlp/fc1/kernel"], vit[b + "mlp.fc1.weight"].T)
    np.testing.assert_array_equal(got[db + "mlp/fc2/bias"], vit[b + "mlp.fc2.bias"])
    np.testing.assert_array_equal(got[db + "norm1/scale"], vit[b + "norm1.weight"])
    np.testing.assert_array_equal(got[db + "norm2/bias"], vit[b + "norm2.bias"])
  # the reference's temporal_embed init is zeros; everything outside the ViT keeps its init
  np.testing.assert_array_equal(got[t + "temporal_embed"], np.zeros((1, 3, D), np.float32))
  for path in ("text_embeddings/word/embedding", "token_type_embeddings/embedding",
               "pooler/kernel", "mlm_score/decoder/kernel", "itm_score/kernel"):
    assert (got[path] == 7.0).all(), path
  assert {k for k in report["initialised"] if not k.startswith(t)} == set()
  assert not [k for k in report["kept_init_paths"] if k.startswith(t)]
  assert report["kept_init"]["text_embeddings/word"]["reason"].startswith("fresh init as the reference")
  assert report["unused"] == {"vit:head.weight": "ImageNet classifier, dropped as the reference "
                              "does", "vit:head.bias": "ImageNet classifier, dropped as the "
                              "reference does"}
  assert report["sources"]["vit"]["mapped"] == len(vit) - 2
  assert "zeros (All-in-one's temporal_embed init" in summary(report)


def test_pos_embed_resized_like_the_reference(tmp_path):
  """A 2x2-grid table into the 4x4 model: CLS row kept, grid = torch bilinear, align_corners."""
  rng = np.random.default_rng(1)
  vit = _vit(rng, grid=2)
  state, _ = _init(_params(), vit_file=_save(tmp_path, vit))
  got = _flat(state)["transformer/pos_embed"]
  grid = torch.from_numpy(vit["pos_embed"][:, 1:]).reshape(1, 2, 2, D).permute(0, 3, 1, 2)
  want = torch.nn.functional.interpolate(grid, size=(4, 4), mode="bilinear", align_corners=True)
  want = want.permute(0, 2, 3, 1).reshape(1, 16, D).numpy()
  assert got.shape == (1, 17, D)
  np.testing.assert_array_equal(got[:, :1], vit["pos_embed"][:, :1])
  np.testing.assert_allclose(got[:, 1:], want, rtol=1e-5, atol=1e-6)


def test_distilled_deit_and_init_from(tmp_path):
  """All-in-one-S layout: dist_token and 2 prefix rows; through checkpoint.init_from (config)."""
  rng = np.random.default_rng(2)
  vit = _vit(rng, distilled=True)
  init = ml_collections.ConfigDict(dict(from_converted="", from_checkpoint="", bert_dir="",
                                        vit_file=_save(tmp_path, vit)))
  state = ckpt.init_from({"params": _params(distilled=True)}, init, family=FAMILY)
  got = _flat(state["params"])
  np.testing.assert_array_equal(got["transformer/dist_token"], vit["dist_token"])
  np.testing.assert_array_equal(got["transformer/pos_embed"], vit["pos_embed"])
  np.testing.assert_array_equal(got["transformer/blocks/1/mlp/fc2/kernel"],
                                vit["blocks.1.mlp.fc2.weight"].T)


def test_clear_errors(tmp_path):
  rng = np.random.default_rng(3)
  params = _params()
  with pytest.raises(ConversionError, match="loads no BERT weights"):
    _init(params, bert_dir=str(tmp_path))
  missing = _vit(rng)
  del missing["pos_embed"]
  with pytest.raises(WrongFamilyError, match="not a timm ViT state dict"):
    _init(params, vit_file=_save(tmp_path, missing, "missing.pth"))
  extra = dict(_vit(rng), **{"blocks.0.ls1.gamma": np.ones(D, np.float32)})
  with pytest.raises(ConversionError, match=r"match no rule.*blocks\.0\.ls1\.gamma"):
    _init(params, vit_file=_save(tmp_path, extra, "extra.pth"))
  with pytest.raises(ShapeMismatchError, match="3 blocks but the model has"):
    _init(params, vit_file=_save(tmp_path, _vit(rng, depth=3), "deep.pth"))
  with pytest.raises(WrongFamilyError, match="is a distilled DeiT"):
    _init(params, vit_file=_save(tmp_path, _vit(rng, distilled=True), "s.pth"))
  wide = {k: (np.zeros((v.shape[0], 3 * v.shape[1]), v.dtype) if k.endswith("mlp.fc2.weight")
              else v) for k, v in _vit(rng).items()}
  with pytest.raises(ShapeMismatchError, match="mlp.fc2.weight"):
    _init(params, vit_file=_save(tmp_path, wide, "wide.pth"))
  # a block weight absent from the file: partial load, reported (never silent)
  partial = _vit(rng)
  del partial["blocks.1.norm2.bias"]
  _, report = _init(params, vit_file=_save(tmp_path, partial, "partial.pth"))
  assert [k for k in report["kept_init_paths"] if k.startswith("transformer/")] == [
      "transformer/blocks/1/norm2/bias"]
  assert report["kept_init"]["transformer/blocks"]["reason"] == "not in the ViT file: fresh init"


def test_paper_preset_names_the_timm_files():
  from configs import allinone_pretrain  # pylint: disable=import-outside-toplevel
  assert allinone_pretrain.get_config("").init.vit_file == "pretrained/vit_base_patch16_224.pth"
  assert allinone_pretrain.get_config("S").init.vit_file == (
      "pretrained/deit_small_distilled_patch16_224.pth")
  assert allinone_pretrain.get_config("Ti").init.vit_file == "pretrained/deit_tiny_patch16_224.pth"
  assert allinone_pretrain.get_config("tiny").init.vit_file == ""
  assert allinone_pretrain.get_config("").init.bert_dir == ""

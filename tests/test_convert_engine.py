"""Generic converter engine on a toy family: rules, hooks, report, dry run, errors, save/load."""
from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
from flax import nnx

from vlx.convert import engine, hooks
from vlx.convert.errors import ConversionError, ShapeMismatchError, WrongFamilyError
from vlx.convert.store import load_converted, save_converted

pytestmark = pytest.mark.torch  # reads/writes torch checkpoints

D, DEPTH, VOCAB = 8, 2, 11


class Feat(nnx.Variable):
  """Non-Param state (like ALPRO's PromptFeatures): converted like any variable."""


class Block(nnx.Module):
  def __init__(self, d: int, rngs: nnx.Rngs):
    self.query, self.key, self.value = (nnx.Linear(d, d, rngs=rngs) for _ in range(3))
    self.out = nnx.Linear(d, d, rngs=rngs)


class Toy(nnx.Module):
  def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
    d = cfg.width
    self.patch = nnx.Conv(3, d, (2, 2), strides=(2, 2), padding="VALID", rngs=rngs)
    self.tube = nnx.Conv(3, d, (2, 2, 2), strides=(2, 2, 2), padding="VALID", rngs=rngs)
    self.time_embed = nnx.Param(jnp.zeros((1, cfg.frames, d)))
    self.blocks = nnx.List([Block(d, rngs) for _ in range(cfg.depth)])
    self.emb = nnx.Embed(cfg.vocab, d, rngs=rngs)
    self.feat = Feat(jnp.zeros((4, d)))


def _infer(source, variant):
  return ml_collections.ConfigDict(dict(
      family="toy", width=source["emb.weight"].shape[1], vocab=source["emb.weight"].shape[0],
      frames=source["time_embed"].shape[1],
      depth=len({k.split(".")[1] for k in source if k.startswith("blocks.")})))


def _detect(keys):
  if "emb.weight" not in keys:
    raise WrongFamilyError("no emb.weight: not a toy checkpoint")
  return "base"


def _rules(variant, cfg):
  R = engine.Rule
  return [
      R(r"patch\.weight", "patch/kernel", hooks.conv2d), R(r"patch\.bias", "patch/bias"),
      R(r"tube\.weight", "tube/kernel", hooks.conv3d), R(r"tube\.bias", "tube/bias"),
      R(r"time_embed", "time_embed", hooks.resize_nearest(cfg.frames, axis=1)),
      R(r"blocks\.(\d+)\.qkv\.weight",
        tuple(rf"blocks/\1/{n}/kernel" for n in ("query", "key", "value")),
        hooks.chain(hooks.split_qkv(3), hooks.linear)),
      R(r"blocks\.(\d+)\.qkv\.bias", (r"blocks/\1/query/bias", r"blocks/\1/key/bias",
                                       r"blocks/\1/value/bias"), hooks.split_qkv(3)),
      R(r"blocks\.(\d+)\.proj\.weight", r"blocks/\1/out/kernel", hooks.linear),
      R(r"blocks\.(\d+)\.proj\.bias", r"blocks/\1/out/bias"),
      R(r"emb\.weight", "emb/embedding"), R(r"feat", "feat"),
  ]


TOY = types.SimpleNamespace(
    detect_variant=_detect, infer_model_config=_infer, rules=_rules,
    unused=lambda v: {r".*position_ids": "constant buffer 0..L-1"},
    tied=lambda v: [engine.Tied(r"head\.weight", "emb.weight", "decoder weight")])


def toy_source(seed: int = 0, frames: int = 2) -> dict[str, np.ndarray]:
  r = np.random.default_rng(seed)
  f = lambda *s: r.standard_normal(s).astype(np.float32)
  sd = {"patch.weight": f(D, 3, 2, 2), "patch.bias": f(D), "tube.weight": f(D, 3, 2, 2, 2),
        "tube.bias": f(D), "time_embed": f(1, frames, D), "emb.weight": f(VOCAB, D),
        "feat": f(4, D), "position_ids": np.arange(5)[None]}
  for i in range(DEPTH):
    sd |= {f"blocks.{i}.qkv.weight": f(3 * D, D), f"blocks.{i}.qkv.bias": f(3 * D),
           f"blocks.{i}.proj.weight": f(D, D), f"blocks.{i}.proj.bias": f(D)}
  sd["head.weight"] = sd["emb.weight"].copy()
  return sd


def convert(source, **kw):
  return engine.convert_with(TOY, Toy, "toy", source, **kw)


def test_real_conversion_values_and_report():
  sd = toy_source()
  res = convert(sd)
  m = res.model
  assert res.report == {
      "family": "toy", "variant": "base", "mapped": 7 + 4 * DEPTH,
      "unused": {"position_ids": "constant buffer 0..L-1",
                 "head.weight": "decoder weight (tied to emb.weight)"},
      "unmapped": [], "missing": []}
  qkv = sd["blocks.1.qkv.weight"]
  np.testing.assert_array_equal(m.blocks[1].query.kernel[...], qkv[:D].T)
  np.testing.assert_array_equal(m.blocks[1].key.kernel[...], qkv[D:2 * D].T)
  np.testing.assert_array_equal(m.blocks[1].value.kernel[...], qkv[2 * D:].T)
  np.testing.assert_array_equal(m.blocks[0].value.bias[...], sd["blocks.0.qkv.bias"][2 * D:])
  np.testing.assert_array_equal(m.blocks[0].out.kernel[...], sd["blocks.0.proj.weight"].T)
  np.testing.assert_array_equal(m.emb.embedding[...], sd["emb.weight"])
  np.testing.assert_array_equal(m.feat[...], sd["feat"])
  assert m.patch.kernel[...].shape == (2, 2, 3, D)


def test_layouts_match_torch_numerically():
  """Converted conv/conv3d/fused-qkv compute what the torch modules compute."""
  torch.manual_seed(0)
  conv, conv3 = torch.nn.Conv2d(3, D, 2, 2), torch.nn.Conv3d(3, D, 2, 2)
  qkv = torch.nn.Linear(D, 3 * D)
  sd = toy_source()
  sd |= {"patch.weight": conv.weight.detach().numpy(), "patch.bias": conv.bias.detach().numpy(),
         "tube.weight": conv3.weight.detach().numpy(), "tube.bias": conv3.bias.detach().numpy(),
         "blocks.0.qkv.weight": qkv.weight.detach().numpy(),
         "blocks.0.qkv.bias": qkv.bias.detach().numpy()}
  m = convert(sd).model
  x = torch.randn(2, 3, 4, 6, 6)  # N C T H W
  with torch.no_grad():
    ref2, ref3 = conv(x[:, :, 0]), conv3(x)
    q, k, v = qkv(x[:, :2, 0, 0, :4].reshape(-1, D)).chunk(3, dim=-1)
  xn = x.numpy()
  np.testing.assert_allclose(m.patch(xn[:, :, 0].transpose(0, 2, 3, 1)),
                             ref2.numpy().transpose(0, 2, 3, 1), atol=1e-5)
  np.testing.assert_allclose(m.tube(xn.transpose(0, 2, 3, 4, 1)),
                             ref3.numpy().transpose(0, 2, 3, 4, 1), atol=1e-5)
  inp = xn[:, :2, 0, 0, :4].reshape(-1, D)
  for layer, ref in ((m.blocks[0].query, q), (m.blocks[0].key, k), (m.blocks[0].value, v)):
    np.testing.assert_allclose(layer(inp), ref.numpy(), atol=1e-5)


def test_resize_nearest_time_embed_via_config_override():
  sd = toy_source(frames=3)
  res = convert(sd, model_config={"frames": 8})
  got = np.asarray(res.model.time_embed[...])
  expect = sd["time_embed"][:, [0, 0, 0, 1, 1, 1, 2, 2]]  # floor(i * 3 / 8)
  np.testing.assert_array_equal(got, expect)
  assert res.model_config.frames == 8


def test_hooks_by_hand():
  x = np.arange(4 * 2).reshape(1, 4, 2)
  np.testing.assert_array_equal(hooks.resize_nearest(8)(x)[0, :, 0], [0, 0, 2, 2, 4, 4, 6, 6])
  np.testing.assert_array_equal(hooks.resize_nearest(2)(x)[0, :, 0], [0, 4])
  parts = hooks.split_qkv(3)(np.arange(6))
  assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
  assert hooks.conv3d(np.zeros((5, 3, 2, 4, 6))).shape == (2, 4, 6, 3, 5)
  with pytest.raises(ValueError, match="not divisible"):
    hooks.split_qkv(3)(np.zeros(7))


def test_dry_run_matches_real_report():
  sd = toy_source()
  shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in sd.items()}
  dry = convert(shapes, dry_run=True)
  assert dry.model is None
  assert dry.report == convert(sd).report


def test_unmapped_and_missing_are_reported():
  sd = toy_source()
  del sd["blocks.1.proj.bias"]
  sd["blocks.0.extra.weight"] = np.zeros(3, np.float32)
  res = convert(sd)
  assert res.report["unmapped"] == ["blocks.0.extra.weight"]
  assert res.report["missing"] == ["blocks/1/out/bias"]
  assert res.model is None


def test_shape_mismatch_lists_key_expected_got():
  sd = toy_source()
  sd["blocks.1.proj.weight"] = np.zeros((D, D + 1), np.float32)
  with pytest.raises(ShapeMismatchError,
                     match=r"blocks\.1\.proj\.weight -> blocks/1/out/kernel: expected "
                           r"\(8, 8\), got \(9, 8\)"):
    convert(sd)


def test_wrong_family_is_named():
  r = np.random.default_rng(0)
  other = {f"encoder.layers.{i}.w": r.standard_normal(3) for i in range(10)}
  with pytest.raises(WrongFamilyError, match="not a toy checkpoint"):
    convert(other)
  other["emb.weight"] = np.zeros((VOCAB, D), np.float32)  # detects, but most keys match no rule
  other["time_embed"] = np.zeros((1, 2, D), np.float32)
  with pytest.raises(WrongFamilyError, match=r"10 of 12 checkpoint keys match no toy"):
    convert(other)


def test_tied_tensors_must_agree_and_overrides_must_exist():
  sd = toy_source()
  sd["head.weight"] = sd["head.weight"] + 1
  with pytest.raises(ConversionError, match=r"head\.weight should be the same tensor as emb"):
    convert(sd)
  with pytest.raises(ConversionError, match="'nope'"):
    convert(toy_source(), model_config={"nope": 1})


def test_save_and_load_round_trip(tmp_path):
  res = convert(toy_source())
  save_converted(res, tmp_path / "out")
  assert (tmp_path / "out" / "conversion_report.json").is_file()
  cfg, state = load_converted(tmp_path / "out", build=Toy)
  assert cfg.depth == DEPTH and cfg.family == "toy"
  model = nnx.merge(nnx.graphdef(nnx.eval_shape(lambda: Toy(cfg, rngs=nnx.Rngs(0)))), state)
  np.testing.assert_array_equal(model.blocks[1].query.kernel[...],
                                res.model.blocks[1].query.kernel[...])
  np.testing.assert_array_equal(model.feat[...], res.model.feat[...])
  assert isinstance(nnx.state(model, Feat)["feat"], Feat)

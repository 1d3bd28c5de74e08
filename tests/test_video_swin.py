"""Video Swin layer (vlx/layers/video_swin.py) and its converter rules: parity with the VIOLET tiny
fixture's swin_* arrays, the full-size key mapping and config inference from the release manifest,
a slow numpy reference for the temporal shift / padding / odd-merge / sliced-bias paths, remat and
drop path."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlx.convert.engine import abstract_model, map_keys
from vlx.layers import video_swin_rules as vr
from vlx.layers.video_swin import VideoSwin, relative_position_index, shift_mask

SRC = r"enc_img\.swin\."
IMAGENET = (np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225]))  # spec §1
RELEASE = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=(8, 7, 7),
               patch_size=(2, 4, 4), in_chans=3, mlp_ratio=4.0, qkv_bias=True)


def _targets(model: nnx.Module) -> tuple[nnx.GraphDef, list, dict]:
  graphdef, state = nnx.split(model)
  flat = list(nnx.to_flat_state(state))
  return graphdef, flat, {"/".join(map(str, p)): v.get_value() for p, v in flat}


def _load(source: dict, src: str, dst: str = "", **overrides) -> VideoSwin:
  """VideoSwin built from infer_config and filled by the rules (strict: nothing left over)."""
  cfg = {**vr.infer_config(source, src), **overrides}
  graphdef, flat, targets = _targets(nnx.eval_shape(lambda: VideoSwin(**cfg, rngs=nnx.Rngs(0))))
  sub = {k: v for k, v in source.items() if k.startswith(src.replace("\\", ""))}
  m = map_keys(sub, vr.swin(src, dst), targets, unused=vr.unused(src))
  assert (m.unmapped, m.mismatches, m.bad_targets) == ([], [], [])
  assert sorted(set(targets) - set(m.filled)) == []
  new = [(p, v.replace(jnp.asarray(m.filled["/".join(map(str, p))]))) for p, v in flat]
  return nnx.merge(graphdef, nnx.from_flat_state(new))


@pytest.fixture(scope="module")
def tiny_dir(reference_dir):
  return reference_dir / "violet" / "tiny"


@pytest.fixture(scope="module")
def tiny_state(tiny_dir):
  pytest.importorskip("torch")
  from vlx.convert.torch_io import load_state_dict  # pylint: disable=import-outside-toplevel
  return load_state_dict(str(tiny_dir / "checkpoint.pt"))


@pytest.mark.torch
def test_tiny_fixture_parity(tiny_dir, tiny_state, fast_jit):
  cfg = vr.infer_config(tiny_state, SRC)
  assert cfg == dict(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                     window_size=(8, 3, 3), patch_size=(2, 4, 4), in_chans=3, mlp_ratio=4.0,
                     qkv_bias=True)
  model = _load(tiny_state, SRC)
  inputs, outputs = np.load(tiny_dir / "inputs.npz"), np.load(tiny_dir / "outputs.npz")
  video = inputs["video_pt_masked"].transpose(0, 1, 3, 4, 2)               # [B, T, H, W, 3]
  video = (video - IMAGENET[0]) / IMAGENET[1]
  out, stages = fast_jit(lambda m, v: m(v, return_stages=True))(model, jnp.asarray(video))
  stages["out"] = out
  assert out.shape == (3, 3, 3, 3, model.out_dim) and model.out_dim == 64
  for name in ("patch_embed", "stage0", "stage1", "stage2", "stage3", "out"):
    ref = outputs["swin_" + name].transpose(0, 2, 3, 4, 1)                 # channels-last
    np.testing.assert_allclose(np.asarray(stages[name]), ref, atol=1e-4, rtol=1e-4,
                               err_msg=name)


@pytest.mark.torch
def test_tiny_index_buffers_are_checked(tiny_state):
  bad = dict(tiny_state)
  key = "enc_img.swin.layers.1.blocks.0.attn.relative_position_index"
  bad[key] = bad[key].copy()
  bad[key][0, 1] += 1
  with pytest.raises(ValueError, match="layers.1.blocks.0.attn.relative_position_index differs"):
    vr.infer_config(bad, SRC)


def _manifest_shapes(reference_dir, name: str = "video-swin") -> dict:
  m = json.loads((reference_dir / "violet" / f"manifest_{name}.json").read_text())
  return {p["key"]: jax.ShapeDtypeStruct(tuple(p["shape"]), np.dtype(p["dtype"]))
          for p in m["params"]}


def test_release_manifest_maps_every_key(reference_dir):
  shapes = _manifest_shapes(reference_dir)
  cfg = vr.infer_config(shapes, "")
  assert cfg == RELEASE
  model = abstract_model(lambda c, rngs: VideoSwin(**c, rngs=rngs), cfg)
  assert model.out_dim == 768
  _, _, targets = _targets(model)
  prefixed = {"enc_img.swin." + k: v for k, v in shapes.items()}    # as inside a VIOLET file
  for source, src, dst in ((shapes, "", ""), (prefixed, SRC, "video/")):
    tg = {dst + k: v for k, v in targets.items()}
    m = map_keys(source, vr.swin(src, dst), tg, unused=vr.unused(src), dry_run=True)
    assert (m.unmapped, m.mismatches, m.bad_targets) == ([], [], [])
    assert sorted(set(tg) - set(m.filled)) == []
    assert len(m.unused) == 24 and m.mapped == len(shapes) - 24
  assert vr.infer_config(_manifest_shapes(reference_dir, "pretrain"), SRC) == RELEASE
  n_params = sum(int(np.prod(v.shape)) for v in targets.values())
  assert n_params == json.loads((reference_dir / "violet" / "manifest_video-swin.json")
                                .read_text())["total_params"]


def test_window_inference_from_index_values():
  # the shapes of an (8,7,7) and a (7,8,7) window agree; the index values tell them apart
  for window in ((8, 7, 7), (7, 8, 7), (2, 3, 5)):
    source = {"layers.0.blocks.0.attn.relative_position_bias_table":
                  np.zeros((int(np.prod([2 * w - 1 for w in window])), 1), np.float32),
              "layers.0.blocks.0.attn.relative_position_index": relative_position_index(window)}
    assert vr.infer_window(source, "") == window


# ----------------------------------------------------------------------------- numpy reference

def _ln(x, p, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _lin(x, p):
  return x @ p["kernel"] + (p["bias"] if "bias" in p else 0.0)


def _gelu(x):
  from scipy.special import erf  # pylint: disable=import-outside-toplevel
  return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _ref_window_attention(x, p, heads, cfg_window, win, shift):
  """x [D, H, W, C] (normalised, padded, rolled). Windows by explicit loops; the bias index of
  flattened token i uses its coordinates in the CONFIGURED window (the reference's [:N, :N])."""
  dp, hp, wp, c = x.shape
  n = int(np.prod(win))
  # region labels exactly as the reference's cnt over slices
  label = np.zeros((dp, hp, wp))
  cnt = 0
  sl = lambda w, s: (slice(-w), slice(-w, -s), slice(-s, None))   # s == 0: the last is all
  if any(shift):
    for d in sl(win[0], shift[0]):
      for h in sl(win[1], shift[1]):
        for w in sl(win[2], shift[2]):
          label[d, h, w] = cnt
          cnt += 1
  ci = np.stack(np.unravel_index(np.arange(n), cfg_window), -1)          # [n, 3]
  rel = ci[:, None] - ci[None] + np.asarray(cfg_window) - 1
  sizes = 2 * np.asarray(cfg_window) - 1
  idx = rel[..., 0] * sizes[1] * sizes[2] + rel[..., 1] * sizes[2] + rel[..., 2]
  bias = p["relative_position_bias_table"][idx]                          # [n, n, heads]
  out = np.zeros_like(x)
  hd = c // heads
  for d0 in range(0, dp, win[0]):
    for h0 in range(0, hp, win[1]):
      for w0 in range(0, wp, win[2]):
        sel = (slice(d0, d0 + win[0]), slice(h0, h0 + win[1]), slice(w0, w0 + win[2]))
        tok = x[sel].reshape(n, c)
        lab = label[sel].reshape(n)
        q, k, v = (_lin(tok, p[name]) for name in ("query", "key", "value"))
        o = np.zeros((n, c))
        for hh in range(heads):
          s = slice(hh * hd, (hh + 1) * hd)
          a = (q[:, s] * hd ** -0.5) @ k[:, s].T + bias[:, :, hh]
          if any(shift):
            a = a + np.where(lab[:, None] == lab[None], 0.0, -100.0)
          a = np.exp(a - a.max(-1, keepdims=True))
          o[:, s] = (a / a.sum(-1, keepdims=True)) @ v[:, s]
        out[sel] = _lin(o, p["out"]).reshape(x[sel].shape)
  return out


def _ref_block(x, p, heads, cfg_window, odd):
  size = x.shape[:3]
  win = [min(s, w) for s, w in zip(size, cfg_window)]
  shift = [0 if s <= w else (w // 2 if odd else 0) for s, w in zip(size, cfg_window)]
  h = _ln(x, p["norm1"])
  pad = [(-s) % w for s, w in zip(size, win)]
  h = np.pad(h, [(0, pad[0]), (0, pad[1]), (0, pad[2]), (0, 0)])
  h = np.roll(h, [-s for s in shift], axis=(0, 1, 2))
  h = _ref_window_attention(h, p["attn"], heads, cfg_window, win, shift)
  h = np.roll(h, shift, axis=(0, 1, 2))[:size[0], :size[1], :size[2]]
  x = x + h
  m = p["mlp"]
  return x + _lin(_gelu(_lin(_ln(x, p["norm2"]), m["fc1"])), m["fc2"])


def _ref_swin(video, p, cfg):
  """One sample [T, H, W, 3] -> per-stage outputs, written from spec §2.2 without vlx helpers."""
  t, hh, ww, _ = video.shape
  x = np.pad(video, [(0, 1), (0, (-hh) % 4), (0, (-ww) % 4), (0, 0)])
  kern = p["patch_embed"]["proj"]["kernel"]                              # [2, 4, 4, 3, C]
  gh, gw = x.shape[1] // 4, x.shape[2] // 4
  emb = np.zeros((t, gh, gw, kern.shape[-1]))
  for d in range(t):
    for i in range(gh):
      for j in range(gw):
        emb[d, i, j] = np.einsum("abcx,abcxo->o", x[d:d + 2, 4 * i:4 * i + 4, 4 * j:4 * j + 4],
                                 kern)
  x = _ln(emb + p["patch_embed"]["proj"]["bias"], p["patch_embed"]["norm"])
  outs = {"patch_embed": x}
  for i, depth in enumerate(cfg["depths"]):
    lp = p["layers"][i]
    for j in range(depth):
      x = _ref_block(x, lp["blocks"][j], cfg["num_heads"][i], cfg["window_size"], j % 2 == 1)
    if "downsample" in lp:
      x = np.pad(x, [(0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)])
      x = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                          x[:, 1::2, 1::2]], -1)
      x = _ln(x, lp["downsample"]["norm"]) @ lp["downsample"]["reduction"]["kernel"]
    outs[f"stage{i}"] = x
  outs["out"] = _ln(x, p["norm"])
  return outs


def _random_model(seed: int, **cfg) -> tuple[VideoSwin, dict]:
  """A VideoSwin whose parameters are O(1) random draws (norm scales around 1) so that attention,
  bias and masks all matter, built without running the initialisers (no eager compiles); also
  the parameters as a nested numpy dict (float64) for the reference."""
  rng = np.random.default_rng(seed)

  def draw(path, x):
    name = path[-1].key
    scale = 1.0 if name == "relative_position_bias_table" else 0.3
    return rng.normal(size=x.shape) * scale + (1.0 if name == "scale" else 0.0)

  graphdef, state = nnx.split(nnx.eval_shape(lambda: VideoSwin(**cfg, rngs=nnx.Rngs(0))))
  pure = jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state))
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), pure))
  return nnx.merge(graphdef, state), pure


SMALL = dict(embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 2), window_size=(8, 4, 4),
             drop_path_rate=0.0)


def test_temporal_shift_padding_and_sliced_bias_match_numpy_reference(fast_jit):
  """T=10 > window 8: temporal shift 4 and time padding to 16; H=18 pads the patch grid (5 rows),
  the odd merge pads 5 -> 6 and 3 -> 4; stage 1 (3x3) clips the spatial window to 3 (bias index
  sliced from the configured (8,4,4) one)."""
  model, params = _random_model(0, **SMALL)
  video = np.random.default_rng(1).normal(size=(2, 10, 18, 24, 3)).astype(np.float32)
  out, stages = fast_jit(lambda m, v: m(v, return_stages=True))(model, jnp.asarray(video))
  assert [stages[k].shape for k in ("patch_embed", "stage0", "stage1", "stage2")] == [
      (2, 10, 5, 6, 8), (2, 10, 3, 3, 16), (2, 10, 2, 2, 32), (2, 10, 2, 2, 32)]
  assert shift_mask((16, 8, 8), (8, 4, 4), (4, 2, 2)).min() == -100.0   # the mask is active
  ref = _ref_swin(video[1].astype(np.float64), params, SMALL)
  stages["out"] = out
  for name, value in ref.items():
    np.testing.assert_allclose(np.asarray(stages[name][1]), value, atol=1e-4, rtol=1e-4,
                               err_msg=name)


def test_remat_and_drop_path(fast_jit):
  cfg = dict(embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=(2, 2, 2),
             drop_path_rate=0.5)
  video = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3, 8, 8, 3)), jnp.float32)
  plain, _ = _random_model(0, **cfg)
  remat, _ = _random_model(0, **cfg, remat=True)
  run = lambda m, v: (m(v), m(v, deterministic=False, rngs=nnx.Rngs(dropout=3)))
  (e1, t1), (e2, t2) = fast_jit(run)(plain, video), fast_jit(run)(remat, video)
  np.testing.assert_allclose(np.asarray(e2), np.asarray(e1), atol=1e-6)
  np.testing.assert_allclose(np.asarray(t2), np.asarray(t1), atol=1e-6)
  assert not np.allclose(np.asarray(t1), np.asarray(e1), atol=1e-3)   # drop path is active
  rates = [b.drop_path for layer in plain.layers for b in layer.blocks]
  np.testing.assert_allclose(rates, np.linspace(0, 0.5, 4))
  with pytest.raises(ValueError, match="drop_path needs rngs"):
    nnx.eval_shape(lambda m, v: m(v, deterministic=False), plain, video)


def test_bf16_compute_keeps_fp32_params():
  model = nnx.eval_shape(lambda: VideoSwin(**SMALL, dtype="bfloat16", rngs=nnx.Rngs(0)))
  out = nnx.eval_shape(lambda m, v: m(v), model, jax.ShapeDtypeStruct((1, 4, 32, 32, 3),
                                                                      jnp.float32))
  assert (out.shape, out.dtype) == ((1, 4, 2, 2, 32), jnp.bfloat16)
  dtypes = {v.dtype for v in jax.tree.leaves(nnx.state(model, nnx.Param))}
  assert dtypes == {jnp.dtype(jnp.float32)}

"""CLIP towers (vlx/layers/clip.py) and rules (clip_rules.py) against a real open_clip fixture."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import _fast_jit
from vlx.convert import engine, torch_io, torchscript
from vlx.layers import clip, clip_rules, common

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "clip_tiny")
TINY = dict(embed_dim=24, image_size=32, patch_size=8, vision_width=64, vision_layers=2,
            vision_heads=4, context_length=16, vocab_size=200, text_width=32, text_layers=2,
            text_heads=2, vision_mlp_dim=256, text_mlp_dim=128, activation="quick_gelu")


def _forward(m, images, ids):
  return {"image_features": m.encode_image(images), "text_features": m.encode_text(ids),
          "logits_per_image": m(images, ids), "text_tokens": m.text.token_features(ids)}


FORWARD = _fast_jit(_forward)           # one compile per model structure


@pytest.fixture(scope="module")
def tiny():
  sd = torch_io.load_state_dict(os.path.join(FIXTURE, "checkpoint.pt"))
  model = clip_rules.load(sd, variant="openai", head_width=16)
  inputs = dict(np.load(os.path.join(FIXTURE, "inputs.npz")))
  outputs = dict(np.load(os.path.join(FIXTURE, "outputs.npz")))
  return sd, model, inputs, outputs


@pytest.mark.parametrize("variant,outputs", [("openai", "outputs.npz"),
                                             ("open_clip", "outputs_gelu.npz")])
def test_parity_with_open_clip(tiny, variant, outputs):
  """QuickGELU (OpenAI) and GELU (open_clip configs) builds of the same weights."""
  sd, model, inp, _ = tiny
  if variant != "openai":
    model = clip_rules.load(sd, variant=variant, head_width=16)
  out = dict(np.load(os.path.join(FIXTURE, outputs)))
  got = FORWARD(model, inp["images"], inp["text_ids"])
  assert set(got) == set(out)
  for name, value in got.items():
    np.testing.assert_allclose(np.asarray(value), out[name], atol=1e-4, rtol=1e-4, err_msg=name)


def test_map_keys_tiny_complete(tiny):
  sd = tiny[0]
  abstract = nnx.eval_shape(lambda: clip.build(TINY, rngs=nnx.Rngs(0)))
  targets = {"/".join(map(str, p)): v.get_value()
             for p, v in nnx.to_flat_state(nnx.state(abstract))}
  m = engine.map_keys(sd, clip_rules.rules(), targets, unused=clip_rules.unused())
  m.check("", "bad targets")
  assert not m.unmapped and set(targets) == set(m.filled)


def test_infer_config_tiny(tiny):
  assert clip_rules.infer_config(tiny[0], head_width=16) == TINY
  with pytest.raises(ValueError, match="head_width"):
    clip_rules.infer_config(tiny[0])           # 32-wide text is not a multiple of 64
  with pytest.raises(ValueError, match="variant"):
    clip_rules.infer_config(tiny[0], head_width=16, variant="siglip")
  with pytest.raises(ValueError, match="not a ViT CLIP"):
    clip_rules.infer_config({"visual.layer1.0.conv1.weight": np.zeros((64, 64, 1, 1))})


def _vit_b32_keys(*, jit_scalars: bool, linear_text_proj: bool) -> dict[str, jax.ShapeDtypeStruct]:
  """Every key of OpenAI's ViT-B/32 state dict (shapes only)."""
  f = lambda *s: jax.ShapeDtypeStruct(s, np.float32)
  keys = {"visual.conv1.weight": f(768, 3, 32, 32), "visual.class_embedding": f(768),
          "visual.positional_embedding": f(50, 768), "visual.proj": f(768, 512),
          "token_embedding.weight": f(49408, 512), "positional_embedding": f(77, 512),
          "logit_scale": f()}
  for n, w in (("visual.ln_pre", 768), ("visual.ln_post", 768), ("ln_final", 512)):
    keys |= {f"{n}.weight": f(w), f"{n}.bias": f(w)}
  for pre, w in (("visual.transformer", 768), ("transformer", 512)):
    for i in range(12):
      b = f"{pre}.resblocks.{i}."
      keys |= {b + "attn.in_proj_weight": f(3 * w, w), b + "attn.in_proj_bias": f(3 * w),
               b + "attn.out_proj.weight": f(w, w), b + "attn.out_proj.bias": f(w),
               b + "mlp.c_fc.weight": f(4 * w, w), b + "mlp.c_fc.bias": f(4 * w),
               b + "mlp.c_proj.weight": f(w, 4 * w), b + "mlp.c_proj.bias": f(w)}
      for ln in ("ln_1", "ln_2"):
        keys |= {b + ln + ".weight": f(w), b + ln + ".bias": f(w)}
  if linear_text_proj:
    keys["text_projection.weight"] = f(512, 512)
  else:
    keys["text_projection"] = f(512, 512)
  if jit_scalars:
    keys |= {k: jax.ShapeDtypeStruct((), np.int64)
             for k in ("input_resolution", "context_length", "vocab_size")}
  return keys


@pytest.mark.parametrize("variant,jit_scalars,linear_text_proj",
                         [("openai", True, False), ("open_clip", False, True)])
def test_vit_b32_key_set_maps_completely(variant, jit_scalars, linear_text_proj):
  keys = _vit_b32_keys(jit_scalars=jit_scalars, linear_text_proj=linear_text_proj)
  cfg = clip_rules.infer_config(keys, variant=variant)
  assert cfg == dict(embed_dim=512, image_size=224, patch_size=32, vision_width=768,
                     vision_layers=12, vision_heads=12, context_length=77, vocab_size=49408,
                     text_width=512, text_layers=12, text_heads=8, vision_mlp_dim=3072,
                     text_mlp_dim=2048,
                     activation=clip_rules.VARIANTS[variant])
  abstract = engine.abstract_model(clip.build, cfg)
  targets = {"/".join(map(str, p)): v.get_value()
             for p, v in nnx.to_flat_state(nnx.state(abstract))}
  m = engine.map_keys(keys, clip_rules.rules(variant=variant), targets,
                      unused=clip_rules.unused(variant=variant), dry_run=True)
  m.check("", "bad targets")
  assert m.unmapped == [] and sorted(set(targets) - set(m.filled)) == []
  assert len(m.unused) == (3 if jit_scalars else 0)
  n_params = sum(int(np.prod(v.shape)) for v in targets.values())
  assert n_params == 151_277_313                 # OpenAI ViT-B/32's parameter count
  graphdef, state = nnx.split(abstract)
  logits = jax.eval_shape(lambda st, x, t: nnx.merge(graphdef, st)(x, t), state,
                          jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32),
                          jax.ShapeDtypeStruct((3, 77), jnp.int32))
  assert logits.shape == (2, 3)


def test_prefixed_source_maps():
  """rules(src, dst) place a CLIP inside a larger checkpoint / model tree."""
  keys = {"clip_model." + k: v for k, v in _vit_b32_keys(jit_scalars=False,
                                                          linear_text_proj=False).items()}
  cfg = clip_rules.infer_config(keys, "clip_model.")
  assert cfg["vision_layers"] == 12 and cfg["text_layers"] == 12
  targets = {"enc/" + "/".join(map(str, p)): v.get_value() for p, v in
             nnx.to_flat_state(nnx.state(engine.abstract_model(clip.build, cfg)))}
  m = engine.map_keys(keys, clip_rules.rules(r"clip_model\.", "enc/"), targets, dry_run=True)
  m.check("", "bad targets")
  assert not m.unmapped and set(targets) == set(m.filled)


def test_torchscript_archive_is_refused_with_a_clear_error(tmp_path):
  """OpenAI's released .pt files are TorchScript archives: torch_io does not execute them."""
  torch = pytest.importorskip("torch")
  path = str(tmp_path / "jit.pt")
  torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
  with pytest.warns(UserWarning), pytest.raises(Exception, match="TorchScript"):
    torch_io.load_state_dict(path)


def test_torchscript_archive_reads_as_data(tiny):
  """The traced open_clip archive (OpenAI's release format) reads without torch.jit and gives the
  same tensors, plus the `attn_mask` constant that the rules drop, and the same outputs."""
  sd, _, inp, out = tiny
  jit = clip_rules.read_checkpoint(os.path.join(FIXTURE, "checkpoint_jit.pt"))
  assert set(jit) == set(sd) | {"attn_mask"}
  for key, value in sd.items():
    np.testing.assert_array_equal(jit[key], value, err_msg=key)
  got = FORWARD(clip_rules.load(jit, head_width=16), inp["images"], inp["text_ids"])
  np.testing.assert_allclose(np.asarray(got["logits_per_image"]), out["logits_per_image"],
                             atol=1e-4, rtol=1e-4)


def test_torchscript_half_weights_and_views(tmp_path):
  torch = pytest.importorskip("torch")

  class Tree(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
      self.register_buffer("view", torch.arange(12.0).reshape(3, 4).t())   # strided view

    def forward(self, x):
      return self.body(x)

  model = torch.jit.script(Tree().half())
  path = str(tmp_path / "half.pt")
  model.save(path)
  got = torchscript.load_state_dict(path)
  ref = model.state_dict()
  assert set(got) == set(ref)
  for key, value in ref.items():
    assert got[key].dtype == np.float32
    np.testing.assert_array_equal(got[key], value.float().numpy(), err_msg=key)


def test_torchscript_reader_refuses_other_globals(tmp_path):
  """A data.pkl that names anything but module classes, storages and the tensor rebuild is
  refused before the global is called."""
  import zipfile
  path = str(tmp_path / "evil.pt")
  payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("evil/data.pkl", payload)
    z.writestr("evil/code/__torch__/m.py", "")
  assert torchscript.is_torchscript(path)
  with pytest.raises(torch_io.UnsafeCheckpointError, match="os.system"):
    clip_rules.read_checkpoint(path)


def test_bicubic_resize_matches_torch_antialias():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  pos = rng.standard_normal((7 * 7, 5)).astype(np.float32)
  for grid in (14, 10, 5, 3):
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(pos.reshape(1, 7, 7, 5)).permute(0, 3, 1, 2), size=(grid, grid),
        mode="bicubic", antialias=True, align_corners=False)
    ref = ref.permute(0, 2, 3, 1).reshape(grid * grid, 5).numpy()
    np.testing.assert_allclose(clip.resize_grid_bicubic(pos, grid), ref, atol=1e-5,
                               err_msg=f"grid {grid}")
    np.testing.assert_allclose(np.asarray(clip.resize_grid_bicubic(jnp.asarray(pos), grid)), ref,
                               atol=1e-5)


def test_other_image_size_uses_resized_table(tiny):
  _, model, inp, _ = tiny
  big = np.repeat(np.repeat(inp["images"][:1], 2, axis=1), 2, axis=2)   # 64 px: grid 8 from 4
  feats = _fast_jit(lambda m, x: m.encode_image(x))(model, big)
  assert feats.shape == (1, 24) and bool(jnp.all(jnp.isfinite(feats)))
  with pytest.raises(ValueError, match="square"):
    model.encode_image(np.zeros((1, 32, 64, 3), np.float32))


def test_text_is_causal_and_reads_eot(tiny):
  _, model, inp, _ = tiny
  ids = inp["text_ids"].copy()                      # row 0: EOT at position 4
  first = FORWARD(model, inp["images"], ids)
  changed = ids.copy()
  changed[0, 6:] = 7                                # after EOT: no effect on positions <= 5
  second = FORWARD(model, inp["images"], changed)
  tok, tok2 = np.asarray(first["text_tokens"]), np.asarray(second["text_tokens"])
  np.testing.assert_allclose(tok2[0, :6], tok[0, :6], atol=1e-6)
  assert not np.allclose(tok2[0, 6:], tok[0, 6:])
  np.testing.assert_allclose(np.asarray(first["text_features"])[0], tok[0, 4], atol=1e-5)
  with pytest.raises(ValueError, match="context length"):
    model.encode_text(np.zeros((1, 17), np.int32))


def test_bf16(tiny):
  sd, _, inp, out = tiny
  lo = clip_rules.load(sd, head_width=16, dtype=jnp.bfloat16)
  feats = _fast_jit(lambda m, x: m.encode_image(x))(lo, inp["images"])
  assert feats.dtype == jnp.bfloat16
  assert lo.visual.proj[...].dtype == jnp.float32      # master weights stay f32
  np.testing.assert_allclose(np.asarray(feats, np.float32), out["image_features"], atol=0.1)


def test_remat_same_gradients(tiny):
  _, model, inp, _ = tiny
  rm = clip.ClipTextTower(clip.ClipConfig(**TINY), remat=True, rngs=nnx.Rngs(0))
  nnx.update(rm, nnx.state(model.text))

  def grads(m, ids):
    g = nnx.grad(lambda mm: jnp.sum(mm(ids) ** 2))(m)
    return g.token_embedding.embedding[...], g.blocks[0].attn.query.kernel[...]
  step = _fast_jit(grads)
  for a, b in zip(step(rm, inp["text_ids"]), step(model.text, inp["text_ids"])):
    scale = float(jnp.abs(b).max())
    assert scale > 0
    # fp32 reassociation noise scales with the tensor (entries up to ~80 here): 1e-6 of it.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6 * scale, rtol=1e-4)


def test_quick_gelu_and_normalisation():
  x = jnp.asarray([-2.0, 0.0, 1.0])
  np.testing.assert_allclose(common.activation("quick_gelu")(x),
                             np.asarray(x) / (1 + np.exp(-1.702 * np.asarray(x))), rtol=1e-6)
  white = clip.normalize_images(jnp.ones((1, 1, 3)))
  np.testing.assert_allclose(white[0, 0], (1 - np.array(clip.IMAGE_MEAN)) / clip.IMAGE_STD,
                             rtol=1e-6)


def test_preprocess_matches_pil_clip_transform():
  """Resize(shorter side, bicubic) + CenterCrop + normalisation as CLIP's PIL transform, within
  about one grey level (PIL rounds to uint8 between its two passes)."""
  image = pytest.importorskip("PIL.Image")
  rng = np.random.default_rng(0)
  frames = np.stack([np.asarray(image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8))
                                .resize((80, 60), image.BILINEAR)) for _ in range(2)])

  def reference(img, s=32):
    im = image.fromarray(img)
    w, h = im.size
    nw, nh = (int(s * w / h), s) if h <= w else (s, int(s * h / w))
    im = im.resize((nw, nh), image.BICUBIC)
    top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
    a = np.asarray(im.crop((left, top, left + s, top + s)), np.float32) / 255.0
    return (a - np.array(clip.IMAGE_MEAN)) / np.array(clip.IMAGE_STD)

  ours = np.asarray(clip.preprocess(frames, 32))
  ref = np.stack([reference(f) for f in frames])
  assert ours.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(ours, ref, atol=2 / 255 / min(clip.IMAGE_STD))
  portrait = np.asarray(clip.preprocess(frames.transpose(0, 2, 1, 3), 32))
  np.testing.assert_allclose(portrait, np.stack([reference(f) for f in
                                                 frames.transpose(0, 2, 1, 3)]),
                             atol=2 / 255 / min(clip.IMAGE_STD))


def test_image_features_batches_frames(tiny):
  _, model, _, _ = tiny
  frames = np.random.default_rng(1).integers(0, 256, (5, 40, 48, 3), np.uint8)
  got = clip.image_features(model, frames, batch_size=2)          # 3 batches, the last padded
  encode = _fast_jit(lambda m, x: common.l2_normalize(m.encode_image(clip.preprocess(x, 32))))
  ref = np.asarray(encode(model, frames))
  assert got.shape == (5, 24) and got.dtype == np.float32
  np.testing.assert_allclose(got, ref, atol=1e-5)
  assert clip.image_features(model, frames[:0]).shape == (0, 24)


def _tiny_bpe(tmp_path) -> str:
  path = str(tmp_path / "bpe.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write("#version: 0.2\nt h\nth e</w>\nc a\nca t</w>\n")
  return path


def test_tokenizer_on_a_tiny_vocabulary(tmp_path):
  from vlx.layers.clip_tokenizer import ClipTokenizer
  tok = ClipTokenizer(_tiny_bpe(tmp_path))
  # ids: 256 byte symbols, 256 with '</w>', merges th=512 the</w>=513 ca=514 cat</w>=515, SOT, EOT
  assert (tok.vocab_size, tok.sot, tok.eot) == (518, 516, 517)
  ids = tok(["The  CAT", "a!", "the &amp;"], context_length=6)
  np.testing.assert_array_equal(ids, [[516, 513, 515, 517, 0, 0],
                                      [516, 256 + 64, 256, 517, 0, 0],       # 'a</w>', '!</w>'
                                      [516, 513, 256 + 5, 517, 0, 0]])       # html: '&</w>'
  np.testing.assert_array_equal(tok("the cat the", context_length=3), [[516, 513, 517]])
  with pytest.raises(ValueError, match="context length"):
    tok("the cat the", context_length=3, truncate=False)


def test_tokenizer_matches_open_clip_on_the_real_vocabulary():
  """Ids made by open_clip's SimpleTokenizer (fixture); needs the user's vocabulary file."""
  path = os.environ.get("VLX_CLIP_BPE", "")
  if not os.path.isfile(path):
    pytest.skip("set VLX_CLIP_BPE to bpe_simple_vocab_16e6.txt.gz to run")
  from vlx.layers.clip_tokenizer import ClipTokenizer
  ref = np.load(os.path.join(FIXTURE, "tokenizer_reference.npz"))
  np.testing.assert_array_equal(ClipTokenizer(path)(list(ref["texts"])), ref["ids"])


def test_word_features_drop_sot_and_mask_eot(tiny):
  _, model, inp, out = tiny
  ids = inp["text_ids"]                                  # EOT at positions 4, 15, 8
  feats, mask = _fast_jit(lambda m, x: clip.word_features(m.text, x, 20))(model, ids)
  assert feats.shape == (3, 20, 24) and mask.shape == (3, 20)
  np.testing.assert_array_equal(np.asarray(mask).sum(1), [3, 14, 7])
  np.testing.assert_allclose(np.asarray(feats)[:, :15], out["text_tokens"][:, 1:], atol=1e-4)
  assert not np.asarray(feats)[:, 15:].any()


def test_build_refuses_unknown_fields():
  with pytest.raises(ValueError, match="mlp_ratio"):
    clip.build({**TINY, "mlp_ratio": 4.0}, rngs=nnx.Rngs(0))

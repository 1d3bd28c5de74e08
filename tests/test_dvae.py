"""DALL-E dVAE encoder (vlx/layers/dvae.py): parity with the reference tiny_dalle fixture from both
weight files, converter rules over the released key set, jit/eager and bf16 tokens."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlx.convert import engine
from vlx.convert.errors import WrongFamilyError
from vlx.layers import dvae, dvae_rules
from vlx.models.violet import dalle_fixture

ARRAYS = ("logits", "act_input", "act_group_1", "act_group_2", "act_group_3", "act_group_4")


@pytest.fixture(scope="module")
def fixture_dir(reference_dir):
  return reference_dir / "violet" / "tiny_dalle"


@pytest.fixture(scope="module")
def encoder(fixture_dir):
  return dalle_fixture.load_encoder(fixture_dir / "encoder.pkl")


@pytest.fixture(scope="module")
def pixels(fixture_dir):
  return np.load(fixture_dir / "inputs.npz")["pixels"].transpose(0, 2, 3, 1)


@pytest.mark.parametrize("weights", ["encoder.pkl", "encoder_state_dict.pt"])
def test_fixture_parity(fixture_dir, weights):
  want = dict(np.load(fixture_dir / "outputs.npz"))
  got = dalle_fixture.compute_outputs(fixture_dir, weights=fixture_dir / weights)
  assert set(got) == set(want)
  for name in ARRAYS:
    assert got[name].shape == want[name].shape, name
    np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=1e-4, err_msg=name)
  assert got["tokens"].dtype == np.int64
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_allclose(got["top2_gap_min"], want["top2_gap_min"], atol=1e-5)


def test_map_pixels(fixture_dir):
  x = np.load(fixture_dir / "inputs.npz")
  np.testing.assert_allclose(np.asarray(dvae.map_pixels(x["pixels"])), x["mapped"], atol=1e-7)


def test_release_keys_map_with_abstract_shapes(reference_dir):
  """Every key of the released encoder.pkl state dict maps onto the release-size encoder (shapes
  only: nothing allocated), and the sizes are read from the shapes."""
  manifest = json.loads((reference_dir / "violet" / "manifest_dalle_encoder.json").read_text())
  source = {p["key"]: jax.ShapeDtypeStruct(tuple(p["shape"]), np.float32)
            for p in manifest["params"]}
  assert set(source) == set(manifest["top_level_keys"])
  cfg = dvae_rules.infer_config(source)
  assert cfg == dict(n_hid=256, n_blk_per_group=2, input_channels=3, vocab_size=8192,
                     group_count=4)
  model = engine.abstract_model(lambda c, rngs: dvae.DalleEncoder(**c, rngs=rngs), cfg)
  targets = {"/".join(map(str, p)): v.get_value()
             for p, v in nnx.to_flat_state(nnx.state(model))}
  m = engine.map_keys(source, dvae_rules.encoder("", ""), targets, dry_run=True)
  m.check("", "bad targets")
  assert not m.unmapped and set(m.filled) == set(targets)
  assert sum(int(np.prod(v.shape)) for v in targets.values()) == manifest["total_params"]
  # a prefixed copy (an encoder nested in a bigger model) maps the same way
  nested = engine.map_keys({"dvae." + k: v for k, v in source.items()},
                           dvae_rules.encoder(r"dvae\.", "dvae/"),
                           {"dvae/" + k: v for k, v in targets.items()}, dry_run=True)
  assert not nested.unmapped and len(nested.filled) == len(targets)
  assert dvae_rules.infer_config({"dvae." + k: v for k, v in source.items()}, "dvae.") == cfg


def test_infer_config_rejects_other_state_dicts():
  with pytest.raises(WrongFamilyError, match="blocks.input.w"):
    dvae_rules.infer_config({"encoder.weight": np.zeros((2, 2))})


def test_tokens_jit_equals_eager(encoder, pixels, fixture_dir):
  want = np.load(fixture_dir / "outputs.npz")["tokens"]
  logits = dalle_fixture.outputs(encoder, dvae.map_pixels(pixels))["logits"]  # NCHW
  eager = np.argmax(logits, axis=1)
  jitted = np.asarray(nnx.jit(dvae.tokens)(encoder, jnp.asarray(pixels)))
  assert jitted.dtype == np.int32 and jitted.shape == (3, 4, 4)
  np.testing.assert_array_equal(jitted, eager)
  np.testing.assert_array_equal(jitted, want)


def test_frame_tokens(encoder, pixels, fixture_dir):
  """Frames at the token size are tokenised as they are; larger frames are resized (bilinear,
  antialiased) first; (B, T) order is kept."""
  want = np.load(fixture_dir / "outputs.npz")["tokens"]
  tok = dvae.tokenizer(encoder, grid=4)
  video = np.stack([pixels, pixels[::-1]])  # [B=2, T=3, 32, 32, 3]
  got = np.asarray(tok(video))
  assert got.shape == (2, 3, 4, 4) and got.dtype == np.int32
  np.testing.assert_array_equal(got, np.stack([want, want[::-1]]))
  big = np.repeat(np.repeat(video, 2, axis=2), 2, axis=3)  # 64 px
  small = jax.image.resize(big.reshape(6, 64, 64, 3), (6, 32, 32, 3), "bilinear", antialias=True)
  small = np.asarray(small).reshape(video.shape)
  np.testing.assert_allclose(np.asarray(dvae.resize_frames(jnp.asarray(big), 32)), small,
                             atol=1e-6)
  np.testing.assert_array_equal(np.asarray(tok(big)), np.asarray(tok(small)))


def test_bf16_runs(fixture_dir, capsys):
  """bf16 convolutions (output conv float32): logits stay float32, most tokens agree with the
  float32 reference (the fixture's smallest top-1/top-2 margin is only 1.2e-3)."""
  want = np.load(fixture_dir / "outputs.npz")["tokens"]
  enc = dalle_fixture.load_encoder(fixture_dir / "encoder_state_dict.pt", dtype="bfloat16")
  mapped = jnp.asarray(dalle_fixture.fixture_inputs(fixture_dir))
  logits, acts = nnx.jit(lambda m, x: m(x, return_activations=True))(enc, mapped)
  assert logits.dtype == jnp.float32 and acts["group_4"].dtype == jnp.bfloat16
  got = np.asarray(jnp.argmax(logits, -1))
  differ = int((got != want).sum())
  with capsys.disabled():
    print(f"\nbf16 dVAE tokens differing from the fp32 reference: {differ}/{want.size}")
  assert differ <= want.size // 4


def test_fixture_config_must_agree(fixture_dir, tmp_path):
  """config.json is optional, but a config that contradicts the weight shapes is an error."""
  (tmp_path / "encoder_state_dict.pt").symlink_to(fixture_dir / "encoder_state_dict.pt")
  assert dalle_fixture.weights_file(tmp_path).name == "encoder_state_dict.pt"
  dalle_fixture.load_encoder(tmp_path / "encoder_state_dict.pt")  # no config.json: fine
  cfg = json.loads((fixture_dir / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps(dict(cfg, n_hid=32)))
  with pytest.raises(ValueError, match=r"config.json.*n_hid.*\(32, 16\)"):
    dalle_fixture.load_encoder(tmp_path / "encoder_state_dict.pt")

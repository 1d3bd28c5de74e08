"""ALPRO vs the reference fixture (../shared/reference/alpro/tiny): every output of outputs.npz."""
import json
import pathlib

import jax
import numpy as np
import pytest

import vlx  # noqa: F401
from vlx.models import alpro
from vlx.models.alpro import load_fixture as lf

pytestmark = pytest.mark.torch   # reads the reference .pt files

EXACT = ("vtm_labels", "pem_ignore_masks", "pem_ignore_masks_img")


def tolerance(key: str) -> dict:
  """README tolerances: exact for labels/masks/metrics, rtol 1e-3 for gradients, 1e-4 otherwise."""
  if key in EXACT or key.startswith("ret_metric/"):
    return dict(rtol=0, atol=0)
  if key.startswith("grad"):
    return dict(rtol=1e-3, atol=1e-6)
  return dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fixture_dir(reference_dir) -> pathlib.Path:
  return reference_dir / "alpro" / "tiny"


@pytest.fixture(scope="module")
def outputs(alpro_parity_run):
  """vlx's outputs as `python -m vlx.convert.parity` wrote them (computed once per session)."""
  returncode, log, out, _ = alpro_parity_run
  assert out, f"the parity CLI wrote no outputs (exit {returncode}):\n{log[-3000:]}"
  return out


@pytest.fixture(scope="module")
def fixture_data(fixture_dir):
  """(config.json, inputs, checkpoint state dict), read once."""
  return lf.read_fixture(fixture_dir)


def test_every_output_matches(outputs, fixture_dir):
  ref = np.load(fixture_dir / "outputs.npz")
  assert set(ref.files) <= set(outputs), sorted(set(ref.files) - set(outputs))
  failures, rows = [], []
  for key in ref.files:
    ours, want = outputs[key], ref[key]
    assert ours.shape == want.shape, f"{key}: shape {ours.shape} vs reference {want.shape}"
    err = float(np.max(np.abs(ours - want))) if want.size else 0.0
    rows.append(f"{key:72s} {err:.2e}")
    if not np.allclose(ours, want, **tolerance(key)):
      failures.append(f"{key}: max abs error {err:.3e}")
  print("\nmax |vlx - reference| per output\n" + "\n".join(rows))
  assert not failures, failures


def test_losses_match_readme_values(outputs):
  """The loss values printed in tiny/README.md (independent of outputs.npz)."""
  readme = {"vtc_loss": 1.206899, "vtm_loss": 0.869758, "mlm_loss": 8.52811, "pem_loss": 2.889276,
            "total_loss": 13.494042, "prompter_vtc_loss": 1.535894, "qa_loss": 2.738587}
  for key, value in readme.items():
    np.testing.assert_allclose(outputs[key], value, rtol=1e-5, err_msg=key)


def test_model_config_follows_config_json(fixture_dir):
  cfg = json.loads((fixture_dir / "config.json").read_text())
  c = lf.model_config_from_fixture(cfg, "qa")
  assert (c.head, c.num_labels, c.video.num_frames) == ("qa", 24, 4)
  assert (c.text.hidden_size, c.text.num_layers, c.text.fusion_layer) == (64, 4, 2)
  assert (c.video.depth, c.video.num_heads, c.embed_dim, c.num_entities) == (2, 4, 32, 16)
  p = lf.model_config_from_fixture(cfg, "pretrain")
  assert p.pem and p.video.num_frames == 2 and p.temp_init == pytest.approx(0.05)
  with pytest.raises(ValueError, match="task"):
    lf.model_config_from_fixture(cfg, "captioning")
  del cfg["model_config"]["fusion_layer"]
  with pytest.raises(KeyError, match="model_config.fusion_layer"):
    lf.model_config_from_fixture(cfg, "retrieval")


def test_modified_frame_count_still_runs(fixture_dir, fixture_data, fast_jit):
  """A retrieval model with 8 frames: time_embed is resized 2->8 on load and 8->4 on the fly for
  the 4-frame inputs; nearest resizing composes, so the scores equal the reference's."""
  cfg, x, sd = fixture_data
  cfg = json.loads(json.dumps(cfg))
  cfg["retrieval"]["num_frm"] = 8
  model = lf._build(cfg, "retrieval", sd)
  ref = np.load(fixture_dir / "outputs.npz")
  time_embed = np.asarray(model.video.time_embed[...])
  assert time_embed.shape == (1, 8, 64)
  np.testing.assert_allclose(time_embed[:, ::2], ref["ret_time_embed_resized"])

  def itc_scores(m, video, ids, mask):   # the vtc scores: same time path, no pairwise fusion
    videos = alpro.encode_videos(m, dict(video=video))
    texts = alpro.encode_texts(m, dict(text_ids=ids, text_mask=mask))
    return alpro.retrieval_scores(m, texts, videos, mode="vtc").T

  with jax.default_matmul_precision("highest"):
    scores = fast_jit(itc_scores)(model, lf.to_channels_last(x["ret_visual_inputs"]),
                                  x["ret_text_input_ids"], x["ret_text_input_mask"])
  np.testing.assert_allclose(scores, ref["ret_itc_scores"], rtol=1e-4, atol=1e-4)


def test_gradient_norms_cover_every_parameter(outputs, fixture_data):
  """Held-out fixtures of the format check other parameters (e.g. the last block): vlx writes
  grad_norm/<reference name> for every parameter of the checkpoint, mapped through the converter
  rules in reverse, so the names cover every nnx.Param of the model and include the fixture's."""
  from flax import nnx
  from vlx.convert import reverse
  cfg, _, sd = fixture_data
  result = lf.convert_fixture(cfg, "pretrain", sd)
  names = [k[len("grad_norm/"):] for k in outputs if k.startswith("grad_norm/")]
  params = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(result.model,
                                                                          nnx.Param))}
  assert reverse.covered_targets(result, names) == params
  assert "visual_encoder.model.blocks.1.temporal_attn.qkv.weight" in names   # the last block
  assert "text_encoder.cls.predictions.decoder.weight" in names              # tied: same tensor
  np.testing.assert_array_equal(
      outputs["grad_norm/text_encoder.cls.predictions.decoder.weight"],
      outputs["grad_norm/text_encoder.bert.embeddings.word_embeddings.weight"])
  assert "text_encoder.bert.embeddings.position_ids" not in names            # a buffer


def test_build_rejects_unknown_and_missing_keys(fixture_data):
  """The fixture loader is strict where the converter only reports (shape errors: see
  tests/test_convert_alpro.py)."""
  cfg, _, sd = fixture_data
  with pytest.raises(ValueError, match=r"unmapped source keys \['visual_encoder.model.extra'\]"):
    lf._build(cfg, "retrieval", {**sd, "visual_encoder.model.extra": np.zeros(3)})
  partial = {k: v for k, v in sd.items() if k != "itm_head.bias"}
  with pytest.raises(ValueError, match=r"unfilled model variables \['itm_head/bias'\]"):
    lf._build(cfg, "retrieval", partial)

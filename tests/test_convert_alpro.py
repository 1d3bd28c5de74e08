"""ALPRO converter: full-size mapping of every released checkpoint layout (shape-only dry runs
from the manifests), real conversion of the tiny reference fixture, errors and the CLI."""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from vlx.convert import __main__ as cli
from vlx.convert import convert_state_dict, load_converted, load_state_dict, save_converted
from vlx.convert.errors import ShapeMismatchError, WrongFamilyError

pytestmark = pytest.mark.torch  # reads/writes torch checkpoints

# manifest -> (detected variant, frames, num_labels, num_entities, #unused keys)
MANIFESTS = {
    "pretrain": ("pretrain", 4, 0, 1000, 10),
    "prompter": ("prompter", 4, 0, 1000, 5),
    "msrvtt_ret": ("retrieval", 8, 0, 1000, 5),
    "didemo_ret": ("retrieval", 8, 0, 1000, 5),
    "msrvtt_qa": ("qa", 16, 1500, 1000, 3),
    "msvd_qa": ("qa", 16, 2423, 1000, 3),
}
TINY_HEADS = {"video": {"num_heads": 4}, "text": {"num_heads": 4}}


def _shapes(reference_dir, name):
  m = json.loads((reference_dir / "alpro" / f"manifest_{name}.json").read_text())
  return {p["key"]: jax.ShapeDtypeStruct(tuple(p["shape"]), np.dtype(p["dtype"]))
          for p in m["params"]}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_full_size_dry_run_maps_every_key(reference_dir, name):
  variant, frames, labels, entities, n_unused = MANIFESTS[name]
  shapes = _shapes(reference_dir, name)
  start = time.perf_counter()
  res = convert_state_dict("alpro", shapes, dry_run=True)
  seconds = time.perf_counter() - start
  rep = res.report
  assert (rep["variant"], rep["unmapped"], rep["missing"]) == (variant, [], [])
  assert rep["mapped"] + len(rep["unused"]) == len(shapes)
  assert len(rep["unused"]) == n_unused
  assert all(k.endswith(("position_ids", "head.weight", "head.bias", "decoder.weight",
                         "decoder.bias")) for k in rep["unused"])
  c = res.model_config
  assert (c.head, c.pem, c.video.num_frames, c.num_labels) == (variant, variant == "pretrain",
                                                               frames, labels)
  assert (c.video.width, c.video.depth, c.video.img_size, c.video.patch_size) == (768, 12, 224, 16)
  assert (c.text.vocab_size, c.text.num_layers, c.text.fusion_layer, c.embed_dim) == (
      30522, 12, 6, 256)
  if variant in ("pretrain", "prompter"):
    assert c.num_entities == entities
  print(f"dry run {name}: {len(shapes)} keys in {seconds:.2f} s")


def test_pretrain_file_as_zero_shot_retrieval_and_qa(reference_dir):
  shapes = _shapes(reference_dir, "pretrain")
  res = convert_state_dict("alpro", shapes, variant="retrieval",
                           model_config={"video": {"num_frames": 8}}, dry_run=True)
  rep = res.report
  assert (rep["unmapped"], rep["missing"], res.model_config.video.num_frames) == ([], [], 8)
  dropped = [k for k in shapes if k.startswith(("prompter.", "mpm_head."))]
  assert len(dropped) == 467 and all(k in rep["unused"] for k in dropped)
  qa = convert_state_dict("alpro", shapes, variant="qa", model_config={"num_labels": 1500},
                          dry_run=True).report
  assert qa["unmapped"] == []
  assert qa["missing"] == ["classifier/fc1/bias", "classifier/fc1/kernel",
                           "classifier/fc2/bias", "classifier/fc2/kernel"]


@pytest.fixture(scope="module")
def tiny(reference_dir):
  d = reference_dir / "alpro" / "tiny"
  return dict(cfg=json.loads((d / "config.json").read_text()),
              sd=load_state_dict(d / "checkpoint.pt"),
              sd_qa=load_state_dict(d / "checkpoint_qa.pt"),
              inputs=dict(np.load(d / "inputs.npz")), outputs=dict(np.load(d / "outputs.npz")))


def _channels_last(video):
  return np.transpose(video, (0, 1, 3, 4, 2))


def test_tiny_pretrain_values_and_forward(tiny):
  sd, out, x = tiny["sd"], tiny["outputs"], tiny["inputs"]
  res = convert_state_dict("alpro", sd, model_config=TINY_HEADS)
  m, c, d = res.model, res.model_config, 64
  assert (res.report["unmapped"], res.report["missing"], res.variant) == ([], [], "pretrain")
  mc, hc = tiny["cfg"]["model_config"], tiny["cfg"]["hardcoded_overrides"]
  assert (c.text.vocab_size, c.text.hidden_size, c.text.num_layers, c.text.fusion_layer,
          c.text.intermediate_size, c.text.max_position_embeddings) == (
              mc["vocab_size"], mc["hidden_size"], mc["num_hidden_layers"], mc["fusion_layer"],
              mc["intermediate_size"], mc["max_position_embeddings"])
  assert (c.video.width, c.video.depth, c.video.num_frames, c.video.img_size, c.embed_dim,
          c.num_entities) == (hc["timesformer_embed_dim"], hc["timesformer_depth"], 2, 64,
                              hc["embed_dim"], mc["num_entities"])
  v = "visual_encoder.model.blocks.1."
  np.testing.assert_array_equal(m.video.blocks[1].attn.query.kernel[...],
                                sd[v + "attn.qkv.weight"][:d].T)
  np.testing.assert_array_equal(m.video.blocks[1].temporal_attn.value.bias[...],
                                sd[v + "temporal_attn.qkv.bias"][2 * d:])
  np.testing.assert_array_equal(m.video.blocks[1].temporal_norm.scale[...],
                                sd[v + "temporal_norm1.weight"])
  patch = sd["visual_encoder.model.patch_embed.proj.weight"]
  np.testing.assert_array_equal(m.video.patch_embed.kernel[...], patch.transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(m.text.layers[3].attn.key.kernel[...],
                                sd["text_encoder.bert.encoder.layer.3.attention.self.key.weight"].T)
  np.testing.assert_array_equal(m.mlm_head.bias[...], sd["text_encoder.cls.predictions.bias"])
  np.testing.assert_array_equal(m.pem_head.fc2.kernel[...], sd["mpm_head.2.weight"].T)
  np.testing.assert_array_equal(m.prompter.temp[...], sd["prompter.temp"])
  np.testing.assert_allclose(m.prompter.video_prompt_feat[...], out["video_prompt_feat"], atol=1e-6)
  # end to end through the model's encoders (reference outputs.npz, spec tolerance 1e-4)
  video, text = nnx.jit(lambda m, v, i, k: (m.encode_video(v), m.encode_text(i, k)))(
      m, _channels_last(x["visual_inputs"]), x["text_input_ids"], x["text_input_mask"])
  np.testing.assert_allclose(video, out["video_embeds"], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(text, out["text_embeds"], atol=1e-4, rtol=1e-4)


def test_tiny_retrieval_from_pretrain_resizes_time_embed(tiny):
  ov = {"video": {"num_heads": 4, "num_frames": 4}, "text": {"num_heads": 4}}
  res = convert_state_dict("alpro", tiny["sd"], variant="retrieval", model_config=ov)
  assert (res.report["unmapped"], res.report["missing"]) == ([], [])
  np.testing.assert_array_equal(res.model.video.time_embed[...],
                                tiny["outputs"]["ret_time_embed_resized"])


def test_tiny_qa_values_and_logits(tiny):
  sd, x = tiny["sd_qa"], tiny["inputs"]
  res = convert_state_dict("alpro", sd, model_config=TINY_HEADS)
  m = res.model
  assert (res.variant, res.model_config.num_labels, res.report["missing"]) == ("qa", 24, [])
  np.testing.assert_array_equal(m.classifier.fc1.kernel[...], sd["classifier.0.weight"].T)
  np.testing.assert_array_equal(m.text.embeddings.word.embedding[...],
                                sd["text_encoder.embeddings.word_embeddings.weight"])
  logits = nnx.jit(lambda m, i, k, v: m.qa_logits(m.fuse(m.encode_text(i, k), k,
                                                        m.encode_video(v))))(
      m, x["qa_text_input_ids"], x["qa_text_input_mask"], _channels_last(x["qa_visual_inputs"]))
  np.testing.assert_allclose(logits, tiny["outputs"]["qa_logits"], atol=1e-4, rtol=1e-4)


def test_save_and_load_converted(tiny, tmp_path):
  res = convert_state_dict("alpro", tiny["sd"], model_config=TINY_HEADS)
  save_converted(res, tmp_path)
  report = json.loads((tmp_path / "conversion_report.json").read_text())
  assert report == res.report
  cfg, state = load_converted(tmp_path)
  assert cfg.to_dict() == json.loads(res.model_config.to_json_best_effort())
  np.testing.assert_array_equal(state["prompter"]["video_prompt_feat"][...],
                                tiny["sd"]["prompter.video_prompt_feat"])
  np.testing.assert_array_equal(state["video"]["blocks"][1]["attn"]["key"]["kernel"][...],
                                res.model.video.blocks[1].attn.key.kernel[...])


def test_wrong_family_and_wrong_shape_name_the_keys(tiny):
  r = np.random.default_rng(0)
  other = {f"backbone.stage{i}.conv.weight": r.standard_normal((2, 2)) for i in range(6)}
  with pytest.raises(WrongFamilyError, match=r"not an ALPRO checkpoint.*backbone\.stage0"):
    convert_state_dict("alpro", other)
  mixed = dict(tiny["sd"]) | {f"backbone.{i}.w": np.zeros(2) for i in range(400)}
  with pytest.raises(WrongFamilyError, match=r"400 of 672 checkpoint keys match no alpro"):
    convert_state_dict("alpro", mixed, model_config=TINY_HEADS)
  bad = dict(tiny["sd"])
  key = "text_encoder.bert.encoder.layer.1.attention.self.key.weight"
  bad[key] = np.zeros((64, 65), np.float32)
  with pytest.raises(ShapeMismatchError, match=rf"{key} -> text/layers/1/attn/key/kernel: "
                                               r"expected \(64, 64\), got \(65, 64\)"):
    convert_state_dict("alpro", bad, model_config=TINY_HEADS)


def test_unknown_key_and_missing_variable_are_reported(tiny):
  """One stray key is reported, not fatal; an absent parameter leaves the model unbuilt."""
  extra = dict(tiny["sd"], **{"visual_encoder.model.extra": np.zeros(3, np.float32)})
  rep = convert_state_dict("alpro", extra, model_config=TINY_HEADS, dry_run=True).report
  assert (rep["unmapped"], rep["missing"]) == (["visual_encoder.model.extra"], [])
  partial = {k: v for k, v in tiny["sd"].items() if k != "itm_head.bias"}
  res = convert_state_dict("alpro", partial, model_config=TINY_HEADS)
  assert (res.report["unmapped"], res.report["missing"], res.model) == ([], ["itm_head/bias"], None)


def _save_torch(sd, path):
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)
  return str(path)


def test_cli_exit_codes_and_one_line_errors(tiny, tmp_path, capsys):
  ckpt = _save_torch(tiny["sd"], tmp_path / "tiny.pt")
  heads = ["--set", "video.num_heads=4", "--set", "text.num_heads=4"]
  base = ["--family", "alpro", "--out", str(tmp_path / "out")]
  assert cli.main(base + ["--checkpoint", ckpt] + heads) == 0
  assert "0 unmapped, 0 missing" in capsys.readouterr().out
  assert (tmp_path / "out" / "params").is_dir()
  assert cli.main(base + ["--checkpoint", ckpt, "--variant", "qa", "--set", "num_labels=3"]
                  + heads) == 1
  assert "missing (model variables): classifier/fc1/bias" in capsys.readouterr().out
  bad = dict(tiny["sd"], **{"itm_head.weight": np.zeros((3, 64), np.float32)})
  cases = {
      str(tmp_path / "absent.pt"): "checkpoint file not found",
      _save_torch(bad, tmp_path / "bad.pt"): "shape mismatch for 1 key(s): itm_head.weight",
      _save_torch({"encoder.w": np.zeros(2)}, tmp_path / "other.pt"): "not an ALPRO checkpoint",
  }
  evil = tmp_path / "evil.pt"
  torch.save({"w": torch.zeros(1), "x": _TouchOnLoad(str(tmp_path / "marker"))}, evil)
  cases[str(evil)] = "would need code execution"
  for path, message in cases.items():
    assert cli.main(base + ["--checkpoint", path] + heads) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
  assert not (tmp_path / "marker").exists()


class _TouchOnLoad:
  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))

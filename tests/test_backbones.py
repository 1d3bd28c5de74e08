"""Initialisation from public backbones (BERT folder + timm ViT file) into a tiny ALPRO state."""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import save_file

import vlx  # noqa: F401
from vlx.convert.engine import abstract_model
from vlx.convert.backbones import init_from_backbones, summary
from vlx.convert.errors import (CheckpointNotFoundError, ConversionError, ShapeMismatchError,
                                WrongFamilyError)
from vlx.models.alpro import FAMILY, build
from vlx.models.alpro.model import model_config as alpro_model
from timm_state import random_timm_vit


def _init(state, **kw):
  """init_from_backbones with ALPRO's layout (Family.backbone_layout)."""
  return init_from_backbones(state, layout=FAMILY.backbone_layout, **kw)

pytestmark = pytest.mark.torch  # writes/reads .pth files

D, V, L, I, P, DEPTH, PATCH, IMG = 32, 128, 4, 64, 32, 2, 16, 32


def _config(head="pretrain"):
  c = alpro_model("tiny")
  c.head, c.pem = head, head == "pretrain"
  c.num_labels = 5 if head == "qa" else 0
  c.video.depth = DEPTH
  c.text.update(num_layers=L, fusion_layer=2)
  return c


def _params(head="pretrain", abstract=False):
  """Param state of a tiny ALPRO (abstract, or every value 7.0 so 'kept fresh init' is visible)."""
  _, params, _ = nnx.split(abstract_model(build, _config(head)), nnx.Param, ...)
  return params if abstract else jax.tree.map(lambda x: jnp.full(x.shape, 7.0, x.dtype), params)


def _flat(state) -> dict[str, np.ndarray]:
  return {"/".join(str(k) for k in p): np.asarray(v.get_value() if hasattr(v, "get_value") else v)
          for p, v in nnx.to_flat_state(state)}


def _bert(rng, *, prefix="bert.", gamma=False, mlm=True, nsp=True) -> dict[str, np.ndarray]:
  w, b = ("gamma", "beta") if gamma else ("weight", "bias")
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  sd = {f"{prefix}embeddings.word_embeddings.weight": r(V, D),
        f"{prefix}embeddings.position_embeddings.weight": r(P, D),
        f"{prefix}embeddings.token_type_embeddings.weight": r(2, D),
        f"{prefix}embeddings.LayerNorm.{w}": r(D), f"{prefix}embeddings.LayerNorm.{b}": r(D),
        f"{prefix}embeddings.position_ids": np.arange(P, dtype=np.int64)[None],
        f"{prefix}pooler.dense.weight": r(D, D), f"{prefix}pooler.dense.bias": r(D)}
  for k in range(L):
    e = f"{prefix}encoder.layer.{k}."
    for name, (o, i) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                         "attention.self.value": (D, D), "attention.output.dense": (D, D),
                         "intermediate.dense": (I, D), "output.dense": (D, I)}.items():
      sd[e + name + ".weight"], sd[e + name + ".bias"] = r(o, i), r(o)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      sd[f"{e}{name}.{w}"], sd[f"{e}{name}.{b}"] = r(D), r(D)
  if mlm:
    c = "cls.predictions."
    sd.update({c + "bias": r(V), c + "transform.dense.weight": r(D, D),
               c + "transform.dense.bias": r(D), f"{c}transform.LayerNorm.{w}": r(D),
               f"{c}transform.LayerNorm.{b}": r(D)})
    sd[c + "decoder.weight"] = sd[f"{prefix}embeddings.word_embeddings.weight"].copy()
    sd[c + "decoder.bias"] = sd[c + "bias"].copy()
  if nsp:
    sd["cls.seq_relationship.weight"], sd["cls.seq_relationship.bias"] = r(2, D), r(2)
  return sd


def _bert_dir(tmp_path, sd, **config) -> str:
  d = tmp_path / "bert"
  d.mkdir()
  save_file(sd, str(d / "model.safetensors"))
  cfg = dict(model_type="bert", vocab_size=V, hidden_size=D, num_hidden_layers=L,
             num_attention_heads=2, intermediate_size=I, max_position_embeddings=P,
             type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)
  cfg.update(config)
  (d / "config.json").write_text(json.dumps(cfg))
  return str(d)


def _vit(rng, depth=DEPTH) -> dict[str, np.ndarray]:
  return random_timm_vit(rng, dim=D, depth=depth, patch=PATCH, grid=IMG // PATCH)


def _vit_file(tmp_path, sd, name="vit.pth") -> str:
  path = tmp_path / name
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  return str(path)


def test_values_land_where_expected(tmp_path):
  rng = np.random.default_rng(0)
  bert, vit = _bert(rng), _vit(rng)
  state, report = _init(_params(), bert_dir=_bert_dir(tmp_path, bert),
                                      vit_file=_vit_file(tmp_path, vit))
  got = _flat(state)
  # BERT: every layer k -> text layer k, fusion layers (k >= fusion_layer=2) included.
  np.testing.assert_array_equal(got["text/embeddings/word/embedding"],
                                bert["bert.embeddings.word_embeddings.weight"])
  np.testing.assert_array_equal(got["text/embeddings/norm/scale"],
                                bert["bert.embeddings.LayerNorm.weight"])
  for k in range(L):
    e = f"bert.encoder.layer.{k}."
    np.testing.assert_array_equal(got[f"text/layers/{k}/attn/query/kernel"],
                                  bert[e + "attention.self.query.weight"].T)
    np.testing.assert_array_equal(got[f"text/layers/{k}/mlp/fc2/bias"],
                                  bert[e + "output.dense.bias"])
    np.testing.assert_array_equal(got[f"text/layers/{k}/mlp_norm/scale"],
                                  bert[e + "output.LayerNorm.weight"])
  np.testing.assert_array_equal(got["mlm_head/dense/kernel"],
                                bert["cls.predictions.transform.dense.weight"].T)
  np.testing.assert_array_equal(got["mlm_head/bias"], bert["cls.predictions.bias"])
  # ViT -> TimeSformer: spatial weights in both attentions/norms; temporal_fc and time_embed zero.
  np.testing.assert_array_equal(got["video/patch_embed/kernel"],
                                vit["patch_embed.proj.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(got["video/pos_embed"], vit["pos_embed"])
  for k in range(DEPTH):
    b, qkv, qkv_b = f"video/blocks/{k}/", vit[f"blocks.{k}.attn.qkv.weight"], vit[
        f"blocks.{k}.attn.qkv.bias"]
    for attn in ("attn", "temporal_attn"):
      np.testing.assert_array_equal(got[f"{b}{attn}/query/kernel"], qkv[:D].T)
      np.testing.assert_array_equal(got[f"{b}{attn}/value/kernel"], qkv[2 * D:].T)
      np.testing.assert_array_equal(got[f"{b}{attn}/key/bias"], qkv_b[D:2 * D])
      np.testing.assert_array_equal(got[f"{b}{attn}/out/kernel"],
                                    vit[f"blocks.{k}.attn.proj.weight"].T)
    for norm in ("norm1", "temporal_norm"):
      np.testing.assert_array_equal(got[f"{b}{norm}/scale"], vit[f"blocks.{k}.norm1.weight"])
      np.testing.assert_array_equal(got[f"{b}{norm}/bias"], vit[f"blocks.{k}.norm1.bias"])
    assert not got[f"{b}temporal_fc/kernel"].any() and not got[f"{b}temporal_fc/bias"].any()
    np.testing.assert_array_equal(got[f"{b}mlp/fc1/kernel"], vit[f"blocks.{k}.mlp.fc1.weight"].T)
  assert not got["video/time_embed"].any()
  # Kept fresh init: heads, temperature, the whole prompter (value 7 untouched).
  for path in ("vision_proj/kernel", "itm_head/bias", "temp", "pem_head/fc1/kernel",
               "prompter/text/embeddings/word/embedding",
               "prompter/video/blocks/0/attn/query/kernel"):
    assert (got[path] == 7.0).all(), path
  assert set(report["kept_init"]) == {"prompter", "temp", "vision_proj", "text_proj", "itm_head",
                                      "pem_head"}
  assert "trained prompter" in report["kept_init"]["prompter"]["reason"]
  assert len(report["initialised"]) + len(report["kept_init_paths"]) == len(got)
  unused = report["unused"]
  assert unused["vit:head.weight"].startswith("ImageNet classifier")
  assert {"bert:bert.pooler.dense.weight", "bert:cls.seq_relationship.bias",
          "bert:bert.embeddings.position_ids", "bert:cls.predictions.decoder.weight"} <= set(unused)
  assert report["sources"]["bert"]["format"] == "BertForPreTraining"
  assert "kept fresh init: prompter" in summary(report)


def test_abstract_state_and_partial_sources(tmp_path):
  """Only a BERT given: the video keeps its init and is reported; abstract leaves stay abstract."""
  rng = np.random.default_rng(1)
  bert = _bert(rng, prefix="", gamma=True, mlm=False, nsp=False)  # bare BertModel, gamma/beta
  state, report = _init(_params("retrieval", abstract=True),
                                      bert_dir=_bert_dir(tmp_path, bert), vit_file="")
  leaves = dict(nnx.to_flat_state(state))
  word = leaves[("text", "embeddings", "word", "embedding")]
  np.testing.assert_array_equal(np.asarray(word.get_value()),
                                bert["embeddings.word_embeddings.weight"])
  scale = leaves[("text", "layers", 3, "attn_norm", "scale")].get_value()
  np.testing.assert_array_equal(np.asarray(scale),
                                bert["encoder.layer.3.attention.output.LayerNorm.gamma"])
  assert isinstance(leaves[("video", "cls_token")].get_value(), jax.ShapeDtypeStruct)
  assert report["sources"]["bert"]["format"] == "BertModel"
  assert "no init.vit_file" in report["kept_init"]["video/blocks"]["reason"]
  assert "no MLM head" in report["kept_init"]["mlm_head"]["reason"]
  # nothing given: unchanged, everything reported as kept
  same, empty = _init(_params("retrieval", abstract=True), bert_dir="", vit_file=None)
  assert not empty["initialised"] and not empty["sources"]
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(same))
  assert "no init.bert_dir" in empty["kept_init"]["text/layers"]["reason"]


def test_qa_model_and_other_file_formats(tmp_path):
  """QA model (no MLM head: cls.* declared unused); BERT as pytorch_model.bin, ViT as
  .safetensors."""
  rng = np.random.default_rng(2)
  bert, vit = _bert(rng), _vit(rng)
  d = tmp_path / "bin"
  d.mkdir()
  (pathlib.Path(_bert_dir(tmp_path, bert)) / "config.json").rename(d / "config.json")
  torch.save({k: torch.from_numpy(v) for k, v in bert.items()}, d / "pytorch_model.bin")
  save_file(vit, str(tmp_path / "vit.safetensors"))
  state, report = _init(_params("qa", abstract=True), bert_dir=str(d),
                                      vit_file=str(tmp_path / "vit.safetensors"))
  assert "has none" in report["unused"]["bert:cls.predictions.transform.dense.weight"]
  assert report["sources"]["bert"]["path"].endswith("pytorch_model.bin")
  got = _flat(state)
  np.testing.assert_array_equal(got["text/layers/1/attn/key/kernel"],
                                bert["bert.encoder.layer.1.attention.self.key.weight"].T)
  np.testing.assert_array_equal(got["video/blocks/1/temporal_attn/value/bias"],
                                vit["blocks.1.attn.qkv.bias"][2 * D:])


def test_wrong_files_give_clear_errors(tmp_path):
  rng = np.random.default_rng(3)
  params = _params(abstract=True)
  with pytest.raises(CheckpointNotFoundError, match="not a directory"):
    _init(params, bert_dir=str(tmp_path / "nope"))
  with pytest.raises(ShapeMismatchError, match="num_hidden_layers=12 .* model.text.num_layers=4"):
    _init(params, bert_dir=_bert_dir(tmp_path, _bert(rng), num_hidden_layers=12))
  vit = _vit(rng)
  with pytest.raises(WrongFamilyError, match="not a timm ViT"):  # a BERT file given as the ViT
    _init(params, vit_file=_vit_file(tmp_path, _bert(rng), "bert.pth"))
  with pytest.raises(ShapeMismatchError, match="3 blocks .* model.video.depth=2"):
    _init(params, vit_file=_vit_file(tmp_path, _vit(rng, depth=3), "deep.pth"))
  bad = dict(vit, pos_embed=vit["pos_embed"][:, :3])
  with pytest.raises(ShapeMismatchError, match="pos_embed -> video/pos_embed"):
    _init(params, vit_file=_vit_file(tmp_path, bad, "bad.pth"))
  extra = dict(vit, **{"blocks.0.ls1.gamma": np.ones(D, np.float32)})
  with pytest.raises(ConversionError, match="blocks.0.ls1.gamma"):
    _init(params, vit_file=_vit_file(tmp_path, extra, "ls.pth"))
  untied = _bert(rng)
  untied["cls.predictions.decoder.weight"] += 1.0
  (tmp_path / "u").mkdir()
  with pytest.raises(ConversionError, match="decoder.weight should be the same tensor"):
    _init(params, bert_dir=_bert_dir(tmp_path / "u", untied))


def test_real_transformers_bert_matches_huggingface(tmp_path):
  """save_pretrained of a tiny transformers BertForMaskedLM: real key names, same outputs."""
  import transformers  # pylint: disable=import-outside-toplevel  (slow import: only here)
  torch.manual_seed(0)
  hf = transformers.BertForMaskedLM(transformers.BertConfig(
      vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=2,
      intermediate_size=I, max_position_embeddings=P)).eval()
  hf.save_pretrained(tmp_path / "hf")
  graphdef, params, rest = nnx.split(abstract_model(build, _config("retrieval")), nnx.Param, ...)
  params, report = _init(params, bert_dir=str(tmp_path / "hf"))
  # the video side is not used here: give its abstract leaves some value
  params = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype)
                        if isinstance(x, jax.ShapeDtypeStruct) else x, params)
  model = nnx.merge(graphdef, params, rest)
  ids = np.random.default_rng(4).integers(0, V, (2, 9))
  with torch.no_grad():
    out = hf(torch.from_numpy(ids), output_hidden_states=True)
  hidden = model.text(jnp.asarray(ids), jnp.ones(ids.shape, jnp.int32), 0, None)
  with jax.default_matmul_precision("highest"):
    logits = model.mlm_head(hidden, model.text.embeddings.word.embedding[...])
  np.testing.assert_allclose(hidden, out.hidden_states[-1].numpy(), atol=2e-5)
  np.testing.assert_allclose(logits, out.logits.numpy(), atol=1e-4)
  assert report["sources"]["bert"]["mapped"] > 0


def test_sharded_state_keeps_its_shardings(tmp_path):
  """Leaves of a state sharded over 8 devices come back with the same shardings (loop usage)."""
  mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
  spec = lambda x: jax.sharding.PartitionSpec("fsdp") if x.ndim and x.shape[0] % 8 == 0 else (
      jax.sharding.PartitionSpec())
  params = jax.tree.map(lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, spec(x))),
                        _params("retrieval"))
  rng = np.random.default_rng(5)
  vit = _vit(rng)
  state, _ = _init(params, bert_dir=_bert_dir(tmp_path, _bert(rng)),
                                 vit_file=_vit_file(tmp_path, vit))
  before = jax.tree.map(lambda x: x.sharding, params)
  after = jax.tree.map(lambda x: x.sharding, state)
  assert jax.tree.leaves(before) == jax.tree.leaves(after)
  fc1 = dict(nnx.to_flat_state(state))[("video", "blocks", 1, "mlp", "fc1", "kernel")].get_value()
  assert fc1.sharding.spec == jax.sharding.PartitionSpec("fsdp")
  np.testing.assert_array_equal(np.asarray(fc1), vit["blocks.1.mlp.fc1.weight"].T)

"""bert-base-uncased initialisation of VIOLET (spec §4, §5.1): a fake Hugging Face BERT folder at
the tiny size fills text/ (embeddings), encoder/N/ (cross-modal layers) and the untied mlm_head/;
the Video Swin parts and the VIOLET heads keep their init, with reasons; init.vit_file is refused.
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from vlx.convert.backbones import init_from_backbones, summary
from vlx.convert.engine import abstract_model
from vlx.convert.errors import ConversionError, ShapeMismatchError
from vlx.models.violet.layout import BACKBONE_LAYOUT
from vlx.models.violet.model import build, model_config

C = model_config("tiny")
D, V, L, I, P = C.hidden, C.text.vocab_size, C.text.num_layers, C.text.intermediate_size, \
    C.text.max_position_embeddings


def _params(head="pretrain"):
  """Abstract Param state of a tiny VIOLET (with the dVAE, as the pre-training config has)."""
  c = model_config("tiny")
  c.head, c.dvae.enabled = head, True
  _, params, _ = nnx.split(abstract_model(build, c), nnx.Param, ...)
  return params


def _flat(state) -> dict:
  return {"/".join(str(k) for k in p): v.get_value() for p, v in nnx.to_flat_state(state)}


def _bert(seed: int, *, decoder: bool, untied: bool = False) -> dict[str, np.ndarray]:
  """A BertForMaskedLM state dict; `decoder`: with cls.predictions.decoder.weight (= the word
  embeddings, or other values when `untied`, to show which tensor is read)."""
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  sd = {"bert.embeddings.word_embeddings.weight": r(V, D),
        "bert.embeddings.position_embeddings.weight": r(P, D),
        "bert.embeddings.token_type_embeddings.weight": r(2, D),
        "bert.embeddings.LayerNorm.weight": r(D), "bert.embeddings.LayerNorm.bias": r(D),
        "bert.embeddings.position_ids": np.arange(P, dtype=np.int64)[None]}
  for k in range(L):
    e = f"bert.encoder.layer.{k}."
    for name, (o, i) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                         "attention.self.value": (D, D), "attention.output.dense": (D, D),
                         "intermediate.dense": (I, D), "output.dense": (D, I)}.items():
      sd[e + name + ".weight"], sd[e + name + ".bias"] = r(o, i), r(o)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      sd[e + name + ".weight"], sd[e + name + ".bias"] = r(D), r(D)
  c = "cls.predictions."
  sd.update({c + "bias": r(V), c + "transform.dense.weight": r(D, D),
             c + "transform.dense.bias": r(D), c + "transform.LayerNorm.weight": r(D),
             c + "transform.LayerNorm.bias": r(D)})
  sd[c + "decoder.bias"] = sd[c + "bias"].copy()
  if decoder:
    sd[c + "decoder.weight"] = r(V, D) if untied else sd[
        "bert.embeddings.word_embeddings.weight"].copy()
  return sd


def _bert_dir(tmp_path, sd, **config) -> str:
  d = tmp_path / "bert"
  d.mkdir()
  save_file(sd, str(d / "model.safetensors"))
  cfg = dict(model_type="bert", vocab_size=V, hidden_size=D, num_hidden_layers=L,
             num_attention_heads=C.text.num_heads, intermediate_size=I,
             max_position_embeddings=P, type_vocab_size=2, hidden_act="gelu",
             layer_norm_eps=1e-12)
  cfg.update(config)
  (d / "config.json").write_text(json.dumps(cfg))
  return str(d)


def _check_bert_values(got: dict, sd: dict) -> None:
  eq = np.testing.assert_array_equal
  eq(got["text/word/embedding"], sd["bert.embeddings.word_embeddings.weight"])
  eq(got["text/position/embedding"], sd["bert.embeddings.position_embeddings.weight"])
  eq(got["text/token_type/embedding"], sd["bert.embeddings.token_type_embeddings.weight"])
  eq(got["text/norm/scale"], sd["bert.embeddings.LayerNorm.weight"])
  eq(got["text/norm/bias"], sd["bert.embeddings.LayerNorm.bias"])
  for k in range(L):
    e, t = f"bert.encoder.layer.{k}.", f"encoder/{k}/"
    for src, dst in (("attention.self.query", "attn/query"), ("attention.self.key", "attn/key"),
                     ("attention.self.value", "attn/value"), ("attention.output.dense", "attn/out"),
                     ("intermediate.dense", "mlp/fc1"), ("output.dense", "mlp/fc2")):
      eq(got[t + dst + "/kernel"], sd[e + src + ".weight"].T)
      eq(got[t + dst + "/bias"], sd[e + src + ".bias"])
    for src, dst in (("attention.output.LayerNorm", "attn_norm"), ("output.LayerNorm", "mlp_norm")):
      eq(got[t + dst + "/scale"], sd[e + src + ".weight"])
      eq(got[t + dst + "/bias"], sd[e + src + ".bias"])
  c = "cls.predictions."
  eq(got["mlm_head/dense/kernel"], sd[c + "transform.dense.weight"].T)
  eq(got["mlm_head/dense/bias"], sd[c + "transform.dense.bias"])
  eq(got["mlm_head/norm/scale"], sd[c + "transform.LayerNorm.weight"])
  eq(got["mlm_head/norm/bias"], sd[c + "transform.LayerNorm.bias"])
  eq(got["mlm_head/bias"], sd[c + "bias"])


@pytest.mark.parametrize("decoder", [False, True], ids=["tied_tensor_stored_once", "with_decoder"])
def test_bert_fills_text_encoder_and_untied_mlm_head(tmp_path, decoder):
  sd = _bert(0, decoder=decoder)
  state, report = init_from_backbones(_params(), layout=BACKBONE_LAYOUT,
                                      bert_dir=_bert_dir(tmp_path, sd))
  got = _flat(state)
  _check_bert_values(got, sd)
  # the untied decoder starts as the word embeddings (transposed to [hidden, vocab])
  np.testing.assert_array_equal(got["mlm_head/decoder/kernel"],
                                sd["bert.embeddings.word_embeddings.weight"].T)
  filled = set(report["initialised"])
  bert_side = [n for n in got if n.startswith(("text/", "encoder/", "mlm_head/"))]
  assert bert_side and set(bert_side) <= filled
  assert not any(n.startswith(("text", "encoder", "mlm_head")) for n in report["kept_init"])
  kept = report["kept_init"]
  assert {g.split("/")[0] for g in kept} == {"video", "video_tokens", "fc", "mvm_head", "dvae"}
  assert "init.from_converted" in kept["video/layers"]["reason"]
  assert "fresh init" in kept["video_tokens"]["reason"]
  assert kept["fc"]["reason"] == kept["mvm_head"]["reason"] == "VIOLET head: fresh init"
  assert "model.dvae.converted" in kept["dvae"]["reason"]
  for n in report["kept_init_paths"]:  # kept variables are untouched (still abstract)
    assert isinstance(got[n], jax.ShapeDtypeStruct), n
  assert report["unused"]["bert:cls.predictions.decoder.bias"].startswith("same Parameter")
  assert "bert:bert.embeddings.position_ids" in report["unused"]
  assert report["sources"]["bert"]["format"] == "BertForMaskedLM"
  assert "kept fresh init: video/layers (" in summary(report)


def test_untied_decoder_weight_is_read_from_the_file(tmp_path):
  """A file whose decoder differs from the word embeddings: the decoder tensor is used."""
  sd = _bert(1, decoder=True, untied=True)
  state, _ = init_from_backbones(_params(), layout=BACKBONE_LAYOUT,
                                 bert_dir=_bert_dir(tmp_path, sd))
  got = _flat(state)
  np.testing.assert_array_equal(got["mlm_head/decoder/kernel"],
                                sd["cls.predictions.decoder.weight"].T)
  np.testing.assert_array_equal(got["text/word/embedding"],
                                sd["bert.embeddings.word_embeddings.weight"])


def test_downstream_head_and_refusals(tmp_path):
  sd = _bert(2, decoder=True)
  bert_dir = _bert_dir(tmp_path, sd)
  # downstream model: no MLM head, cls.* declared unused, the encoder still filled
  state, report = init_from_backbones(_params("retrieval"), layout=BACKBONE_LAYOUT,
                                      bert_dir=bert_dir)
  np.testing.assert_array_equal(_flat(state)["encoder/1/mlp/fc2/bias"],
                                sd["bert.encoder.layer.1.output.dense.bias"])
  assert report["unused"]["bert:cls.predictions.decoder.weight"].startswith("MLM head")
  with pytest.raises(ConversionError, match=r"init.vit_file=.*Video Swin.*from_converted"):
    init_from_backbones(_params(), layout=BACKBONE_LAYOUT, vit_file="vit.pth")
  (tmp_path / "deep").mkdir()
  deep = _bert_dir(tmp_path / "deep", sd, num_hidden_layers=L + 1)
  with pytest.raises(ShapeMismatchError, match=f"num_hidden_layers={L + 1}.*num_layers={L}"):
    init_from_backbones(_params(), layout=BACKBONE_LAYOUT, bert_dir=deep)

"""vlx.evals.common: padding / placement of uneven host batches, the one jit cache (no eval traces
twice), and the eval-block checks (protocol names, retrieval modes from the family)."""
import collections
import dataclasses
import importlib

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

import fake_family
from vlx import evals
from vlx import sharding as shd
from vlx.config_validation import ConfigError, validate
from vlx.evals import common

COUNTED = ("encode_videos", "encode_texts", "retrieval_scores", "qa_logits", "mc_scores",
           "class_logits")


def test_place_pads_uneven_rows_to_the_batch_shards():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  rules = tuple(c.mesh.rules)
  assert common.host_shards(mesh, rules) == 8
  batch = dict(video=np.arange(5 * 3, dtype=np.float32).reshape(5, 3),
               video_index=np.arange(10, 15, dtype=np.int32), label=np.arange(5, dtype=np.int32))
  placed = common.place(batch, mesh, rules)
  assert set(placed) == {"video", "video_index", "label", "valid"}
  assert placed["video"].shape == (8, 3) and len(placed["video"].sharding.device_set) == 8
  host = {k: common.to_host(v) for k, v in placed.items()}
  np.testing.assert_array_equal(host["valid"], [True] * 5 + [False] * 3)
  np.testing.assert_array_equal(host["video_index"], [10, 11, 12, 13, 14, -1, -1, -1])
  np.testing.assert_array_equal(host["video"][:5], batch["video"])
  np.testing.assert_array_equal(host["video"][5:], np.repeat(batch["video"][:1], 3, 0))
  # no rows (a host whose share ended first): one multiple of padding rows of zeros
  empty = common.pad_rows({k: v[:0] for k, v in batch.items()}, 4)
  assert not empty["valid"].any() and (empty["video_index"] == -1).all()
  assert empty["video"].shape == (4, 3) and not empty["video"].any()
  assert common.pad_rows(batch, 5)["valid"].all()                 # divides: only 'valid' added
  assert len(common.pad_rows(batch, 4, at_least=9)["valid"]) == 12  # another host's 9 rows


def _counting_family():
  """The toy family with every eval function counting how often it is traced."""
  counts = collections.Counter()

  def counted(name):
    fn = getattr(fake_family, name)

    def traced(*args, **kwargs):
      counts[name] += 1              # runs at trace time only: jit caches the compiled call
      return fn(*args, **kwargs)
    return traced

  fam = dataclasses.replace(fake_family.FAMILY, name="counted",
                            **{n: counted(n) for n in COUNTED})
  return fam, counts


def test_a_second_eval_of_every_type_does_not_trace_again():
  c = fake_family.toy_config()
  mesh = shd.make_mesh(c.mesh)
  family, counts = _counting_family()
  model = fake_family.build(c.model, rngs=nnx.Rngs(params=0))
  base = dict(builder="toy", split="test", num_examples=9, batch_size=4)
  blocks = [dict(type="retrieval", mode="vtc", rows_per_example=2),
            dict(type="qa", qtypes=("a", "b")),
            dict(type="multiple_choice"),
            dict(type="classification", rows_per_example=2)]
  for block in blocks:
    ev = ml_collections.ConfigDict(dict(base, **block))
    first, second = (evals.EVALUATORS[ev.type](model, family, ev, c, mesh,
                                               make_eval_batches=fake_family.host_eval_batches)
                     for _ in range(2))
    assert {k: v for k, v in first.items() if "seconds" not in k} == {
        k: v for k, v in second.items() if "seconds" not in k}
  assert counts == {name: 1 for name in COUNTED}, counts
  # the same model under another block of the same type: still no new trace
  ev = ml_collections.ConfigDict(dict(base, **blocks[1], protocol="oov_excluded"))
  evals.run_qa_eval(model, family, ev, c, mesh, make_eval_batches=fake_family.host_eval_batches)
  assert counts["qa_logits"] == 1


def test_jitted_is_keyed_by_family_function_and_static_args():
  c = fake_family.toy_config()
  graphdef, _ = nnx.split(fake_family.build(c.model, rngs=nnx.Rngs(params=0)))
  fam, _ = _counting_family()
  one = common.jitted(fam, graphdef, "retrieval_scores", mode="vtc")
  assert common.jitted(fam, graphdef, "retrieval_scores", mode="vtc") is one
  assert common.jitted(fam, graphdef, "retrieval_scores", mode="vtm") is not one
  assert common.jitted(fake_family.FAMILY, graphdef, "retrieval_scores", mode="vtc") is not one
  other, _ = _counting_family()    # same name, other functions: never the cached closure
  assert common.jitted(other, graphdef, "retrieval_scores", mode="vtc") is not one
  with pytest.raises(ValueError, match="pair_scores; family 'counted' does not"):
    common.jitted(fam, graphdef, "pair_scores")


def _config(name: str, preset: str = "tiny"):
  return importlib.import_module(f"configs.{name}").get_config(preset)


def test_protocols_are_named_by_what_they_do_and_families_choose_them():
  assert evals.PROTOCOLS == {"retrieval": ("rounded_stable", "tie_aware", "stable",
                                           "averaged_ties"),
                             "qa": ("oov_wrong", "oov_excluded")}
  assert _config("alpro_msrvtt_ret").evals.test.protocol == "rounded_stable"
  assert _config("alpro_msrvtt_qa").evals.test.protocol == "oov_wrong"
  assert _config("allinone_msrvtt_ret").evals.test_vtc.protocol == "tie_aware"
  assert _config("allinone_msrvtt_qa").evals.test.protocol == "oov_excluded"
  assert _config("violet_msrvtt_ret").evals.test.protocol == "stable"
  assert _config("violet_msrvtt_qa").evals.test.protocol == "oov_wrong"
  for old in ("alpro", "allinone"):
    c = _config("alpro_msrvtt_ret")
    c.evals.test.protocol = old
    with pytest.raises(ConfigError, match=r"^config\.evals\.test\.protocol='%s': expected one "
                       r"of \('rounded_stable', 'tie_aware', 'stable', 'averaged_ties'\) for type "
                       r"'retrieval'$" % old):
      validate(c, num_devices=8)
  q = _config("alpro_msrvtt_qa")
  q.evals.test.protocol = "tie_aware"                      # a retrieval protocol, not a QA one
  with pytest.raises(ConfigError, match=r"config\.evals\.test\.protocol='tie_aware'"):
    validate(q, num_devices=8)


def test_retrieval_modes_come_from_the_family():
  c = _config("allinone_msrvtt_ret")
  c.evals.test_vtc.mode = "itc"                             # All-in-one's own alias of 'vtc'
  validate(c, num_devices=8)
  a = _config("alpro_msrvtt_ret")
  a.evals.test.mode = "itc"
  with pytest.raises(ConfigError, match=r"^config\.evals\.test\.mode='itc': family 'alpro' "
                     r"scores \('vtc', 'vtm', 'rerank'\)$"):
    validate(a, num_devices=8)
  a.evals.test.update(mode="rerank", first_stage="vtm")
  validate(a, num_devices=8)
  a.evals.test.first_stage = "rerank"
  with pytest.raises(ConfigError, match=r"config\.evals\.test\.first_stage='rerank'"):
    validate(a, num_devices=8)
  # 'rerank' needs pair_scores: the toy family has none (and does not list the mode)
  toy = fake_family.FAMILY
  with pytest.raises(ValueError, match="'rerank' re-scores pairs with pair_scores"):
    evals.check_block("x", ml_collections.ConfigDict(dict(type="retrieval", mode="rerank")),
                      dataclasses.replace(toy, retrieval_modes=("vtc", "rerank")))
  with pytest.raises(ValueError, match=r"config\.evals\.x\.mode='vtm': family 'fake'"):
    evals.check_block("x", ml_collections.ConfigDict(dict(type="retrieval", mode="vtm")), toy)

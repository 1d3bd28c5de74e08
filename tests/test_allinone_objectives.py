"""All-in-one objectives vs the reference fixture (../shared/reference/allinone/tiny).

Part 1 needs no model: WPA / IPOT, ind_itc, CE losses, VCOP labels and retrieval metrics are
recomputed from the fixture's recorded intermediates. Part 2 runs `fixture_outputs` on the
converted fixture models (main + distilled) and compares every head / loss / gradient output at
the README tolerances. Part 3 checks loss_fn's sampling and bookkeeping on a tiny model.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import FAST_COMPILE
from vlx import steps
from vlx.models import allinone
from vlx.models.allinone import objectives as obj
from vlx.models.allinone import tasks
from vlx.objectives import cosine_contrastive, optimal_transport as ot

FIXTURES = {"main": "tiny", "distilled": "tiny/distilled"}
TOL = dict(atol=1e-4, rtol=1e-4)
WPA = jax.jit(ot.wpa, static_argnames=("skip_second_video_token",))


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def fixture(request, reference_dir):
  d = reference_dir / "allinone" / FIXTURES[request.param]
  with np.load(d / "inputs.npz") as i, np.load(d / "outputs.npz") as o:
    return request.param, d, dict(i), dict(o)


def test_wpa_plan_and_distance_from_recorded_features(fixture):
  name, _, i, o = fixture
  w = WPA(o["itm_text_feats"], o["itm_image_feats"], i["text_masks"],
          skip_second_video_token=name == "distilled")   # 'deit' in the distilled factory
  np.testing.assert_array_equal(np.asarray(w["text_valid"]), o["wpa_txt_valid"].astype(bool))
  np.testing.assert_array_equal(np.asarray(w["video_valid"]), o["wpa_img_valid"].astype(bool))
  for key, ref in (("cost", "wpa_cost"), ("plan", "wpa_transport_plan"),
                   ("distance", "wpa_distance")):
    np.testing.assert_allclose(w[key], o[ref], **TOL, err_msg=key)
  np.testing.assert_allclose(ot.wpa_loss(w["distance"], i["itm_labels"]), o["itm_wpa_loss"],
                             rtol=1e-5, atol=1e-7)


def test_wpa_gradient_flows_through_the_cost_only():
  rs = np.random.RandomState(0)
  t, v = jnp.asarray(rs.randn(2, 5, 8), jnp.float32), jnp.asarray(rs.randn(2, 6, 8), jnp.float32)
  mask = jnp.asarray([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
  w = WPA(t, v, mask, skip_second_video_token=False)
  # d distance / d cost = plan^T: the plan (computed from the cost) is a constant
  g_cost = jax.jit(jax.grad(lambda c: ot.ot_distance(c, ot.ipot(c, w["text_valid"],
                                                                 w["video_valid"])).sum()))
  np.testing.assert_allclose(g_cost(w["cost"]), np.swapaxes(np.asarray(w["plan"]), 1, 2),
                             atol=1e-6)
  # plan marginals: every valid text token carries ~1/m of the mass
  m = np.asarray(w["text_valid"]).sum(1)
  np.testing.assert_allclose(np.asarray(w["plan"]).sum(1)[0, 1:3], 1 / m[0], rtol=0.05)


def test_ind_itc_from_recorded_embeddings(fixture):
  _, _, _, o = fixture
  sim = cosine_contrastive.cosine_sim(o["itc_text_emb"], o["itc_video_emb"])
  np.testing.assert_allclose(sim, o["itc_sim_t2v"], **TOL)
  c = cosine_contrastive.symmetric_loss(sim)
  np.testing.assert_allclose(c["logits_t2v"], o["itc_logits_t2v"], **TOL)
  np.testing.assert_allclose(c["loss"], o["ind_itc_loss"], rtol=1e-5)
  t2v, v2t = tasks.reference_retrieval_metrics(o["itc_sim_t2v"])
  np.testing.assert_allclose(t2v, o["itc_metrics_t2v"], rtol=1e-6)
  np.testing.assert_allclose(v2t, o["itc_metrics_v2t"], rtol=1e-6)


def test_reference_metric_tie_rules():
  sim = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
  t2v, v2t = tasks.reference_retrieval_metrics(sim)
  # t2v optimistic: ranks 0, 0, 0. v2t columns: video 0 gt 1.0 (rank 0), video 1 gt 1.0 tied
  # with another 1.0 -> 0.5, video 2 gt 0.5 below 1.0, no tie -> 1.
  np.testing.assert_allclose(t2v, [100, 100, 100, 100, 1, 1])
  np.testing.assert_allclose(v2t, [200 / 3, 100, 100, 100, 1.5, 1.5])   # R@k: rank < k


def test_losses_from_recorded_logits(reference_dir):
  d = reference_dir / "allinone" / "tiny"
  with np.load(d / "inputs.npz") as z:
    i = dict(z)
  with np.load(d / "outputs.npz") as z:
    o = dict(z)
  from vlx.objectives import masked_lm, matching
  close = lambda got, key: np.testing.assert_allclose(got, o[key], rtol=1e-5, err_msg=key)
  close(masked_lm.masked_lm(o["mlm_logits"], i["text_labels_mlm"])["loss"], "mlm_loss")
  close(matching.matching_loss(o["itm_logits"], i["itm_labels"])["loss"], "itm_loss")
  assert (i["vqa_labels"] == -100).any()               # the ignored answer is really there
  close(obj.ce_ignore(o["qa_logits"], i["vqa_labels"])["loss"], "qa_loss")
  close(matching.matching_loss(o["mc_scores"], i["mc_answer"])["loss"], "mc_loss")
  close(matching.matching_loss(o["mcvqa_scores"], i["mcvqa_answer"])["loss"], "mcvqa_loss")
  close(matching.matching_loss(o["irtr_scores"], np.zeros(3, np.int32))["loss"], "irtr_loss")
  labels = tasks.permutation_index(jnp.asarray(i["vcop_orders"]))
  np.testing.assert_array_equal(labels, o["vcop_labels"])
  close(matching.matching_loss(o["vcop_logits"], labels)["loss"], "vcop_loss")
  table = tasks.permutations_table(4)                    # lexicographic = itertools order
  np.testing.assert_array_equal(tasks.permutation_index(jnp.asarray(table)), np.arange(24))


@pytest.mark.torch
def test_fixture_outputs_match_reference(fixture):
  """Every head / loss / gradient output of the fixture through the converted model."""
  from vlx.models.allinone import load_fixture as lf
  from vlx.convert import parity, reverse
  name, d, _, ref = fixture
  cfg, x, sd = lf.read_fixture(d)
  result = lf.convert_fixture(cfg, sd)
  with jax.default_matmul_precision("highest"):
    out = obj.fixture_outputs(result.model, lf.model_inputs(x), cfg, lf.source_grads(result, sd),
                              compiler_options=FAST_COMPILE)
  # held-out fixtures check other parameters: the gradient names cover every parameter of the
  # model (through the converter rules in reverse), the fixture's names are a subset
  params = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(result.model,
                                                                          nnx.Param))}
  for tag in ("pretrain", "itc"):
    names = [str(n) for n in out[f"grad_{tag}_names"]]
    assert reverse.covered_targets(result, names) == params, tag
    assert set(ref[f"grad_{tag}_names"]) <= set(names), tag
  out = parity.align_named(out, ref)      # name-indexed outputs compare by name
  core = {"text_embeds", "image_embeds", "image_masks", "final_norm_per_frame", "final_seq",
          "text_feats", "image_feats", "cls_feats", "raw_cls_feats", "text_masks_out",
          "image_masks_out"}
  want = {k for k in ref if k not in core and not k.startswith(("roll_", "block_", "ident_"))}
  assert want <= set(out), sorted(want - set(out))
  assert len(want) == (43 if name == "main" else 31)
  for key in sorted(want):
    got, exp = out[key], ref[key]
    if exp.dtype.kind in "Uib" or key.endswith("_valid"):
      np.testing.assert_array_equal(got, exp, err_msg=key)
    elif key.startswith("grad"):
      np.testing.assert_allclose(got, exp, rtol=1e-3, atol=1e-6, err_msg=key)
    elif key.endswith("_loss"):
      np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6, err_msg=key)
    else:
      np.testing.assert_allclose(got, exp, **TOL, err_msg=key)


# -- loss_fn on a tiny model ------------------------------------------------------------------
def _tiny_model(**heads):
  c = allinone.model_config("tiny")
  c.heads.update(heads)
  c.irtr_false_texts = 2
  return allinone.build(c, rngs=nnx.Rngs(params=0))


def _batch(b=4, t=3, k=3, length=16):
  rs = np.random.RandomState(1)
  ids = rs.randint(5, 128, (b, length)).astype(np.int32)
  mask = (np.arange(length)[None] < rs.randint(4, length, (b, 1))).astype(np.int32)
  labels = np.where(rs.rand(b, length) < 0.3, ids, -100).astype(np.int32)
  return dict(video=rs.randn(b, t, 32, 32, 3).astype(np.float32), text_ids=ids * mask,
              text_mask=mask, mlm_text_ids=ids * mask, mlm_labels=labels,
              choice_ids=rs.randint(5, 128, (b, k, length)).astype(np.int32),
              choice_mask=np.ones((b, k, length), np.int32),
              label=np.asarray([0, 2, 1, -1], np.int32)[:b])


def test_loss_fn_weights_metrics_and_checks():
  model = _tiny_model(itc=True, num_qa_labels=5, mc_vqa=True, vcop=True)
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  batch["label"] = jnp.maximum(batch["label"], 0)
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, b, w: steps.weighted_loss(allinone.FAMILY, nnx.merge(graphdef, s), b, weights=dict(w),
                                           rng=jax.random.key(0), train=True),
               static_argnums=(2,), compiler_options=FAST_COMPILE)
  run = lambda w: fn(state, batch, tuple(sorted(w.items())))
  total, m = run({name: 1.0 for name in obj.OBJECTIVES})
  losses = {k[:-5]: float(v) for k, v in m.items() if k.endswith("_loss")}
  assert set(losses) == set(obj.OBJECTIVES) and all(np.isfinite(list(losses.values())))
  np.testing.assert_allclose(float(total), sum(losses.values()), rtol=1e-5)
  # weights scale; zero-weight objectives are not computed; the same rng gives the same draws
  total2, m2 = run(dict(mlm=0.5, ind_itc=2.0, vcop=0.0))
  assert set(k for k in m2 if k.endswith("_loss")) == {"mlm_loss", "ind_itc_loss"}
  np.testing.assert_allclose(float(m2["mlm_loss"]), losses["mlm"], rtol=1e-5)
  np.testing.assert_allclose(float(total2), 0.5 * losses["mlm"] + 2 * float(m2["ind_itc_loss"]),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="unknown names"):
    steps.weighted_loss(allinone.FAMILY, model, batch, weights=dict(vtc=1.0), rng=jax.random.key(0), train=False)
  with pytest.raises(ValueError, match="heads.itc"):
    steps.weighted_loss(allinone.FAMILY, _tiny_model(), batch, weights=dict(ind_itc=1.0), rng=jax.random.key(0),
                train=False)
  with pytest.raises(ValueError, match="batch key 'choice_ids'"):
    steps.weighted_loss(allinone.FAMILY, _tiny_model(), {k: v for k, v in batch.items() if k != "choice_ids"},
                weights=dict(multiple_choice=1.0), rng=jax.random.key(0), train=False)


def test_random_draws():
  model = _tiny_model()
  video = jnp.zeros((3, 3, 32, 32, 3))
  perm = np.asarray(obj.random_patch_perm(jax.random.key(0), model, video))
  assert perm.shape == (3, 3, 16)
  np.testing.assert_array_equal(np.sort(perm, -1), np.broadcast_to(np.arange(16), perm.shape))
  assert len({tuple(p) for p in perm.reshape(-1, 16)}) == 9     # independent per frame
  labels = np.asarray(obj.itm_labels(jax.random.key(1), 7))
  assert labels.sum() == 3 and set(labels) == {0, 1}
  rows = np.asarray(obj.other_rows(jax.random.key(2), 6, 4))
  assert rows.shape == (6, 4) and not (rows == np.arange(6)[:, None]).any()
  assert all(len(set(r)) == 4 for r in rows)
  with pytest.raises(ValueError, match="at least 5 rows"):
    obj.other_rows(jax.random.key(2), 4, 4)


def test_validate_config_names_the_missing_head():
  from configs import allinone_msrvtt_qa
  c = allinone_msrvtt_qa.get_config("tiny")
  c.objectives.ind_itc = 1.0
  with pytest.raises(ValueError, match="heads.itc"):
    allinone.validate_config(c)
  c = allinone_msrvtt_qa.get_config("tiny")
  c.data.train.max_text_len = 64
  with pytest.raises(ValueError, match="max_text_len=64 > config.model.max_text_len=16"):
    allinone.validate_config(c)

"""VIOLET vs the reference fixture ../shared/reference/violet/tiny: every output of outputs.npz
(features, Swin stages, logits, losses, accuracies, attention used by masking, gradients by name,
retrieval / QA-MC / QA-OE) recomputed by vlx.models.violet.load_fixture at the README tolerances
(rtol = atol = 1e-4; ret_scores, vtm_logits and gradients atol 1e-3; integers exact)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.conftest import FAST_COMPILE
from vlx.models.violet import load_fixture as lf

pytestmark = pytest.mark.torch   # reads the reference .pt files


@pytest.fixture(scope="module")
def fixture_dir(reference_dir):
  return reference_dir / "violet" / "tiny"


@pytest.fixture(scope="module")
def reference(fixture_dir):
  with np.load(fixture_dir / "outputs.npz") as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def ours(fixture_dir):
  """All outputs, computed once (fast unoptimised XLA builds; float32 matmuls)."""
  with jax.default_matmul_precision("highest"):
    return lf.compute_fixture_outputs(fixture_dir, compiler_options=FAST_COMPILE)


def tolerance(key: str) -> tuple[float, float]:
  """(atol, rtol) of tiny/README.md 'Tolerances'."""
  if key in ("ret_scores", "vtm_logits") or key.startswith("grad"):
    return 1e-3, 1e-4
  return 1e-4, 1e-4


def test_every_reference_output_with_its_shape_and_dtype(ours, reference):
  missing = sorted(set(reference) - set(ours))
  assert not missing, f"not computed: {missing}"
  bad = [(k, ours[k].shape, ours[k].dtype, v.shape, v.dtype) for k, v in reference.items()
         if ours[k].shape != v.shape or ours[k].dtype != v.dtype]
  assert not bad, bad


def test_float_outputs_within_readme_tolerance(ours, reference):
  errors, failed = {}, []
  for key, want in reference.items():
    if want.dtype.kind != "f":
      continue
    atol, rtol = tolerance(key)
    errors[key] = float(np.max(np.abs(ours[key] - want))) if want.size else 0.0
    if not np.allclose(ours[key], want, atol=atol, rtol=rtol):
      failed.append(key)
  print("\n" + "\n".join(f"{k:72s} {e:.2e}" for k, e in sorted(errors.items())))
  assert not failed, {k: errors[k] for k in failed}
  assert len(errors) >= 40   # the format's float outputs (features ... gradients)


def test_integer_outputs_exact(ours, reference):
  ints = [k for k, v in reference.items() if v.dtype.kind in "iu"]
  assert {"mask_img_pt", "vtm_labels", "qamc_pred", "qaoe_pred", "ret_eval_rank_of_gt",
          "ret_eval_median"} <= set(ints)
  for key in ints:
    np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)


def test_masked_inputs_are_checked_against_the_recorded_ones(fixture_dir):
  with np.load(fixture_dir / "inputs.npz") as z:
    x = {k: z[k] for k in z.files}
  m = lf.masked_inputs(x)
  np.testing.assert_array_equal(np.asarray(m["ids_masked"]), x["txt_pt_masked"])
  np.testing.assert_array_equal(np.asarray(m["mvm_labels"]), x["ans_mvm"])
  bad = dict(x, mtm_mask=np.roll(x["mtm_mask"], 1, axis=1))
  with pytest.raises(ValueError, match="txt_pt_masked"):
    lf.masked_inputs(bad)


def test_rank_metrics_stable_ties_and_median():
  prob = np.array([[0.5, 0.5, 0.1], [0.9, 0.2, 0.2], [0.3, 0.3, 0.3]], np.float32)
  m = lf.rank_metrics(prob)
  # text 0: tie with video 0 first -> rank 1; text 1: video 0 higher -> 2; text 2: all tied -> 3
  np.testing.assert_array_equal(m["ret_eval_rank_of_gt"], [1, 2, 3])
  assert m["ret_eval_r1"] == np.float32(1 / 3) and m["ret_eval_r5"] == 1.0
  assert m["ret_eval_median"] == 2 and m["ret_eval_median"].dtype == np.int64


def test_tiny_dalle_format_is_detected_from_the_files(reference_dir):
  """A directory with encoder.pkl and no checkpoint.pt is the dVAE fixture format."""
  d = reference_dir / "violet" / "tiny_dalle"
  with jax.default_matmul_precision("highest"):
    out = lf.compute_fixture_outputs(d)
  with np.load(d / "outputs.npz") as z:
    assert set(z.files) <= set(out)
    for key in z.files:
      np.testing.assert_allclose(out[key], z[key], atol=1e-4, rtol=1e-4, err_msg=key)


def test_tiny_preset_bf16_remat_step():
  """model.dtype='bfloat16' + remat: a training step (dropout on) gives float32 logits, finite
  losses and gradients."""
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from vlx.models.violet import forward, model as vm  # pylint: disable=import-outside-toplevel
  r = np.random.default_rng(0)
  b, t, x = 2, 1, 6   # 32 px through 2 Swin stages: 4x4 tokens + frame-CLS = 17 per frame
  args = dict(video_masked=r.standard_normal((b, t, 32, 32, 3)).astype(np.float32),
              ids_masked=r.integers(1, 128, (b, x)), text_mask=np.ones((b, x), np.int32),
              vtm_neg=np.array([[1], [0]]), mtm_labels=r.integers(-1, 128, (b, x)),
              mvm_labels=np.where(np.arange(17) == 5, 3, -1)[None].repeat(b, 0))
  c = vm.model_config("tiny")
  c.update(dtype="bfloat16", remat=True)
  c.video.update(embed_dim=16, depths=(1, 1), num_heads=(1, 1))   # 2 stages: a cheaper compile

  def step(a):   # fresh init inside the one compiled program (eager init is slow)
    def loss(m):
      o = forward.pretrain_outputs(m, deterministic=False, rngs=nnx.Rngs(dropout=1), **a)
      return o["loss_total"], o
    return nnx.value_and_grad(loss, has_aux=True)(vm.build(c, rngs=nnx.Rngs(0)))
  (_, out), grads = jax.jit(step, compiler_options=FAST_COMPILE)(args)
  assert out["mtm_logits"].dtype == np.float32 and out["mvm_logits"].shape == (b, 17, 64)
  assert out["vtm_logits"].shape == (b, 2)
  for key in ("loss_mtm", "loss_mvm", "loss_vtm"):
    assert np.isfinite(out[key]) and out[key] > 0, key
  assert all(bool(np.isfinite(g).all()) for g in jax.tree.leaves(grads))

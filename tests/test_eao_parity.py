"""Everything-at-Once vs the reference fixture ../shared/reference/eao/tiny: every output of
outputs.npz (tokens, masks, DAVEnet features, every fusion pass, embeddings, sims, retrieval
metrics, losses incl. train-mode BatchNorm, gradients by name, long-audio pooling strategies,
dataset-side video sampling, clip-wise evaluation) recomputed by vlx.models.eao.load_fixture at the
README tolerances (atol = rtol = 1e-4; audio_davenet_features atol 1e-3; masks, booleans and
metrics exact)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.conftest import FAST_COMPILE
from vlx.models.eao import load_fixture as lf

pytestmark = pytest.mark.torch   # reads the reference .pth container


@pytest.fixture(scope="module")
def fixture_dir(reference_dir):
  return reference_dir / "eao" / "tiny"


@pytest.fixture(scope="module")
def reference(fixture_dir):
  with np.load(fixture_dir / "outputs.npz") as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def ours(fixture_dir):
  with jax.default_matmul_precision("highest"):
    return lf.compute_fixture_outputs(fixture_dir, compiler_options=FAST_COMPILE)


def exact(key: str, value: np.ndarray) -> bool:
  """Masks, booleans and retrieval metrics are compared exactly (README 'tolerance')."""
  return (value.dtype.kind in "biu" or "mask" in key or "metrics" in key
          or key.startswith("metric_"))


def test_every_reference_output_with_its_shape_and_dtype(ours, reference):
  assert sorted(ours) == sorted(reference)
  bad = [(k, ours[k].shape, ours[k].dtype, v.shape, v.dtype) for k, v in reference.items()
         if ours[k].shape != v.shape or ours[k].dtype != v.dtype]
  assert not bad, bad


def test_outputs_within_readme_tolerance(ours, reference):
  errors, failed = {}, []
  for key, want in reference.items():
    got = ours[key]
    if exact(key, want):
      if not np.array_equal(got, want):
        failed.append(key)
      continue
    atol = 1e-3 if key == "audio_davenet_features" else 1e-4
    errors[key] = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    if not np.allclose(got, want, atol=atol, rtol=1e-4):
      failed.append(key)
  print("\n" + "\n".join(f"{k:60s} {e:.2e}" for k, e in sorted(errors.items())))
  assert not failed, {k: errors.get(k) for k in failed}


def test_masking_token_gets_no_gradient_and_fixture_has_empty_inputs(ours, reference):
  """The property the fixture was built to check: empty modalities leave every loss term."""
  assert not reference["text_nonempty_input_mask"].all()
  assert not reference["video_nonempty_input_mask"].all()
  assert np.all(ours["grad_fusion.masking_token"] == 0.0)
  assert ours["gradnorm_fusion.blocks.0.attn.qkv.weight"] > 0


def test_video_sampling_strategies_and_metric_ties():
  """Dataset-side sampling on a 3D-only sequence, and tie averaging of the metric."""
  f3 = np.arange(40, dtype=np.float32).reshape(20, 2) + 1
  clip, mask = lf.video_features(None, f3, 4, "clip")
  np.testing.assert_allclose(clip, lf._l2(f3[:4]), rtol=1e-6)
  near, _ = lf.video_features(None, f3, 4, "nearest")
  np.testing.assert_allclose(near, lf._l2(f3[[0, 5, 10, 15]]), rtol=1e-6)
  pooled, _ = lf.video_features(None, f3, 4, "max_pool")   # windows of 5 -> their maxima
  np.testing.assert_allclose(pooled, lf._l2(f3[[4, 9, 14, 19]]), rtol=1e-6)
  short, smask = lf.video_features(None, f3[:3], 4, "max_pool")
  assert smask.tolist() == [1, 1, 1, 0] and not short[3].any()
  m = lf.retrieval_metrics(np.ones((4, 4)))        # all tied: rank 1.5 for everyone
  assert m[:4].tolist() == [0.0, 100.0, 100.0, 100.0] and m[4] == 2.5 and m[5] == 2.5
  assert lf.retrieval_metrics(np.eye(4), complete_size=8)[0] == 50.0

"""Everything-at-Once vs the reference fixture ../shared/reference/eao/tiny: every output of
outputs.npz (tokens, masks, DAVEnet features, every fusion pass, embeddings, sims, retrieval
metrics, losses incl. train-mode BatchNorm, gradients by name, long-audio pooling strategies,
dataset-side video sampling, clip-wise evaluation) recomputed by vlx.models.eao.load_fixture at the
README tolerances (load_fixture.PARITY_TOLERANCES: atol = rtol = 1e-4; audio_davenet_features
atol 1e-3; masks, booleans and metrics exact)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.conftest import FAST_COMPILE
from vlx.convert import parity
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


def test_every_reference_output_with_its_shape_and_dtype(ours, reference):
  assert sorted(ours) == sorted(reference)
  bad = [(k, ours[k].shape, ours[k].dtype, v.shape, v.dtype) for k, v in reference.items()
         if ours[k].shape != v.shape or ours[k].dtype != v.dtype]
  assert not bad, bad


def test_outputs_within_readme_tolerance(ours, reference):
  """Through the parity CLI's comparison with the family's tolerance table."""
  table = lf.PARITY_TOLERANCES + parity.DEFAULT_TOLERANCES
  assert parity.tolerance("text_attention_mask", table) == (0.0, 0.0)
  assert parity.tolerance("metrics_completesize_t2v", table) == (0.0, 0.0)
  assert parity.tolerance("gradnorm_davenet.conv1.weight", table) == (1e-4, 1e-4)
  rows, ok = parity.compare(ours, reference, table)
  print("\n" + parity.format_table(rows))
  assert ok, [r for r in rows if r["status"] != "ok"]


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

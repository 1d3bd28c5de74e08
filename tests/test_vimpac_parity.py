"""VIMPAC vs the reference fixtures ../shared/reference/vimpac/tiny (every output of outputs.npz:
activations per block, heads, MLM / NCE losses incl. train-mode BatchNorm, gradient norms by name,
the float64 re-run, fine-tuning with interpolated positional tables) and tiny/layouts (the seven
backbone variants: every `--model` layout, positional-table kind, pre-activation, halving),
recomputed by vlx.models.vimpac.load_fixture at the README tolerances."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.conftest import FAST_COMPILE
from vlx.convert import parity
from vlx.models.vimpac import load_fixture as lf

pytestmark = pytest.mark.torch   # reads the reference .pt files

TABLE = lf.PARITY_TOLERANCES + parity.DEFAULT_TOLERANCES


def _outputs(path):
  with jax.default_matmul_precision("highest"):
    return lf.compute_fixture_outputs(path, compiler_options=FAST_COMPILE)


def _reference(path):
  with np.load(path / "outputs.npz") as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def tiny(reference_dir):
  d = reference_dir / "vimpac" / "tiny"
  return _outputs(d), _reference(d)


@pytest.fixture(scope="module")
def layouts(reference_dir):
  d = reference_dir / "vimpac" / "tiny" / "layouts"
  return _outputs(d), _reference(d)


@pytest.mark.parametrize("which", ["tiny", "layouts"])
def test_every_output_within_readme_tolerance(which, request):
  ours, ref = request.getfixturevalue(which)
  assert sorted(ours) == sorted(ref)
  bad = [(k, ours[k].shape, ours[k].dtype, v.shape, v.dtype) for k, v in ref.items()
         if ours[k].shape != v.shape or ours[k].dtype != v.dtype]
  assert not bad, bad
  rows, ok = parity.compare(ours, ref, TABLE)
  print("\n" + parity.format_table(rows))
  assert ok, [r for r in rows if r["status"] != "ok"]


def test_tolerance_rows():
  assert parity.tolerance("ft_pred", TABLE) == (0.0, 0.0)
  assert parity.tolerance("grad_norm_values", TABLE) == (0.0, 1e-4)
  assert parity.tolerance("nce_loss_trainbn", TABLE) == (1e-5, 1e-5)
  assert parity.tolerance("final_x", TABLE) == (1e-4, 1e-4)


def test_fixture_properties(tiny, layouts):
  """What the fixture was built to check: PAD rows present, post-LN has no final LN, the float64
  run agrees with float32 to float32 precision, every layout's pooling is the token mean."""
  ours, _ = tiny
  np.testing.assert_array_equal(ours["blockLast_x"], ours["final_x"])
  assert abs(ours["total_loss_float64"] - ours["total_loss"]) < 1e-5
  lo, _ = layouts
  tags = {k[:-len("__final_x")] for k in lo if k.endswith("__final_x")}
  assert len(tags) == 7, tags
  for k in lo:
    if k.endswith("__pooling"):
      np.testing.assert_allclose(lo[k], lo[k[:-len("pooling")] + "final_x"].mean((1, 2, 3)),
                                 atol=1e-6)

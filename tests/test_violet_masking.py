"""VIOLET masking (spec §5.4/§5.5): apply_masks against the reference fixture, sampler properties."""
import numpy as np
import pytest

from vlx.data.video_ops import NORMS
from vlx.models.violet import masking


@pytest.fixture(scope="module")
def tiny_inputs(reference_dir):
  return dict(np.load(reference_dir / "violet" / "tiny" / "inputs.npz"))


def _normalise(video_bt3hw: np.ndarray) -> np.ndarray:
  """[B,T,3,H,W] in [0,1] -> channels-last ImageNet-normalised, as the data pipeline gives."""
  mean, std = (np.asarray(v, np.float32) for v in NORMS["imagenet"])
  return (np.transpose(video_bt3hw, (0, 1, 3, 4, 2)) - mean) / std


def test_apply_masks_reproduces_reference_inputs_and_labels(tiny_inputs):
  d = tiny_inputs
  video = _normalise(d["video_pt"])
  vq = d["vq_pt"].reshape(3, 3, 10)[:, :, 1:].reshape(3, 3, 3, 3)
  video_m, ids_m, mtm_labels, mvm_labels = masking.apply_masks(
      video, d["txt_pt"].astype(np.int32), d["mtm_mask"], d["mvm_mask"], vq)
  np.testing.assert_array_equal(np.asarray(ids_m), d["txt_pt_masked"])
  np.testing.assert_array_equal(np.asarray(mtm_labels), d["ans_mtm"])
  np.testing.assert_array_equal(np.asarray(mvm_labels), d["ans_mvm"])
  np.testing.assert_allclose(np.asarray(video_m), _normalise(d["video_pt_masked"]),
                             rtol=0, atol=1e-6)
  assert d["mvm_mask"].any() and d["mtm_mask"].any()  # the fixture exercises both


def test_apply_masks_rejects_a_grid_that_does_not_tile_the_frames():
  video = np.zeros((1, 1, 64, 64, 3), np.float32)
  with pytest.raises(ValueError, match="grid"):
    masking.apply_masks(video, np.zeros((1, 4), np.int32), np.zeros((1, 4)),
                        np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), np.int32))

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


# --- samplers ------------------------------------------------------------------------------------
import itertools  # noqa: E402

import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from conftest import FAST_COMPILE  # noqa: E402


def _fast(fn, static_argnums=()):
  """jit with the tests' fast XLA build: the samplers run as one program, not op by op."""
  return jax.jit(fn, static_argnums=static_argnums, compiler_options=FAST_COMPILE)


_boxes = _fast(masking.blockwise_boxes, static_argnums=(1, 2, 3, 4))
_video = _fast(masking.blockwise_video, static_argnums=(1, 2, 3, 4))


def _ids(batch: int, length: int, seed: int = 0) -> np.ndarray:
  """[CLS] words [SEP] [PAD]... rows of random lengths."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((batch, length), np.int32)
  for i in range(batch):
    n = rng.integers(1, length - 1)
    ids[i, 0], ids[i, 1:n + 1], ids[i, n + 1] = 101, rng.integers(1000, 2000, n), 102
  return ids


def test_blockwise_text_masks_non_special_tokens_at_the_ratio():
  ids = jnp.asarray(_ids(4000, 16))
  mask = np.asarray(_fast(masking.blockwise_text)(jax.random.key(1), ids))
  special = np.isin(np.asarray(ids), (101, 102, 0))
  assert not (mask & special).any()
  rate = mask[~special].mean()
  assert abs(rate - 0.15) < 0.01, rate


@pytest.mark.parametrize("t,h,w", [(4, 7, 7), (1, 7, 7), (3, 3, 3)])
def test_blockwise_cuboids_follow_the_reference_size_and_start_ranges(t, h, w):
  b = 3000
  boxes = {k: np.asarray(v) for k, v in
           _boxes(jax.random.key(2), b, t, h, w).items()}
  # numpy's randint(lo, hi) is [lo, hi): frames 1..T-1 (1 if T == 1), rows 1..h*2//3-1
  sizes = {"bt": range(1, max(t - 1, 1) + 1), "bh": range(1, h * 2 // 3),
           "bw": range(1, w * 2 // 3)}
  for name, allowed in sizes.items():
    assert set(np.unique(boxes[name])) == set(allowed), name
  for start, size, n in (("t1", "bt", t), ("y1", "bh", h), ("x1", "bw", w)):
    assert (boxes[start] >= 0).all() and (boxes[start] + boxes[size] <= n).all()
    # every fitting start occurs: the largest start only with the smallest size
    assert boxes[start].max() == n - 1 if n > 1 else boxes[start].max() == 0
  mask = np.asarray(_video(jax.random.key(2), b, t, h, w))
  for i in range(20):   # the mask is exactly the union of the sample's T cuboids
    want = np.zeros((t, h, w), bool)
    for c in range(t):
      want[boxes["t1"][i, c]:boxes["t1"][i, c] + boxes["bt"][i, c],
           boxes["y1"][i, c]:boxes["y1"][i, c] + boxes["bh"][i, c],
           boxes["x1"][i, c]:boxes["x1"][i, c] + boxes["bw"][i, c]] = True
    np.testing.assert_array_equal(mask[i], want)


def test_blockwise_video_single_frame_gives_one_box_of_every_allowed_size():
  mask = np.asarray(_video(jax.random.key(3), 600, 1, 7, 7))
  heights = set()
  for row in mask[:, 0]:
    ys, xs = np.nonzero(row)
    hh, ww = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    assert row.sum() == hh * ww  # exactly one rectangle
    heights.add(int(hh))
    assert ww <= 3
  assert heights == {1, 2, 3}


def test_blockwise_video_needs_three_tokens_per_side():
  jax.eval_shape(functools.partial(masking.blockwise_video, batch=2, t=2, h=3, w=3),
                 jax.random.key(0))
  with pytest.raises(ValueError, match="3x3"):
    jax.eval_shape(functools.partial(masking.blockwise_video, batch=2, t=2, h=2, w=2),
                   jax.random.key(0))


def _inclusion_probability(w: np.ndarray, i: int, n: int) -> float:
  """Exact P(i drawn) for sequential draws without replacement ∝ w (small n)."""
  total = 0.0
  for seq in itertools.permutations(range(len(w)), n):
    if i not in seq:
      continue
    p, left = 1.0, w.sum()
    for j in seq:
      p *= w[j] / left
      left -= w[j]
    total += p
  return total


@pytest.mark.parametrize("n", [1, 2])
def test_sample_without_replacement_matches_multinomial_inclusion_probabilities(n):
  w = np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.0], np.float32)
  rows = 40000
  chosen = np.asarray(_fast(masking.sample_without_replacement, static_argnums=(2,))(
      jax.random.key(4), jnp.broadcast_to(jnp.asarray(w), (rows, len(w))), n))
  assert (chosen.sum(1) == n).all() and not chosen[:, -1].any()
  for i in range(5):
    want = _inclusion_probability(w, i, n)
    assert abs(chosen[:, i].mean() - want) < 0.01, (i, chosen[:, i].mean(), want)


def test_attended_masks_n_allowed_positions_and_prefers_attended_tokens():
  b, t, h, w, x = 512, 2, 3, 3, 12
  lv = t * (1 + h * w)
  ids = jnp.asarray(_ids(b, x, seed=1))
  att = np.ones((b, lv + x), np.float32)
  att[:, 1 + 4] = 50.0       # frame 0, patch (1, 1): heavily attended
  att[:, 0] = 1e6            # a frame-CLS slot: special, never drawn
  mtm, mvm = _fast(masking.attended, static_argnums=(3, 4, 5))(
      jax.random.key(5), jnp.asarray(att), ids, t, h, w)
  mtm, mvm = np.asarray(mtm), np.asarray(mvm)
  n = int(0.15 * (lv + x))
  assert (mtm.sum(1) + mvm.sum((1, 2, 3)) == n).all()
  assert not (mtm & np.isin(np.asarray(ids), (101, 102, 0))).any()
  hot = mvm[:, 0, 1, 1].mean()
  other = mvm[:, 1, 2, 2].mean()
  assert hot > 0.9 and other < 0.3, (hot, other)


def test_sample_masks_mixes_branches_and_is_deterministic_in_the_key():
  b, t, h, w, x = 256, 3, 3, 3, 12
  ids = jnp.asarray(_ids(b, x, seed=2))
  att = jax.random.uniform(jax.random.key(6), (b, t * (1 + h * w) + x))
  fn = _fast(lambda k: masking.sample_masks(k, ids, att, num_frames=t, grid=(h, w)))
  a, again, other = fn(jax.random.key(7)), fn(jax.random.key(7)), fn(jax.random.key(8))
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(again[k]))
  assert any((np.asarray(a[k]) != np.asarray(other[k])).any() for k in a)
  branch = np.asarray(a["branch"]).astype(bool)
  assert 0.35 < branch.mean() < 0.65
  n = int(0.15 * (t * (1 + h * w) + x))
  counts = np.asarray(a["mtm_mask"]).sum(1) + np.asarray(a["mvm_mask"]).sum((1, 2, 3))
  assert (counts[branch] == n).all()
  assert not (np.asarray(a["mtm_mask"]).astype(bool)
              & np.isin(np.asarray(ids), (101, 102, 0))).any()
  blockwise_only = _fast(lambda k: masking.sample_masks(k, ids, None, num_frames=t,
                                                        grid=(h, w)))(jax.random.key(7))
  assert not np.asarray(blockwise_only["branch"]).any()


def test_vtm_negatives_are_distinct_other_rows():
  negatives = _fast(masking.vtm_negatives, static_argnums=(1,))
  neg = np.asarray(negatives(jax.random.key(9), 6))
  assert neg.shape == (6, 3)
  for i, row in enumerate(neg):
    assert i not in row and len(set(row)) == 3 and row.min() >= 0 and row.max() < 6
  np.testing.assert_array_equal(np.asarray(negatives(jax.random.key(0), 2)), [[1], [0]])
  assert negatives(jax.random.key(0), 1).shape == (1, 0)
  counts = np.zeros((5, 5))
  many = np.asarray(_fast(jax.vmap(lambda k: masking.vtm_negatives(k, 5)))(
      jax.random.split(jax.random.key(10), 4000)))
  for i in range(5):
    counts[i] = np.bincount(many[:, i].ravel(), minlength=5)
  off = counts[~np.eye(5, dtype=bool)] / (4000 * 3)
  assert np.allclose(off, 0.25, atol=0.02)   # each other row equally likely


def test_other_vocabularies_give_their_special_and_mask_ids_per_row():
  ids = np.array([[2, 7, 8, 3, 0], [101, 7, 102, 0, 0]], np.int32)
  special = np.array([[2, 3, 0], [101, 102, 0]], np.int32)
  np.testing.assert_array_equal(np.asarray(masking.special_text(jnp.asarray(ids), special)),
                                [[1, 0, 0, 1, 1], [1, 0, 1, 1, 1]])
  mtm = np.array([[0, 1, 0, 0, 0], [0, 1, 0, 0, 0]])
  video = np.zeros((2, 1, 96, 96, 3), np.float32)
  grid = np.zeros((2, 1, 3, 3), np.int32)
  _, ids_m, labels, _ = masking.apply_masks(video, ids, mtm, grid, grid,
                                            mask_id=np.array([4, 103]))
  np.testing.assert_array_equal(np.asarray(ids_m), [[2, 4, 8, 3, 0], [101, 103, 102, 0, 0]])
  np.testing.assert_array_equal(np.asarray(labels), [[-1, 7, -1, -1, -1], [-1, 7, -1, -1, -1]])

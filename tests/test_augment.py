"""ALPRO's training augmentations (vlx/data/augment.py, spec §7): op arguments and geometry against
OpenCV's matrix convention computed by hand, one transform per clip, seeds, and the pipeline hook."""
import math

import numpy as np
import pytest
import tensorflow as tf

from vlx.data import augment as aug
from vlx.data import video_ops

SEED = tf.constant([3, 5], tf.int64)


def _clip(t=3, h=20, w=24, seed=0):
  return tf.random.stateless_uniform([t, h, w, 3], [seed, 1], 0, 255)


def _warp_by_hand(img: np.ndarray, m: np.ndarray) -> np.ndarray:
  """OpenCV's warpAffine(img, M) (dst(M·p) = src(p)), bilinear, border value 128, in numpy."""
  h, w = img.shape[:2]
  inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
  out = np.empty_like(img)
  padded = np.full((h + 2, w + 2, 3), 128.0)
  padded[1:-1, 1:-1] = img
  for y in range(h):
    for x in range(w):
      sx, sy, _ = inv @ [x, y, 1]
      x0, y0 = math.floor(sx), math.floor(sy)
      fx, fy = sx - x0, sy - y0
      acc = np.zeros(3)
      for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
          yy, xx = y0 + dy + 1, x0 + dx + 1
          inside = 0 <= yy < h + 2 and 0 <= xx < w + 2
          acc += wy * wx * (padded[yy, xx] if inside else 128.0)
      out[y, x] = acc
  return out


def test_magnitudes_are_the_reference_table():
  m5, m7 = aug.magnitudes(5), aug.magnitudes(7)
  assert m5 == pytest.approx(dict(enhance=1.0, shear=0.15, translate=5.0, rotate=15.0))
  assert m7 == pytest.approx(dict(enhance=1.36, shear=0.21, translate=7.0, rotate=21.0))
  assert len(aug.TEMPORAL_OPS) == 10 and "HorizontalFlip" in aug.TEMPORAL_OPS
  assert set(aug.IMAGE_OPS) == set(aug.TEMPORAL_OPS) - {"Contrast", "HorizontalFlip"}


@pytest.mark.parametrize("name,arg,matrix", [
    ("shear_x", 0.21, lambda h, w: np.array([[1, 0.21, 0], [0, 1, 0]])),
    ("shear_y", 0.15, lambda h, w: np.array([[1, 0, 0], [0.15, 1, 0]])),
    ("translate_x", 7.0, lambda h, w: np.array([[1, 0, -7.0], [0, 1, 0]])),
    ("translate_x", 2.5, lambda h, w: np.array([[1, 0, -2.5], [0, 1, 0]])),  # warped
    ("translate_y", 5.0, lambda h, w: np.array([[1, 0, 0], [0, 1, -5.0]])),
    ("translate_y", 20.0, lambda h, w: np.array([[1, 0, 0], [0, 1, -20.0]])),  # all fill
    ("rotate", 21.0, lambda h, w: _rotation(21.0, w / 2, h / 2)),
    ("rotate", 15.0, lambda h, w: _rotation(15.0, w / 2, h / 2)),
])
def test_geometry_matches_opencv_matrices(name, arg, matrix):
  x = _clip(1, 12, 14).numpy()
  got = getattr(aug, name)(tf.constant(x), arg).numpy()[0]
  want = _warp_by_hand(x[0], matrix(12, 14))
  np.testing.assert_allclose(got, want, atol=1e-2)


def _rotation(deg, cx, cy):
  """cv2.getRotationMatrix2D((cx, cy), deg, 1) written out."""
  a, b = math.cos(math.radians(deg)), math.sin(math.radians(deg))
  return np.array([[a, b, (1 - a) * cx - b * cy], [-b, a, b * cx + (1 - a) * cy]])


def test_colour_ops_by_hand():
  x = _clip(2, 6, 7).numpy()
  np.testing.assert_allclose(aug.brightness(tf.constant(x), 1.36).numpy(),
                             np.clip(x * 1.36, 0, 255), rtol=1e-6)
  mean = (x.mean(axis=(1, 2)) * [0.114, 0.587, 0.299]).sum(-1)[:, None, None, None]
  np.testing.assert_allclose(aug.contrast(tf.constant(x), 1.36).numpy(),
                             np.clip((x - mean) * 1.36 + mean, 0, 255), rtol=1e-5, atol=1e-3)
  k = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13
  want = x.copy()
  for i in range(1, 5):
    for j in range(1, 6):
      smooth = np.einsum("tyxc,yx->tc", x[:, i - 1:i + 2, j - 1:j + 2], k)
      want[:, i, j] = np.clip(smooth + 1.36 * (x[:, i, j] - smooth), 0, 255)
  np.testing.assert_allclose(aug.sharpness(tf.constant(x), 1.36).numpy(), want, atol=1e-3)
  np.testing.assert_array_equal(aug.horizontal_flip(tf.constant(x)).numpy(), x[:, :, ::-1])
  for op in ("Contrast", "Brightness", "Sharpness"):  # factor 1.0 at M=5: no change
    np.testing.assert_allclose(aug._op(op, 5)(tf.constant(x)).numpy(), x, atol=1e-3)


def test_temporal_randaug_same_transform_on_every_frame():
  clip = _clip(4)
  out = aug.temporal_randaug(clip, SEED).numpy()
  for t in range(4):  # frame t alone, same seed: the same ops and magnitudes
    np.testing.assert_allclose(aug.temporal_randaug(clip[t:t + 1], SEED).numpy()[0], out[t],
                               atol=1e-4)
  still = tf.tile(clip[:1], [4, 1, 1, 1])    # identical frames stay identical (no jitter)
  moved = aug.temporal_randaug(still, SEED).numpy()
  assert np.abs(np.diff(moved, axis=0)).max() == 0
  assert out.shape == (4, 20, 24, 3) and out.dtype == np.float32


def test_seeds_deterministic_and_different():
  clip = _clip(2)
  a = aug.temporal_randaug(clip, SEED).numpy()
  np.testing.assert_array_equal(a, aug.temporal_randaug(clip, SEED).numpy())
  outs = {aug.temporal_randaug(clip, tf.constant([i, 9], tf.int64)).numpy().tobytes()
          for i in range(12)}
  assert len(outs) >= 6                        # 90 ordered op pairs; a few draws coincide
  imgs = {aug.image_randaug(clip, 16, tf.constant([i, 9], tf.int64)).numpy().tobytes()
          for i in range(6)}
  assert len(imgs) == 6


def test_resized_crop_box_ranges_and_fallback():
  boxes = np.stack([aug.resized_crop_box(tf.constant(40), tf.constant(60),
                                         tf.constant([i, 0], tf.int64)).numpy()
                    for i in range(100)])
  top, left, h, w = boxes.T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
  area = h * w / (40 * 60)
  assert area.min() > 0.15 and area.max() <= 1.0 and np.ptp(area) > 0.4
  assert (w / h > 0.7).all() and (w / h < 1.45).all()
  # an image far wider than 4:3 never fits a large draw: the centre crop at the ratio limit
  np.testing.assert_array_equal(
      aug.resized_crop_box(tf.constant(10), tf.constant(100), SEED, scale=(0.99, 1.0)).numpy(),
      [0, (100 - 13) // 2, 10, 13])


def test_image_randaug_shapes_and_one_draw_per_clip():
  image = tf.tile(tf.cast(_clip(1, 30, 40), tf.uint8), [4, 1, 1, 1])  # an image repeated T=4
  out = aug.image_randaug(image, 16, SEED).numpy()
  assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32
  assert np.abs(np.diff(out, axis=0)).max() == 0 and 0 <= out.min() and out.max() <= 255


def _encoded(frames):
  return tf.stack([tf.io.encode_jpeg(tf.constant(f)) for f in frames])


def test_preprocess_clip_hook():
  frames = np.asarray(_clip(6, 24, 32).numpy(), np.uint8)
  enc = _encoded(frames)
  kw = dict(num_frames=4, sampling="rand", resolution=24, crop=16, seed=SEED)
  plain = video_ops.preprocess_clip(enc, **kw).numpy()
  np.testing.assert_array_equal(video_ops.preprocess_clip(enc, augment="", **kw).numpy(), plain)
  for name in ("temporal_randaug", "image_randaug"):
    out = video_ops.preprocess_clip(enc, augment=name, **kw).numpy()
    assert out.shape == plain.shape == (4, 16, 16, 3) and out.dtype == np.float32
    assert not np.allclose(out, plain)
    np.testing.assert_array_equal(out, video_ops.preprocess_clip(enc, augment=name, **kw).numpy())
  # temporal_randaug = the plain clip's frames and crop, then the ops (own seed stream)
  mean, std = np.asarray(video_ops.CLIP_MEAN), np.asarray(video_ops.CLIP_STD)
  raw = tf.constant(((plain * std + mean) * 255).astype(np.float32))
  want = aug.temporal_randaug(raw, tf.random.experimental.stateless_fold_in(SEED, 0x617567))
  got = video_ops.preprocess_clip(enc, augment="temporal_randaug", **kw).numpy()
  np.testing.assert_allclose((got * std + mean) * 255, want.numpy(), atol=2e-2)
  with pytest.raises(ValueError, match="augment"):
    video_ops.preprocess_clip(enc, augment="mixup", **kw)
